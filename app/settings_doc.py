"""The configuration reference (docs/CONFIGURATION.md), generated from `Settings` so it cannot drift.

`agent-tasks settings-doc` prints it; `tests/test_docs.py` fails when the committed page differs from what
this module writes. Each setting's line comes from its field: the environment variable (the name in upper
case), the default, and the field's description. The groups below put the decisions an operator makes
first (where the data is, who may call, how the JWTs look) and the tuning after; every setting belongs to
exactly one group, and a setting no rule claims makes the test fail, so a new setting is filed on purpose.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from app.settings import Settings

#: (group title, what it decides, the field names or name prefixes it holds), in the page's order. A name
#: ending in "_" is a prefix; the first group whose rule matches a setting takes it.
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Server and database",
        "Where the data lives, where the server listens, and how long it waits for MongoDB.",
        (
            "mongodb_",
            "readiness_timeout_seconds",
            "host",
            "port",
            "workers",
            "data_dir",
            "embedded_mongo_port",
            "load_demo",
            "log_level",
            "log_format",
            "shutdown_grace_seconds",
            "cursor_secret",
            "process_",
        ),
    ),
    (
        "Access control",
        "Who may call: keys or JWTs, what anonymous callers may do, which hosts, origins and proxies are"
        " trusted (docs/ACCESS.md, docs/SECURITY.md).",
        (
            "auth_",
            "metrics_public",
            "trusted_hosts",
            "forwarded_allow_ips",
            "cors_",
        ),
    ),
    ("JWT", "How the JWTs of an identity provider are checked (`AUTH_MODE=jwt`).", ("jwt_",)),
    (
        "Rate limits",
        "Requests per caller and window, by scope (docs/ACCESS.md).",
        ("rate_limits", "rate_limit_"),
    ),
    (
        "Task lifecycle",
        "Leases, fencing, retries, timeouts and sweeps (docs/WRITING.md, docs/STEERING.md).",
        (
            "lease_",
            "require_lease_holder",
            "retry_",
            "schedule_to_start_timeout_seconds",
            "start_to_close_timeout_seconds",
            "schedule_to_close_timeout_seconds",
            "expiry_sweep_seconds",
            "max_claim_batch",
            "bulk_action_",
            "concurrency_limits_refresh_seconds",
            "claim_fair_max_groups",
            "max_concurrency_limits",
            "max_workflow_tasks",
            "max_payload_bytes",
        ),
    ),
    (
        "Retention",
        "How long finished workflows and standalone tasks are kept, and how they are removed"
        " (docs/RETENTION.md).",
        ("retention_", "purge_max_tasks"),
    ),
    (
        "Tracing",
        "OpenTelemetry traces are turned on by the standard OTEL_* variables, not by a setting"
        " (docs/TRACING.md); this is what they include.",
        ("trace_",),
    ),
    (
        "Request limits",
        "What one request may ask for: sizes, depths, costs and times (docs/LIMITS.md).",
        (
            "max_body_bytes",
            "max_url_bytes",
            "max_json_depth",
            "max_page_size",
            "default_page_size",
            "max_filter_",
            "filter_max_time_ms",
            "max_query_",
            "graphql_",
            "query_",
            "max_list_items",
        ),
    ),
    (
        "Live limits",
        "Subscriptions and WebSockets: what one client may hold (queues, replays, connections)"
        " (docs/LIVE.md).",
        (
            "subscription_",
            "max_subscriptions_per_connection",
            "ws_",
            "connection_init_timeout_seconds",
        ),
    ),
    (
        "Metrics",
        "How `/metrics` bounds client-chosen label values and samples the task gauges"
        " (docs/OBSERVABILITY.md).",
        ("metrics_label_values_max", "metrics_sample_"),
    ),
)

HEADER = """# Configuration

One settings object (`app/settings.py`) reads the environment, and a `.env` file if there is one; the
variable is the setting's name in upper case. This page is generated from it (`agent-tasks settings-doc >
docs/CONFIGURATION.md`; a test fails when it is stale).

The command line: `agent-tasks serve [--host H] [--port P] [--workers N] [--demo]`, `agent-tasks demo
[--reset] [--embedded]` (load the demo into the configured database, or the running server's:
docs/OPERATIONS.md; documents already there are kept unless `--reset`, so what you changed in the demo
survives a restart of `make run`; its event history is added once, and `--reset` puts it back in place of
every event about the demo's tasks), `agent-tasks export-schema [--output FILE]` (print the SDL; `make
schema` rewrites `schema/schema.graphql`, and a test fails when the committed file drifts from the code),
`agent-tasks keys create|list|revoke` (docs/ACCESS.md) and `agent-tasks settings-doc` (this page).
"""


def group_of(name: str) -> str | None:
    """The title of the first group whose rule matches the setting `name`, or None."""
    for title, _, rules in GROUPS:
        for rule in rules:
            if name == rule or (rule.endswith("_") and name.startswith(rule)):
                return title
    return None


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None or value == "" or value == []:
        return "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole page, Markdown."""
    fields = Settings.model_fields
    unfiled = [name for name in fields if group_of(name) is None]
    if unfiled:
        raise ValueError(f"settings in no group of app/settings_doc.GROUPS: {', '.join(unfiled)}")
    out = [HEADER]
    for title, decides, _ in GROUPS:
        out += [f"## {title}", "", decides, "", "| variable | default | meaning |", "|---|---|---|"]
        for name, field in fields.items():
            if group_of(name) == title:
                out.append(f"| `{name.upper()}` | {_default(field)} | {_cell(field.description or '')} |")
        out.append("")
    return "\n".join(out)
