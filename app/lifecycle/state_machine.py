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
| time_out | the kind's statuses, once its deadline | failed; START_TO_CLOSE: retrying per the retry  |
|          | passed (`timeouts`)                    | policy, failed when final                       |
| pause    | pending, retrying, awaiting_dependency | paused (paused_from = that status, paused_at)   |
|          | in_progress                            | in_progress with pause_requested (the attempt   |
|          |                                        | finishes; a retry it would go to is paused)     |
| resume   | paused                                 | paused_from (pending/awaiting_dependency: by its |
|          |                                        | dependencies now); in_progress: request cleared |

Pause (docs/STEERING.md, "Pause and resume"): a paused task is never claimed, started, released, retried
or expired. A task in progress is not stopped: its attempt finishes; `complete` completes it as usual,
while a `fail` that would retry and a `lapse` go to paused (paused_from = retrying, keeping the
next_attempt_at the retry policy gave). Pausing a paused (or pause-requested) task, and resuming a task
that is not paused, are no-ops (`NoOp`: nothing is written); pausing or resuming a finished task is
refused.

Terminal statuses: completed, failed, cancelled; every other status is active. `start` is also refused
from awaiting_dependency, once the task has expired, and once `attempts >= max_attempts` (the state's
`max_attempts`, else `DEFAULT_MAX_ATTEMPTS`; 0 = unlimited), and before its `not_before` or
`next_attempt_at` (`claim_gate`; the claim query applies the same rule).

Events, in order: a status change first emits `("STATUS_CHANGED", {task_id, from_status, to_status})`,
then the seed 003 event where there is one — `TASK_PROGRESS` {task_id, status, progress (0.0-1.0),
details}, `TASK_COMPLETED` {task_id, status, result}, `TASK_FAILED` {task_id, status, error, is_final,
details}, and a lapse's `LEASE_EXPIRED` {task_id, holder, attempt, lease_expires_at (ISO), status}
followed by `TASK_TIMED_OUT` {kind: HEARTBEAT, ...} (see `time_out`). Payloads are JSON-friendly (no
datetimes).

Timeouts (`app/lifecycle/timeouts.py`): every status change arms or clears the deadlines in
`TIMEOUT_DEADLINE_FIELDS` (`_deadlines`), a new task's come from `new_deadlines`, an edit's from
`retimed`; `start` is refused once a final timeout's deadline has passed (the sweep fails the task).

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
    EventType,
    Status,
    as_utc,
    normalise_status,
)
from app.lifecycle import retry_policy, timeouts

#: The lease of a task in progress: who holds it, until when, and its last heartbeat.
LEASE_FIELDS = ("lease_holder", "lease_expires_at", "last_heartbeat_at")
#: The deadline of each armed timeout (`timeouts.KINDS`), one field each: set when the timeout starts to
#: run, cleared when it no longer applies (`_deadlines`). The one list of them: whatever moves or clears
#: deadlines (a pause's resume shifts them by the time paused) goes by it.
TIMEOUT_DEADLINE_FIELDS = tuple(kind.deadline_field for kind in timeouts.KINDS)
#: The statuses a claim may start a task from: where the schedule-to-start timeout runs.
_SCHEDULABLE = (Status.PENDING, Status.RETRYING)
#: Entering a schedulable status from one of these starts the schedule-to-start timeout afresh.
_SCHEDULED_FROM = frozenset({Status.IN_PROGRESS, Status.AWAITING_DEPENDENCY, Status.FAILED, Status.CANCELLED})
#: What a paused task keeps: the status resume restores, and since when it is paused.
PAUSE_FIELDS = ("paused_from", "paused_at")
#: The statuses a task may be paused from (a task in progress is asked to pause instead).
PAUSABLE = frozenset({Status.PENDING, Status.RETRYING, Status.AWAITING_DEPENDENCY})
#: Statuses that never expire: finished ones, and paused ones (no timeout fires while paused).
NEVER_EXPIRE = TERMINAL | {Status.PAUSED}

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


class NoOp(Exception):
    """The action would change nothing (pausing a paused task, resuming one that is not paused): the
    caller writes nothing and answers the state as it is; `reason` is a machine-readable code."""

    def __init__(self, action: str, current_status: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.action = action
        self.current_status = current_status
        self.reason = reason
        self.message = message


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


def _deadlines(
    state: Mapping[str, Any], from_status: str, to_status: str, now: datetime, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The timeout deadlines a change of status arms or clears (`timeouts`, module docstring).

    Only the moves named here touch them; any other leaves them as they are. A pause is seen through: a
    task paused keeps its deadlines (no kind runs in `paused`; `resume` moves them on by the time paused,
    `shift_deadlines`), an attempt that ends into a requested pause changes them as its retry would, and a
    resume as a move from the status it was paused from (from awaiting_dependency to pending: a release).
    A timeout the task does not have is never armed; a deadline is cleared (set to None) only when one is
    stored."""
    if from_status == Status.IN_PROGRESS and to_status == Status.PAUSED:  # the retry a pause request holds
        to_status = Status.RETRYING
    elif from_status == Status.PAUSED:
        from_status = normalise_status(state.get("paused_from"))
    merged = {**state, **fields}
    start = as_utc(now) or now
    out: dict[str, Any] = {}

    def arm(kind: timeouts.Kind, since: datetime) -> None:
        secs = timeouts.seconds(merged, kind)
        if secs is not None:
            out[kind.deadline_field] = since + timedelta(seconds=secs)
        elif state.get(kind.deadline_field) is not None:
            out[kind.deadline_field] = None

    def clear(kind: timeouts.Kind) -> None:
        if state.get(kind.deadline_field) is not None:
            out[kind.deadline_field] = None

    if to_status in TERMINAL:
        for kind in timeouts.KINDS:
            clear(kind)
    elif to_status == Status.IN_PROGRESS and from_status in _SCHEDULABLE:
        clear(timeouts.SCHEDULE_TO_START)
        arm(timeouts.START_TO_CLOSE, start)
    elif to_status in _SCHEDULABLE and (
        from_status in _SCHEDULED_FROM
        or "next_attempt_at" in fields  # a failure of a task not started: a retry, due at its new time
        or (from_status == to_status and "not_before" in fields)
    ):
        # Schedulable from now, or from when its claim gate opens (a delayed start, a retry's backoff).
        gate = claim_gate(merged)
        clear(timeouts.START_TO_CLOSE)
        arm(timeouts.SCHEDULE_TO_START, max(start, gate) if gate else start)
        if from_status in (Status.FAILED, Status.CANCELLED):  # a manual retry: the task is scheduled anew
            arm(timeouts.SCHEDULE_TO_CLOSE, start)
    elif to_status == Status.AWAITING_DEPENDENCY and from_status in (*_SCHEDULABLE, Status.IN_PROGRESS):
        clear(timeouts.SCHEDULE_TO_START)
        clear(timeouts.START_TO_CLOSE)
    return out


def new_deadlines(state: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The deadlines of a task created now with `state` (its timeouts and status set): schedule-to-close
    from now, schedule-to-start from now (or its `not_before`) when it is pending."""
    start = as_utc(now) or now
    out: dict[str, Any] = {}
    total = timeouts.seconds(state, timeouts.SCHEDULE_TO_CLOSE)
    if total is not None:
        out[timeouts.SCHEDULE_TO_CLOSE.deadline_field] = start + timedelta(seconds=total)
    wait = timeouts.seconds(state, timeouts.SCHEDULE_TO_START)
    if wait is not None and normalise_status(state.get("status")) in _SCHEDULABLE:
        gate = claim_gate(state)
        since = max(start, gate) if gate else start
        out[timeouts.SCHEDULE_TO_START.deadline_field] = since + timedelta(seconds=wait)
    return out


def retimed(state: Mapping[str, Any], changes: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The deadlines an edit of the task's timeouts (or its `not_before`) moves: a deadline that runs is
    recomputed from when it started with the new value (0: cleared); one that did not run starts now
    (schedule-to-close: at the task's creation; start-to-close: at its attempt's start)."""
    merged = {**state, **changes}
    status = normalise_status(state.get("status"))
    start = as_utc(now) or now
    out: dict[str, Any] = {}
    for kind in timeouts.KINDS:
        moved = kind.timeout_field in changes or (
            kind is timeouts.SCHEDULE_TO_START and "not_before" in changes
        )
        if not moved or status not in kind.statuses:
            continue
        new = timeouts.seconds(merged, kind)
        old, deadline = timeouts.seconds(state, kind), as_utc(state.get(kind.deadline_field))
        if new is None:
            if state.get(kind.deadline_field) is not None:
                out[kind.deadline_field] = None
            continue
        if kind is timeouts.SCHEDULE_TO_START and "not_before" in changes:
            gate = claim_gate(merged)
            since = max(start, gate) if gate else start
        elif deadline is not None and old is not None:
            since = deadline - timedelta(seconds=old)
        elif kind is timeouts.SCHEDULE_TO_CLOSE:
            since = as_utc(state.get("created_at")) or start
        elif kind is timeouts.START_TO_CLOSE:
            since = as_utc(state.get("started_at")) or start
        else:
            since = start
        out[kind.deadline_field] = since + timedelta(seconds=new)
    return out


def due_timeouts(state: Mapping[str, Any], now: datetime) -> list[timeouts.Kind]:
    """The timeouts whose deadline has passed while the task is in one of their statuses, in firing order."""
    status, now_utc = normalise_status(state.get("status")), as_utc(now)
    due: list[timeouts.Kind] = []
    for kind in timeouts.KINDS:
        deadline = as_utc(state.get(kind.deadline_field))
        if status in kind.statuses and deadline is not None and now_utc is not None and deadline <= now_utc:
            due.append(kind)
    return due


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
    if to_status != Status.IN_PROGRESS and has_lease(state):
        set_fields.update(dict.fromkeys(LEASE_FIELDS))
    set_fields.update(_deadlines(state, from_status, to_status, now, fields))
    if to_status != Status.IN_PROGRESS and state.get("pause_requested") is not None:
        set_fields.setdefault("pause_requested", None)  # the attempt it was asked of is over
    if from_status == Status.PAUSED and to_status != Status.PAUSED:
        for name in PAUSE_FIELDS:  # (cancelled while paused, or resumed)
            if state.get(name) is not None:
                set_fields.setdefault(name, None)
    events: list[tuple[str, dict[str, Any]]] = []
    if from_status != to_status:
        events.append(
            (
                EventType.STATUS_CHANGED,
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
    if status == Status.AWAITING_DEPENDENCY:
        raise _refuse(
            "start",
            status,
            f"task {_task_id(state)} cannot start: its dependencies are not met (status {status})",
        )
    _require("start", "start", status, {Status.PENDING, Status.RETRYING})
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
    overdue = [kind for kind in due_timeouts(state, now) if kind.final]
    if overdue:
        kind = overdue[0]
        deadline = as_utc(state.get(kind.deadline_field))
        raise _refuse(
            "start",
            status,
            f"cannot start: its {kind.name} timeout passed at {deadline.isoformat() if deadline else '?'}"
            " (the sweep fails it)",
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
    return _transition("start", state, status, Status.IN_PROGRESS, now, fields)


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
    _require("progress", "report progress on", status, {Status.IN_PROGRESS})
    fields: dict[str, Any] = {"progress_percentage": round(percentage)}
    if current_step is not None:
        fields["current_step"] = current_step
    payload = {
        "task_id": _task_id(state),
        "status": Status.IN_PROGRESS,
        "progress": float(percentage) / 100,
        "details": current_step,
    }
    return _transition(
        "progress", state, status, Status.IN_PROGRESS, now, fields, (EventType.TASK_PROGRESS, payload)
    )


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
        _require("heartbeat", "heartbeat", status, {Status.IN_PROGRESS})
        fields, event = {}, None
    fields |= {
        "lease_holder": state.get("lease_holder") or state.get("agent_name") or None,
        "lease_expires_at": lease,
        "last_heartbeat_at": now,
    }
    return _transition("heartbeat", state, Status.IN_PROGRESS, Status.IN_PROGRESS, now, fields, event)


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
    _require("complete", "complete", status, {Status.IN_PROGRESS})
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
    payload = {"task_id": _task_id(state), "status": Status.COMPLETED, "result": result or {}}
    return _transition(
        "complete", state, status, Status.COMPLETED, now, fields, (EventType.TASK_COMPLETED, payload)
    )


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
    _require("fail", "fail", status, {Status.IN_PROGRESS, Status.PENDING, Status.RETRYING})
    non_retryable = retry_policy.is_non_retryable(policy or {}, error_type)
    final = is_final or non_retryable or _attempts(state) >= _max_attempts(state)
    to_status: str = Status.FAILED if final else Status.RETRYING
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
    to_status = _held(state, status, to_status, now, fields)
    payload["status"] = to_status
    return _transition("fail", state, status, to_status, now, fields, (EventType.TASK_FAILED, payload))


def _held(
    state: Mapping[str, Any], status: str, to_status: str, now: datetime, fields: dict[str, Any]
) -> str:
    """Where an attempt that would be retried goes: paused instead, when a pause was requested while it
    ran (paused_from = retrying; its next_attempt_at is kept for the resume)."""
    if status == Status.IN_PROGRESS and to_status == Status.RETRYING and state.get("pause_requested"):
        fields |= {"paused_from": Status.RETRYING, "paused_at": now, "pause_requested": None}
        return Status.PAUSED
    return to_status


def retry(state: Mapping[str, Any], now: datetime) -> Transition:
    """failed/cancelled → retrying; when the attempts are used up, allows exactly one more."""
    now = _now(now)
    status = normalise_status(state.get("status"))
    _require("retry", "retry", status, {Status.FAILED, Status.CANCELLED})
    attempts = _attempts(state)
    fields: dict[str, Any] = {}
    if attempts >= _max_attempts(state):
        fields["max_attempts"] = attempts + 1
    if state.get("next_attempt_at") is not None:
        fields["next_attempt_at"] = None  # a manual retry is due at once
    return _transition("retry", state, status, Status.RETRYING, now, fields)


def cancel(
    state: Mapping[str, Any],
    now: datetime,
    reason: str | None = None,
    cascade_root: str | None = None,
    *,
    announce: bool = False,
) -> Transition:
    """Any active status → cancelled; a reason is kept in current_step as "cancelled: <reason>".

    In a subtree's cancel (`cascade_root`: the task whose cancel it is) and in a bulk one (`announce`),
    `TASK_CANCELLED` {task_id, from_status, reason, root_task_id} follows the status change."""
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
    if cascade_root is not None or announce:
        payload = {
            "task_id": _task_id(state),
            "status": Status.CANCELLED,
            "from_status": status,
            "reason": reason,
            "root_task_id": cascade_root,
        }
        event = (EventType.TASK_CANCELLED, payload)
    return _transition("cancel", state, status, Status.CANCELLED, now, fields, event)


def expire(state: Mapping[str, Any], now: datetime) -> Transition:
    """Any active status → failed, once expires_at has passed; the failure is final."""
    now = _now(now)
    status = normalise_status(state.get("status"))
    _require("expire", "expire", status, ACTIVE - {Status.PAUSED})  # (no timeout fires while paused)
    expires_at = as_utc(state.get("expires_at"))
    if expires_at is None or not is_expired(state, now):
        when = expires_at.isoformat() if expires_at else "not set"
        raise _refuse("expire", status, f"cannot expire a task that has not expired (expires_at {when})")
    message = f"task expired at {expires_at.isoformat()}"
    details = "expires_at passed before the task finished"
    fields = {"last_error": {"timestamp": now, "message": message, "details": details}}
    payload = {
        "task_id": _task_id(state),
        "status": Status.FAILED,
        "error": message,
        "is_final": True,
        "details": details,
    }
    return _transition("expire", state, status, Status.FAILED, now, fields, (EventType.TASK_FAILED, payload))


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
    _require("lapse", "lapse the lease of", status, {Status.IN_PROGRESS})
    until = as_utc(state.get("lease_expires_at"))
    if until is None or not lease_lapsed(state, now):
        when = until.isoformat() if until else "no lease"
        raise _refuse("lapse", status, f"cannot lapse a lease that has not run out ({when})")
    attempts, holder = _attempts(state), state.get("lease_holder") or state.get("agent_name")
    kind_type = timeouts.error_type(timeouts.HEARTBEAT)
    final = attempts >= _max_attempts(state) or retry_policy.is_non_retryable(policy or {}, kind_type)
    to_status: str = Status.FAILED if final else Status.RETRYING
    message = f"lease held by {holder} expired at {until.isoformat()} (attempt {attempts})"
    details = "no heartbeat extended the lease before it ran out"
    last_error = {"timestamp": now, "message": message, "details": details, "error_type": kind_type}
    fields: dict[str, Any] = {"last_error": last_error}
    payload: dict[str, Any] = {
        "task_id": _task_id(state),
        "holder": holder,
        "attempt": attempts,
        "lease_expires_at": until.isoformat(),
        "status": to_status,
    }
    timing: dict[str, Any] = {}
    if to_status == Status.RETRYING and policy is not None:
        schedule, timing = _retry_schedule(state, now, policy, draw, None)
        if schedule["next_attempt_at"] is not None:
            fields |= schedule
            payload |= timing
        else:
            timing = {}
    to_status = _held(state, status, to_status, now, fields)
    payload["status"] = to_status
    # The lease is the heartbeat timeout: the same lapse is also the timeout event every kind writes.
    granted = as_utc(state.get("last_heartbeat_at")) or as_utc(state.get("started_at"))
    timed_out = {
        "task_id": _task_id(state),
        "kind": timeouts.HEARTBEAT,
        "timeout_seconds": (until - granted).total_seconds() if granted else None,
        "deadline": until.isoformat(),
        "attempt": attempts,
        "status": to_status,
        **({"next_attempt_at": timing["next_attempt_at"]} if timing else {}),
    }
    transition = _transition(
        "lapse", state, status, to_status, now, fields, (EventType.LEASE_EXPIRED, payload)
    )
    transition.events.append((EventType.TASK_TIMED_OUT, timed_out))
    return transition


def time_out(
    state: Mapping[str, Any],
    now: datetime,
    kind: str,
    *,
    policy: Mapping[str, Any] | None = None,
    draw: float = 0.5,
) -> Transition:
    """Fire the task's `kind` timeout (a `timeouts.KINDS` name) once its deadline has passed in one of the
    kind's statuses: SCHEDULE_TO_START and SCHEDULE_TO_CLOSE fail the task for good; START_TO_CLOSE fails
    the attempt, which the retry policy (`policy`, `draw`: as `fail`) retries like any failure (failed when
    the attempts are used up or `TimedOut:START_TO_CLOSE` is non-retryable). Writes STATUS_CHANGED and
    `TASK_TIMED_OUT` {task_id, kind, timeout_seconds, deadline (ISO), attempt, status, next_attempt_at};
    `last_error.error_type` is `TimedOut:<KIND>`."""
    now = _now(now)
    spec = timeouts.BY_NAME.get(kind)
    if spec is None:
        raise InvalidInput("kind", f"kind must be one of {', '.join(timeouts.BY_NAME)}, got {kind!r}")
    status = normalise_status(state.get("status"))
    _require("time_out", f"time out ({kind})", status, set(spec.statuses))
    deadline = as_utc(state.get(spec.deadline_field))
    if deadline is None or spec not in due_timeouts(state, now):
        when = deadline.isoformat() if deadline else "none armed"
        raise _refuse("time_out", status, f"the {kind} timeout has not passed (deadline {when})")
    attempts, kind_type = _attempts(state), timeouts.error_type(kind)
    final = (
        spec.final
        or _attempts(state) >= _max_attempts(state)
        or retry_policy.is_non_retryable(policy or {}, kind_type)
    )
    to_status: str = Status.FAILED if final else Status.RETRYING
    seconds = timeouts.seconds(state, spec)
    limit = f" of {seconds:g} s" if seconds is not None else ""
    message = f"{kind} timeout{limit} passed at {deadline.isoformat()} (attempt {attempts})"
    details = {
        timeouts.SCHEDULE_TO_START: "the task was not started in time after it became schedulable",
        timeouts.START_TO_CLOSE: "the attempt ran longer than its start-to-close timeout",
        timeouts.SCHEDULE_TO_CLOSE: "the task, retries included, did not finish in time",
    }[spec]
    last_error = {"timestamp": now, "message": message, "details": details, "error_type": kind_type}
    fields: dict[str, Any] = {"last_error": last_error}
    payload: dict[str, Any] = {
        "task_id": _task_id(state),
        "kind": kind,
        "timeout_seconds": seconds,
        "deadline": deadline.isoformat(),
        "attempt": attempts,
        "status": to_status,
    }
    if not final and policy is not None:
        schedule, timing = _retry_schedule(state, now, policy, draw, None)
        if schedule["next_attempt_at"] is not None:
            fields |= schedule
            payload["next_attempt_at"] = timing["next_attempt_at"]
    elif state.get("next_attempt_at") is not None:
        fields["next_attempt_at"] = None
    to_status = _held(state, status, to_status, now, fields)
    payload["status"] = to_status
    return _transition("time_out", state, status, to_status, now, fields, (EventType.TASK_TIMED_OUT, payload))


def reschedule(state: Mapping[str, Any], now: datetime, not_before: datetime | None) -> Transition:
    """A task not started yet (pending, retrying, awaiting_dependency) gets a new `not_before`: no claim
    hands it out before then (None: at once). Its status does not change; `TASK_RESCHEDULED` records the
    new and the previous time."""
    now = _now(now)
    if not_before is not None and not isinstance(not_before, datetime):
        raise InvalidInput("not_before", "not_before must be a datetime")
    status = normalise_status(state.get("status"))
    _require(
        "reschedule", "reschedule", status, {Status.PENDING, Status.RETRYING, Status.AWAITING_DEPENDENCY}
    )
    previous = as_utc(state.get("not_before"))
    when = as_utc(not_before)
    payload = {
        "task_id": _task_id(state),
        "status": status,
        "not_before": when.isoformat() if when else None,
        "previous_not_before": previous.isoformat() if previous else None,
    }
    fields = {"not_before": when}
    return _transition(
        "reschedule", state, status, status, now, fields, (EventType.TASK_RESCHEDULED, payload)
    )


def check_reason(reason: Any) -> None:
    """A pause's or resume's reason: a string of at most MAX_STEP_LENGTH characters, or None."""
    if reason is None:
        return
    if not isinstance(reason, str):
        raise InvalidInput("reason", "reason must be a string")
    if len(reason) > MAX_STEP_LENGTH:
        raise InvalidInput(
            "reason", f"reason must be at most {MAX_STEP_LENGTH} characters, got {len(reason)}"
        )


def _pause_event(
    kind: str,
    state: Mapping[str, Any],
    from_status: str,
    to_status: str,
    reason: str | None,
    root: str | None,
) -> tuple[str, dict[str, Any]]:
    payload = {
        "task_id": _task_id(state),
        "from_status": from_status,
        "to_status": to_status,
        "reason": reason,
        "root_task_id": root,
    }
    if to_status == Status.IN_PROGRESS:
        payload["pause_requested"] = kind == EventType.TASK_PAUSED
    return kind, payload


def pause(
    state: Mapping[str, Any], now: datetime, reason: str | None = None, cascade_root: str | None = None
) -> Transition:
    """pending/retrying/awaiting_dependency → paused (`paused_from` keeps the status, `paused_at` the
    time; next_attempt_at and not_before are kept); in_progress → in_progress with `pause_requested`
    (the attempt runs on; see `fail`/`lapse`). `TASK_PAUSED` {from_status, to_status, reason,
    root_task_id} follows the status change. Already paused (or asked to): `NoOp`; finished: refused."""
    now = _now(now)
    check_reason(reason)
    status = normalise_status(state.get("status"))
    if status == Status.PAUSED or (status == Status.IN_PROGRESS and state.get("pause_requested")):
        raise NoOp("pause", status, "ALREADY_PAUSED", f"task {_task_id(state)} is already {status}")
    _require("pause", "pause", status, PAUSABLE | {Status.IN_PROGRESS})
    if status == Status.IN_PROGRESS:
        fields: dict[str, Any] = {"pause_requested": True}
        event = _pause_event(EventType.TASK_PAUSED, state, status, status, reason, cascade_root)
        return _transition("pause", state, status, status, now, fields, event)
    fields = {"paused_from": status, "paused_at": now}
    event = _pause_event(EventType.TASK_PAUSED, state, status, Status.PAUSED, reason, cascade_root)
    return _transition("pause", state, status, Status.PAUSED, now, fields, event)


def resume(
    state: Mapping[str, Any],
    now: datetime,
    reason: str | None = None,
    cascade_root: str | None = None,
    *,
    dependencies_met: bool = True,
) -> Transition:
    """paused → the status it was paused from: retrying (its next_attempt_at kept: a retry that came due
    during the pause is due at once), else pending when its dependencies are met now
    (`dependencies_met`, the caller checks them) and awaiting_dependency when not; a dependency met
    during the pause is honoured here. in_progress with `pause_requested` → the request is withdrawn.
    `TASK_RESUMED` {from_status, to_status, reason, root_task_id}. Not paused: `NoOp`; finished: refused.
    The deadlines the pause held are moved on by `shift_deadlines`."""
    now = _now(now)
    check_reason(reason)
    status = normalise_status(state.get("status"))
    if status == Status.IN_PROGRESS and state.get("pause_requested"):
        fields: dict[str, Any] = {"pause_requested": None}
        event = _pause_event(EventType.TASK_RESUMED, state, status, status, reason, cascade_root)
        return _transition("resume", state, status, status, now, fields, event)
    if status != Status.PAUSED:
        if status in TERMINAL:
            raise _refuse("resume", status, f"cannot resume a task that is {status}")
        raise NoOp("resume", status, "NOT_PAUSED", f"task {_task_id(state)} is not paused (it is {status})")
    paused_from = normalise_status(state.get("paused_from"))
    if paused_from == Status.RETRYING:
        to_status = Status.RETRYING
    else:  # pending, awaiting_dependency, or a paused_from this server did not write
        to_status = Status.PENDING if dependencies_met else Status.AWAITING_DEPENDENCY
    paused_at, now_utc = as_utc(state.get("paused_at")), as_utc(now)
    paused_for = (now_utc - paused_at) if paused_at and now_utc and now_utc > paused_at else timedelta(0)
    fields = {**shift_deadlines(state, paused_for), "paused_from": None, "paused_at": None}
    event = _pause_event(EventType.TASK_RESUMED, state, status, to_status, reason, cascade_root)
    return _transition("resume", state, status, to_status, now, fields, event)


def shift_deadlines(state: Mapping[str, Any], paused_for: timedelta) -> dict[str, Any]:
    """The deadline fields a resume moves on by `paused_for` (the time the task spent paused), as `$set`
    fields: every armed timeout's (`TIMEOUT_DEADLINE_FIELDS`), so a pause does not eat into them.

    `next_attempt_at` is not one of them: a retry that came due during the pause is simply due at the
    resume; nor is `expires_at`, a wall-clock time the caller chose (a paused task does not expire; once
    resumed, an `expires_at` in the past fails it). A move the resume makes itself (a release arms
    schedule-to-start afresh, `_deadlines`) overrides the shifted value."""
    if paused_for <= timedelta(0):
        return {}
    out: dict[str, Any] = {}
    for name in TIMEOUT_DEADLINE_FIELDS:
        deadline = as_utc(state.get(name))
        if deadline is not None:
            out[name] = deadline + paused_for
    return out


def release(state: Mapping[str, Any], now: datetime) -> Transition:
    """awaiting_dependency → pending, once its dependencies are met (the caller checks them)."""
    now = _now(now)
    status = normalise_status(state.get("status"))
    _require("release", "release", status, {Status.AWAITING_DEPENDENCY})
    return _transition("release", state, status, Status.PENDING, now, {})


def block(state: Mapping[str, Any], now: datetime) -> Transition:
    """pending/retrying → awaiting_dependency, when its dependencies are not met (the caller checks)."""
    now = _now(now)
    status = normalise_status(state.get("status"))
    _require("block", "block", status, {Status.PENDING, Status.RETRYING})
    return _transition("block", state, status, Status.AWAITING_DEPENDENCY, now, {})


# --- predicates ---------------------------------------------------------------------------------------


def is_expired(state: Mapping[str, Any], now: datetime) -> bool:
    """True when the task is active and not paused, and its expires_at (datetime, naive = UTC, or ISO
    string) <= now.

    An unreadable expires_at counts as not set.
    """
    status = normalise_status(state.get("status"))
    if status not in ACTIVE or status == Status.PAUSED:
        return False
    expires_at = as_utc(state.get("expires_at"))
    now_utc = as_utc(now)
    return expires_at is not None and now_utc is not None and expires_at <= now_utc


def has_lease(state: Mapping[str, Any]) -> bool:
    """Whether any lease field is set (a task started before leases existed has none)."""
    return any(state.get(name) is not None for name in LEASE_FIELDS)


def lease_lapsed(state: Mapping[str, Any], now: datetime) -> bool:
    """True when the task is in progress and its lease_expires_at <= now (no lease: never)."""
    if normalise_status(state.get("status")) != Status.IN_PROGRESS:
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
        expected = dep.get("status_expected") or Status.COMPLETED
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
    return Status.PENDING if _deps_met(dependencies, statuses_by_id) else Status.AWAITING_DEPENDENCY
