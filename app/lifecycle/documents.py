"""The constructors of the documents services write: a new task's `agent_task_states` document, and the
editable subset of a state. The demo and the synthetic trees build their states with these too, so a
state has one shape wherever it comes from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from app.domain import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_ID_LENGTH, PRIORITY_RANK
from app.lifecycle import retry_policy, timeouts
from app.lifecycle import state_machine as sm
from app.lifecycle.errors import Invalid
from app.store.types import Doc
from app.tracing import current_traceparent, valid_traceparent

#: State fields a client may set when creating or editing a task (status and counters are the lifecycle's).
STATE_INPUT_FIELDS = (
    "agent_name",
    "triggering_event_id",
    "input_parameters",
    "output_references",
    "dependencies",
    "expires_at",
    "name",
    "description",
    "priority",
    "max_attempts",
    "parent_task_id",
    "retry_policy",
    "not_before",
    *timeouts.FIELDS,
    # W3C trace context the task's attempts continue (docs/TRACING.md); default: the creating request's.
    "traceparent",
    "concurrency_key",
)


def state_fields(patch: Mapping[str, Any]) -> Doc:
    """The editable state fields of `patch`, with `priority_rank` kept in step with `priority`."""
    out = {k: v for k, v in patch.items() if k in STATE_INPUT_FIELDS}
    if "priority" in out:
        out["priority"] = out["priority"] or DEFAULT_PRIORITY.value
        out["priority_rank"] = PRIORITY_RANK[out["priority"]]
    policy = out.get("retry_policy")
    if policy is not None:
        try:
            checked = retry_policy.check(policy)
        except retry_policy.PolicyError as exc:
            raise Invalid(f"input.retry_policy.{exc.field}", exc.message) from exc
        # `maximum_attempts` is stored as the state's `max_attempts` (its alias, 0 = unlimited).
        maximum = checked.pop("maximum_attempts", None)
        if maximum is not None:
            if out.get("max_attempts") is not None and out["max_attempts"] != maximum:
                raise Invalid(
                    "input.retry_policy.maximum_attempts",
                    f"maximum_attempts {maximum} contradicts max_attempts {out['max_attempts']} (its alias)",
                )
            out["max_attempts"] = maximum
        out["retry_policy"] = checked
    traceparent = out.get("traceparent")
    if traceparent is not None and not valid_traceparent(traceparent):
        raise Invalid(
            "input.traceparent",
            "traceparent must be a W3C trace context, e.g. 00-<32 hex trace id>-<16 hex span id>-01",
        )
    key = out.get("concurrency_key")
    if key is not None and (not isinstance(key, str) or not key.strip() or len(key) > MAX_ID_LENGTH):
        raise Invalid(
            "input.concurrency_key", f"concurrency_key must be 1 to {MAX_ID_LENGTH} characters (null: none)"
        )
    if out.get("max_attempts") is not None and out["max_attempts"] < 0:
        raise Invalid("input.max_attempts", "max_attempts must be at least 0 (0 = unlimited)")
    for name in timeouts.FIELDS:
        try:
            timeouts.check(name, out.get(name))
        except ValueError as exc:
            raise Invalid(f"input.{name}", str(exc)) from exc
    return out


def check_not_expired(state: Mapping[str, Any], now: dt.datetime, path: str) -> None:
    """A new task cannot be born expired: `expires_at` in the past is refused, not stored as a task the
    expiry sweep would fail at once."""
    expires_at = state.get("expires_at")
    if isinstance(expires_at, dt.datetime):
        aware = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=dt.UTC)
        if aware <= now:
            raise Invalid(
                f"{path}.expires_at",
                f"expires_at {aware.isoformat()} is not in the future (now is {now.isoformat()})",
            )


def new_state_doc(
    task_id: str,
    kind: str,
    workflow_id: str | None,
    state: Mapping[str, Any],
    dependencies: list[dict[str, str]],
    status: str,
    now: dt.datetime,
    timeout_defaults: Mapping[str, float] | None = None,
) -> Doc:
    """A new `agent_task_states` document: seed 000's fields, seed 001's extras, and the server's own.

    Its timeouts are its own, else `timeout_defaults` (the server's), with their deadlines armed."""
    fields = state_fields(state)
    priority = fields.get("priority") or DEFAULT_PRIORITY.value
    doc: Doc = {
        "_id": task_id,
        "agent_name": fields.get("agent_name") or "",
        "triggering_event_id": fields.get("triggering_event_id"),
        "input_parameters": fields.get("input_parameters") or {},
        "status": status,
        "progress_percentage": 0,
        "current_step": None,
        "attempts": 0,
        "last_error": None,
        "output_references": fields.get("output_references") or {},
        "dependencies": dependencies,
        "created_at": now,
        "updated_at": now,
        "expires_at": fields.get("expires_at"),
        "name": fields.get("name"),
        "description": fields.get("description"),
        "priority": priority,
        "priority_rank": PRIORITY_RANK[priority],
        "started_at": None,
        "completed_at": None,
        "execution_time_seconds": None,
        "parent_task_id": fields.get("parent_task_id"),
        "max_attempts": DEFAULT_MAX_ATTEMPTS
        if fields.get("max_attempts") is None
        else fields["max_attempts"],
        "task_kind": kind,
        "workflow_id": workflow_id,
        "version": 1,
    }
    # Steering fields are written only when given (a claim reads a missing one as "not set").
    for name in ("retry_policy", "not_before", "concurrency_key"):
        if fields.get(name) is not None:
            doc[name] = fields[name]
    doc |= timeouts.resolved(fields, timeout_defaults)
    doc |= sm.new_deadlines(doc, now)
    # The trace its attempts continue: given, or the creating request's (app.tracing); none outside one.
    traceparent = fields.get("traceparent") or current_traceparent()
    if traceparent is not None:
        doc["traceparent"] = traceparent
    return doc
