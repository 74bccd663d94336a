"""The constructors of the documents services write: a new task's `agent_task_states` document, and the
editable subset of a state. The demo and the synthetic trees build their states with these too, so a
state has one shape wherever it comes from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from app.domain import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, PRIORITY_RANK
from app.lifecycle.errors import Invalid
from app.store.types import Doc

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
)


def state_fields(patch: Mapping[str, Any]) -> Doc:
    """The editable state fields of `patch`, with `priority_rank` kept in step with `priority`."""
    out = {k: v for k, v in patch.items() if k in STATE_INPUT_FIELDS}
    if "priority" in out:
        out["priority"] = out["priority"] or DEFAULT_PRIORITY.value
        out["priority_rank"] = PRIORITY_RANK[out["priority"]]
    if out.get("max_attempts") is not None and out["max_attempts"] < 1:
        raise Invalid("input.max_attempts", "max_attempts must be at least 1")
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
) -> Doc:
    """A new `agent_task_states` document: seed 000's fields, seed 001's extras, and the server's own."""
    fields = state_fields(state)
    priority = fields.get("priority") or DEFAULT_PRIORITY.value
    return {
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
        "max_attempts": fields.get("max_attempts") or DEFAULT_MAX_ATTEMPTS,
        "task_kind": kind,
        "workflow_id": workflow_id,
        "version": 1,
    }
