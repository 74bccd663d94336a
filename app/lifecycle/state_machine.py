"""The task lifecycle as a state machine of pure functions: no I/O, no GraphQL, no clock.

Each action takes the task's current `agent_task_states` document (a mapping, never mutated) and `now`,
and returns a `Transition`: the fields to `$set` and the events to write with them. A forbidden action
raises `TransitionRefused` (naming the current status); a bad argument raises `InvalidInput`. The caller
applies the transition with compare-and-set on `version`, which is why `set_fields` never includes it.

| action   | from                                   | to                                              |
|----------|----------------------------------------|-------------------------------------------------|
| start    | pending, retrying                      | in_progress (attempts + 1, started_at = now)    |
| progress | in_progress                            | in_progress (progress_percentage, current_step) |
| heartbeat| in_progress                            | in_progress (lease extended; progress if given) |
| complete | in_progress                            | completed (completed_at, execution time, 100 %) |
| fail     | in_progress, pending, retrying         | retrying (next_attempt_at: the retry policy's   |
|          |                                        | delay); failed if final, non-retryable or       |
|          |                                        | attempts exhausted                              |
| retry    | failed, cancelled                      | retrying (grants one more attempt if exhausted) |
| cancel   | any active status                      | cancelled                                       |
| expire   | any active status, once expires_at     | failed (last_error says it expired)             |
| lapse    | in_progress, once lease_expires_at     | retrying; failed if attempts are used up        |
| release  | awaiting_dependency                    | pending (its dependencies are met)              |
| reschedule| pending, retrying, awaiting_dependency| the same status, with a new not_before          |
| block    | pending, retrying                      | awaiting_dependency (its dependencies are not)  |

Terminal statuses: completed, failed, cancelled; every other status is active. `start` is also refused
from awaiting_dependency, once the task has expired, and once `attempts >= max_attempts` (the state's
`max_attempts`, else `DEFAULT_MAX_ATTEMPTS`; 0 = unlimited), and before its `not_before` or
`next_attempt_at` (`claim_gate`; the claim query applies the same rule).

Events, in order: a status change first emits `("STATUS_CHANGED", {task_id, from_status, to_status})`,
then the seed 003 event where there is one — `TASK_PROGRESS` {task_id, status, progress (0.0-1.0),
details}, `TASK_COMPLETED` {task_id, status, result}, `TASK_FAILED` {task_id, status, error, is_final,
details}, and a lapse's `LEASE_EXPIRED` {task_id, holder, attempt, lease_expires_at (ISO), status}.
Payloads are JSON-friendly (no datetimes).

Leases: `start` given `lease_seconds` records who holds the task (`lease_holder`: the worker, else the
agent) and until when (`lease_expires_at`); `heartbeat` pushes that time on and sets `last_heartbeat_at`.
The attempt number is the lease's fencing token. Every action that takes a task out of in_progress clears
the three lease fields (when there is a lease to clear).

Documents written by other programs are read tolerantly: a missing status is "pending", "In Progress"
reads as "in_progress", missing or malformed attempts read as 0, and a missing or non-positive
max_attempts reads as the default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.domain import (
    ACTIVE,
    DEFAULT_MAX_ATTEMPTS,
    MAX_ERROR_LENGTH,
    MAX_STEP_LENGTH,
    STATUSES,
    TERMINAL,
    as_utc,
    normalise_status,
)
from app.lifecycle import retry_policy

#: The lease of a task in progress: who holds it, until when, and its last heartbeat.
LEASE_FIELDS = ("lease_holder", "lease_expires_at", "last_heartbeat_at")

__all__ = ["ACTIVE", "DEFAULT_MAX_ATTEMPTS", "STATUSES", "TERMINAL", "normalise_status"]


class TransitionRefused(Exception):
    """The action is not allowed from the task's current status (or its attempts/expiry forbid it)."""

    def __init__(self, action: str, current_status: str, message: str) -> None:
        super().__init__(message)
        self.action = action
        self.current_status = current_status
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(Exception):
    """An argument of the action is malformed or out of range; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Transition:
    """What an action does: the fields to `$set` on the state document and the events to record."""

    action: str
    from_status: str
    to_status: str
    set_fields: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def changes_status(self) -> bool:
        return self.from_status != self.to_status


# --- reading a state document tolerantly -------------------------------------------------------------


def _task_id(state: Mapping[str, Any]) -> Any:
    return state.get("_id", state.get("task_id"))


def _int_or(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def _attempts(state: Mapping[str, Any]) -> int:
    return max(0, _int_or(state.get("attempts"), 0))


def attempts_of(state: Mapping[str, Any]) -> int:
    """The attempts counted so far (read tolerantly): the fencing token of the current attempt."""
    return _attempts(state)


def has_attempts_left(state: Mapping[str, Any]) -> bool:
    """Whether `start` would grant another attempt (attempts < max_attempts)."""
    return _attempts(state) < _max_attempts(state)


#: What `max_attempts: 0` (unlimited, the retry policy's `maximumAttempts: 0`) counts as.
UNLIMITED_ATTEMPTS = 2**62


def _max_attempts(state: Mapping[str, Any]) -> int:
    value = _int_or(state.get("max_attempts"), DEFAULT_MAX_ATTEMPTS)
    if value == 0 and state.get("max_attempts") is not None:
        return UNLIMITED_ATTEMPTS
    return value if value > 0 else DEFAULT_MAX_ATTEMPTS


def claim_gate(state: Mapping[str, Any]) -> datetime | None:
    """The time before which the task may not start (the later of `not_before` and `next_attempt_at`)."""
    times = [t for t in (as_utc(state.get("not_before")), as_utc(state.get("next_attempt_at"))) if t]
    return max(times) if times else None


def _retry_schedule(
    state: Mapping[str, Any],
    now: datetime,
    policy: Mapping[str, Any] | None,
    draw: float,
    next_retry_delay: float | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields and event payload of a retry after the current attempt failed: `next_attempt_at`
    (None when the delay is 0) and the delays (computed before jitter, and applied)."""
    effective = retry_policy.effective(None, policy)
    computed = retry_policy.computed_delay(effective, max(1, _attempts(state)))
    if next_retry_delay is not None:
        applied = float(next_retry_delay)
    else:
        applied = retry_policy.jittered(computed, float(effective.get("jitter") or 0.0), draw)
    at = now + timedelta(seconds=applied) if applied > 0 else None
    payload = {
        "retry_delay_seconds": computed,
        "applied_delay_seconds": applied,
        "next_attempt_at": at.isoformat() if at else None,
    }
    return {"next_attempt_at": at}, payload


def _now(now: datetime) -> datetime:
    if not isinstance(now, datetime):
        raise InvalidInput("now", f"now must be a datetime, got {type(now).__name__}")
    return now


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- building transitions -----------------------------------------------------------------------------


def _refuse(action: str, status: str, message: str) -> TransitionRefused:
    return TransitionRefused(action, status, message)


def _require(action: str, verb: str, status: str, allowed: frozenset[str] | set[str]) -> None:
    if status not in allowed:
        raise _refuse(action, status, f"cannot {verb} a task that is {status}")


def _transition(
    action: str,
    state: Mapping[str, Any],
    from_status: str,
    to_status: str,
    now: datetime,
    fields: dict[str, Any],
    event: tuple[str, dict[str, Any]] | None = None,
) -> Transition:
    set_fields: dict[str, Any] = {**fields, "status": to_status, "updated_at": now}
    if to_status != "in_progress" and has_lease(state):
        set_fields.update(dict.fromkeys(LEASE_FIELDS))
    events: list[tuple[str, dict[str, Any]]] = []
    if from_status != to_status:
        events.append(
            (
                "STATUS_CHANGED",
                {"task_id": _task_id(state), "from_status": from_status, "to_status": to_status},
            )
        )
    if event is not None:
        events.append(event)
    return Transition(action, from_status, to_status, set_fields, events)


def start(
    state: Mapping[str, Any],
    now: datetime,
    lease_seconds: float | None = None,
    holder: str | None = None,
) -> Transition:
    """pending/retrying → in_progress: one more attempt, a fresh start time, progress back to 0.

    With `lease_seconds`, the task is leased until now + lease_seconds to `holder` (default: its agent).
    """
    now = _now(now)
    lease = _lease_until(now, lease_seconds)
    status = normalise_status(state.get("status"))
    if status == "awaiting_dependency":
        raise _refuse(
            "start",
            status,
            f"task {_task_id(state)} cannot start: its dependencies are not met (status {status})",
        )
    _require("start", "start", status, {"pending", "retrying"})
    if is_expired(state, now):
        expires_at = as_utc(state.get("expires_at"))
        when = expires_at.isoformat() if expires_at else state.get("expires_at")
        raise _refuse("start", status, f"cannot start: task has expired (expires_at {when})")
    attempts, max_attempts = _attempts(state), _max_attempts(state)
    if attempts >= max_attempts:
        raise _refuse(
            "start",
            status,
            f"cannot start: no attempts left ({attempts} of {max_attempts} used)",
        )
    gate, now_utc = claim_gate(state), as_utc(now)
    if gate is not None and now_utc is not None and now_utc < gate:
        what = "its next attempt is due" if state.get("next_attempt_at") else "it may start"
        raise _refuse("start", status, f"cannot start before {gate.isoformat()} ({what} then)")
    fields = {
        "attempts": attempts + 1,
        "started_at": now,
        "completed_at": None,
        "execution_time_seconds": None,
        "progress_percentage": 0,
        "current_step": None,
    }
    if state.get("next_attempt_at") is not None:
        fields["next_attempt_at"] = None
    if lease is not None:
        fields |= {
            "lease_holder": holder or state.get("agent_name") or None,
            "lease_expires_at": lease,
            "last_heartbeat_at": None,
        }
    return _transition("start", state, status, "in_progress", now, fields)


def report_progress(
    state: Mapping[str, Any],
    now: datetime,
    percentage: int | float,
    current_step: str | None = None,
) -> Transition:
    """in_progress → in_progress with a new percentage (0-100, stored as an int) and optional step.

    A `current_step` of None leaves the stored step unchanged.
    """
    now = _now(now)
    if not _is_number(percentage):
        raise InvalidInput("percentage", f"progress must be a number, got {type(percentage).__name__}")
    if not math.isfinite(percentage) or not 0 <= percentage <= 100:
        raise InvalidInput("percentage", f"progress must be between 0 and 100, got {percentage}")
    if current_step is not None:
        if not isinstance(current_step, str):
            raise InvalidInput("current_step", "current step must be a string")
        if len(current_step) > MAX_STEP_LENGTH:
            raise InvalidInput(
                "current_step",
                f"current step must be at most {MAX_STEP_LENGTH} characters, got {len(current_step)}",
            )
    status = normalise_status(state.get("status"))
    _require("progress", "report progress on", status, {"in_progress"})
    fields: dict[str, Any] = {"progress_percentage": round(percentage)}
    if current_step is not None:
        fields["current_step"] = current_step
    payload = {
        "task_id": _task_id(state),
        "status": "in_progress",
        "progress": float(percentage) / 100,
        "details": current_step,
    }
    return _transition("progress", state, status, "in_progress", now, fields, ("TASK_PROGRESS", payload))


def heartbeat(
    state: Mapping[str, Any],
    now: datetime,
    lease_seconds: float,
    percentage: int | float | None = None,
    current_step: str | None = None,
) -> Transition:
    """in_progress → in_progress with the lease extended to now + `lease_seconds` and `last_heartbeat_at`.

    With `percentage` and/or `current_step`, progress is recorded exactly as `report_progress` does (its
    TASK_PROGRESS event included; a step alone keeps the stored percentage). A bare heartbeat writes no
    event: one every few seconds per worker would flood the event log, and the lease is on the state.
    A task started without a lease takes one, held by its agent.
    """
    now = _now(now)
    lease = _lease_until(now, lease_seconds)
    if percentage is not None or current_step is not None:
        if percentage is None:
            percentage = _int_or(state.get("progress_percentage"), 0)
        base = report_progress(state, now, percentage, current_step)
        fields, event = dict(base.set_fields), base.events[-1]
    else:
        status = normalise_status(state.get("status"))
        _require("heartbeat", "heartbeat", status, {"in_progress"})
        fields, event = {}, None
    fields |= {
        "lease_holder": state.get("lease_holder") or state.get("agent_name") or None,
        "lease_expires_at": lease,
        "last_heartbeat_at": now,
    }
    return _transition("heartbeat", state, "in_progress", "in_progress", now, fields, event)


def _lease_until(now: datetime, lease_seconds: float | None) -> datetime | None:
    if lease_seconds is None:
        return None
    if not _is_number(lease_seconds) or not math.isfinite(lease_seconds) or lease_seconds <= 0:
        raise InvalidInput("lease_seconds", f"lease seconds must be a positive number, got {lease_seconds!r}")
    return now + timedelta(seconds=lease_seconds)


def complete(
    state: Mapping[str, Any],
    now: datetime,
    result: dict[str, Any] | None = None,
    execution_time_seconds: float | None = None,
    output_references: dict[str, Any] | None = None,
) -> Transition:
    """in_progress → completed: completed_at, execution time (given, or since started_at), 100 %."""
    now = _now(now)
    if result is not None and not isinstance(result, dict):
        raise InvalidInput("result", f"result must be an object, got {type(result).__name__}")
    if output_references is not None and not isinstance(output_references, dict):
        raise InvalidInput(
            "output_references",
            f"output references must be an object, got {type(output_references).__name__}",
        )
    if execution_time_seconds is not None:
        if not _is_number(execution_time_seconds) or not math.isfinite(execution_time_seconds):
            raise InvalidInput(
                "execution_time_seconds",
                f"execution time must be a finite number, got {execution_time_seconds!r}",
            )
        if execution_time_seconds < 0:
            raise InvalidInput(
                "execution_time_seconds", f"execution time cannot be negative, got {execution_time_seconds}"
            )
    status = normalise_status(state.get("status"))
    _require("complete", "complete", status, {"in_progress"})
    if execution_time_seconds is not None:
        elapsed: float | None = float(execution_time_seconds)
    else:
        started_at = as_utc(state.get("started_at"))
        now_utc = as_utc(now)
        elapsed = max(0.0, (now_utc - started_at).total_seconds()) if started_at and now_utc else None
    fields: dict[str, Any] = {
        "completed_at": now,
        "progress_percentage": 100,
        "execution_time_seconds": elapsed,
    }
    if output_references is not None:
        old = state.get("output_references")
        fields["output_references"] = {**(old if isinstance(old, Mapping) else {}), **output_references}
    payload = {"task_id": _task_id(state), "status": "completed", "result": result or {}}
    return _transition("complete", state, status, "completed", now, fields, ("TASK_COMPLETED", payload))


def _check_text(name: str, value: Any, *, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise InvalidInput(name, f"{name} must be a string")
    if required and not value.strip():
        raise InvalidInput(name, f"{name} cannot be empty")
    if len(value) > MAX_ERROR_LENGTH:
        raise InvalidInput(name, f"{name} must be at most {MAX_ERROR_LENGTH} characters, got {len(value)}")


def fail(
    state: Mapping[str, Any],
    now: datetime,
    error: str,
    details: str | None = None,
    is_final: bool = False,
    *,
    error_type: str | None = None,
    next_retry_delay: float | None = None,
    policy: Mapping[str, Any] | None = None,
    draw: float = 0.5,
) -> Transition:
    """in_progress/pending/retrying → retrying, or → failed when final, when `error_type` is one of the
    retry policy's non-retryable types, or when the attempts are used up.

    `policy` is the task's effective retry policy (`retry_policy.effective`); a retry waits its delay
    (`next_attempt_at`), or `next_retry_delay` seconds when the worker names one; `draw` (uniform in
    [0, 1)) places the jitter."""
    now = _now(now)
    _check_text("error", error, required=True)
    _check_text("details", details, required=False)
    if not isinstance(is_final, bool):
        raise InvalidInput("is_final", "is_final must be a boolean")
    if error_type is not None:
        if not isinstance(error_type, str) or not error_type.strip():
            raise InvalidInput("error_type", "error_type must be a non-empty string")
        if len(error_type) > retry_policy.MAX_ERROR_TYPE_LENGTH:
            raise InvalidInput(
                "error_type", f"error_type must be at most {retry_policy.MAX_ERROR_TYPE_LENGTH} characters"
            )
    if next_retry_delay is not None and (
        not _is_number(next_retry_delay)
        or not math.isfinite(next_retry_delay)
        or not 0 <= next_retry_delay <= retry_policy.MAX_INTERVAL_SECONDS
    ):
        raise InvalidInput(
            "next_retry_delay",
            f"next_retry_delay must be between 0 and {retry_policy.MAX_INTERVAL_SECONDS:g} seconds,"
            f" got {next_retry_delay!r}",
        )
    status = normalise_status(state.get("status"))
    _require("fail", "fail", status, {"in_progress", "pending", "retrying"})
    non_retryable = retry_policy.is_non_retryable(policy or {}, error_type)
    final = is_final or non_retryable or _attempts(state) >= _max_attempts(state)
    to_status = "failed" if final else "retrying"
    last_error: dict[str, Any] = {"timestamp": now, "message": error, "details": details}
    if error_type is not None:
        last_error["error_type"] = error_type
    fields: dict[str, Any] = {"last_error": last_error}
    payload: dict[str, Any] = {
        "task_id": _task_id(state),
        "status": to_status,
        "error": error,
        "is_final": final,
        "details": details,
    }
    if error_type is not None:
        payload |= {"error_type": error_type, "non_retryable": non_retryable}
    if not final and (policy is not None or next_retry_delay is not None):
        schedule, timing = _retry_schedule(state, now, policy, draw, next_retry_delay)
        if schedule["next_attempt_at"] is not None or state.get("next_attempt_at") is not None:
            fields |= schedule
        payload |= timing
    elif state.get("next_attempt_at") is not None:
        fields["next_attempt_at"] = None
    return _transition("fail", state, status, to_status, now, fields, ("TASK_FAILED", payload))


def retry(state: Mapping[str, Any], now: datetime) -> Transition:
    """failed/cancelled → retrying; when the attempts are used up, allows exactly one more."""
    now = _now(now)
    status = normalise_status(state.get("status"))
    _require("retry", "retry", status, {"failed", "cancelled"})
    attempts = _attempts(state)
    fields: dict[str, Any] = {}
    if attempts >= _max_attempts(state):
        fields["max_attempts"] = attempts + 1
    if state.get("next_attempt_at") is not None:
        fields["next_attempt_at"] = None  # a manual retry is due at once
    return _transition("retry", state, status, "retrying", now, fields)


def cancel(
    state: Mapping[str, Any], now: datetime, reason: str | None = None, cascade_root: str | None = None
) -> Transition:
    """Any active status → cancelled; a reason is kept in current_step as "cancelled: <reason>".

    In a subtree's cancel (`cascade_root`: the task whose cancel it is), `TASK_CANCELLED` {task_id,
    from_status, reason, root_task_id} follows the status change."""
    now = _now(now)
    if reason is not None:
        if not isinstance(reason, str):
            raise InvalidInput("reason", "reason must be a string")
        limit = MAX_STEP_LENGTH - len("cancelled: ")
        if len(reason) > limit:
            raise InvalidInput("reason", f"reason must be at most {limit} characters, got {len(reason)}")
    status = normalise_status(state.get("status"))
    _require("cancel", "cancel", status, ACTIVE)
    fields: dict[str, Any] = {}
    if reason:
        fields["current_step"] = f"cancelled: {reason}"
    event = None
    if cascade_root is not None:
        payload = {
            "task_id": _task_id(state),
            "status": "cancelled",
            "from_status": status,
            "reason": reason,
            "root_task_id": cascade_root,
        }
        event = ("TASK_CANCELLED", payload)
    return _transition("cancel", state, status, "cancelled", now, fields, event)


def expire(state: Mapping[str, Any], now: datetime) -> Transition:
    """Any active status → failed, once expires_at has passed; the failure is final."""
    now = _now(now)
    status = normalise_status(state.get("status"))
    _require("expire", "expire", status, ACTIVE)
    expires_at = as_utc(state.get("expires_at"))
    if expires_at is None or not is_expired(state, now):
        when = expires_at.isoformat() if expires_at else "not set"
        raise _refuse("expire", status, f"cannot expire a task that has not expired (expires_at {when})")
    message = f"task expired at {expires_at.isoformat()}"
    details = "expires_at passed before the task finished"
    fields = {"last_error": {"timestamp": now, "message": message, "details": details}}
    payload = {
        "task_id": _task_id(state),
        "status": "failed",
        "error": message,
        "is_final": True,
        "details": details,
    }
    return _transition("expire", state, status, "failed", now, fields, ("TASK_FAILED", payload))


def lapse(
    state: Mapping[str, Any],
    now: datetime,
    *,
    policy: Mapping[str, Any] | None = None,
    draw: float = 0.5,
) -> Transition:
    """in_progress → retrying once its lease has run out (the attempt was counted when it started), or
    → failed when the attempts are used up; last_error names the holder, the deadline and the attempt.
    A retry waits the retry policy's delay (`policy`, `draw`: as `fail`)."""
    now = _now(now)
    status = normalise_status(state.get("status"))
    _require("lapse", "lapse the lease of", status, {"in_progress"})
    until = as_utc(state.get("lease_expires_at"))
    if until is None or not lease_lapsed(state, now):
        when = until.isoformat() if until else "no lease"
        raise _refuse("lapse", status, f"cannot lapse a lease that has not run out ({when})")
    attempts, holder = _attempts(state), state.get("lease_holder") or state.get("agent_name")
    to_status = "failed" if attempts >= _max_attempts(state) else "retrying"
    message = f"lease held by {holder} expired at {until.isoformat()} (attempt {attempts})"
    details = "no heartbeat extended the lease before it ran out"
    fields: dict[str, Any] = {"last_error": {"timestamp": now, "message": message, "details": details}}
    payload: dict[str, Any] = {
        "task_id": _task_id(state),
        "holder": holder,
        "attempt": attempts,
        "lease_expires_at": until.isoformat(),
        "status": to_status,
    }
    if to_status == "retrying" and policy is not None:
        schedule, timing = _retry_schedule(state, now, policy, draw, None)
        if schedule["next_attempt_at"] is not None:
            fields |= schedule
            payload |= timing
    return _transition("lapse", state, status, to_status, now, fields, ("LEASE_EXPIRED", payload))


def reschedule(state: Mapping[str, Any], now: datetime, not_before: datetime | None) -> Transition:
    """A task not started yet (pending, retrying, awaiting_dependency) gets a new `not_before`: no claim
    hands it out before then (None: at once). Its status does not change; `TASK_RESCHEDULED` records the
    new and the previous time."""
    now = _now(now)
    if not_before is not None and not isinstance(not_before, datetime):
        raise InvalidInput("not_before", "not_before must be a datetime")
    status = normalise_status(state.get("status"))
    _require("reschedule", "reschedule", status, {"pending", "retrying", "awaiting_dependency"})
    previous = as_utc(state.get("not_before"))
    when = as_utc(not_before)
    payload = {
        "task_id": _task_id(state),
        "status": status,
        "not_before": when.isoformat() if when else None,
        "previous_not_before": previous.isoformat() if previous else None,
    }
    fields = {"not_before": when}
    return _transition("reschedule", state, status, status, now, fields, ("TASK_RESCHEDULED", payload))


def release(state: Mapping[str, Any], now: datetime) -> Transition:
    """awaiting_dependency → pending, once its dependencies are met (the caller checks them)."""
    now = _now(now)
    status = normalise_status(state.get("status"))
    _require("release", "release", status, {"awaiting_dependency"})
    return _transition("release", state, status, "pending", now, {})


def block(state: Mapping[str, Any], now: datetime) -> Transition:
    """pending/retrying → awaiting_dependency, when its dependencies are not met (the caller checks)."""
    now = _now(now)
    status = normalise_status(state.get("status"))
    _require("block", "block", status, {"pending", "retrying"})
    return _transition("block", state, status, "awaiting_dependency", now, {})


# --- predicates ---------------------------------------------------------------------------------------


def is_expired(state: Mapping[str, Any], now: datetime) -> bool:
    """True when the task is active and its expires_at (datetime, naive = UTC, or ISO string) <= now.

    An unreadable expires_at counts as not set.
    """
    if normalise_status(state.get("status")) not in ACTIVE:
        return False
    expires_at = as_utc(state.get("expires_at"))
    now_utc = as_utc(now)
    return expires_at is not None and now_utc is not None and expires_at <= now_utc


def has_lease(state: Mapping[str, Any]) -> bool:
    """Whether any lease field is set (a task started before leases existed has none)."""
    return any(state.get(name) is not None for name in LEASE_FIELDS)


def lease_lapsed(state: Mapping[str, Any], now: datetime) -> bool:
    """True when the task is in progress and its lease_expires_at <= now (no lease: never)."""
    if normalise_status(state.get("status")) != "in_progress":
        return False
    until = as_utc(state.get("lease_expires_at"))
    now_utc = as_utc(now)
    return until is not None and now_utc is not None and until <= now_utc


def _deps_met(dependencies: Any, statuses_by_id: Mapping[str, str | None]) -> bool:
    if not dependencies:
        return True
    if not isinstance(dependencies, Sequence) or isinstance(dependencies, str | bytes):
        return False
    for dep in dependencies:
        # A malformed dependency can never be satisfied; a task is never started on a guess.
        if not isinstance(dep, Mapping) or dep.get("task_id") is None:
            return False
        try:
            current = statuses_by_id.get(dep["task_id"])
        except TypeError:  # an unhashable id from a foreign document
            return False
        if current is None:
            return False
        expected = dep.get("status_expected") or "completed"
        if normalise_status(current) != normalise_status(expected):
            return False
    return True


def dependencies_met(state: Mapping[str, Any], statuses_by_id: Mapping[str, str | None]) -> bool:
    """Whether every dependency's current status equals its status_expected (default "completed").

    `statuses_by_id` maps dependency ids to their stored status; a missing id (or None) is not met.
    """
    return _deps_met(state.get("dependencies"), statuses_by_id)


def initial_status(dependencies: Sequence[Any] | None, statuses_by_id: Mapping[str, str | None]) -> str:
    """The status of a new task: "pending" if it has no dependencies or all are met, else awaiting."""
    return "pending" if _deps_met(dependencies, statuses_by_id) else "awaiting_dependency"
