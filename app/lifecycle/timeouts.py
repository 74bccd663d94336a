"""The four timeouts of a task (Temporal's activity timeouts): pure definitions, no I/O, no clock.

A task's state may carry three timeouts, in seconds (0 or missing: none): `schedule_to_start_timeout`
(not started in time after it became schedulable), `start_to_close_timeout` (one attempt running too
long) and `schedule_to_close_timeout` (the whole task, retries included). The fourth, the heartbeat
timeout, is the lease (`lease_expires_at`). A task created without one takes the server's default
(`*_TIMEOUT_SECONDS` settings) at its creation.

Each armed timeout is stored as a deadline on the state (`Kind.deadline_field`), set when it starts to
run and cleared when it no longer applies (`state_machine` does both); the sweeper fires a deadline
that passed while the task is in one of the kind's `statuses`, named one by one: a status not listed
(`paused`, say) never times out.

- SCHEDULE_TO_START runs in pending and retrying, from the task's creation or release (pending), each
  retry and a manual retry, or from its `not_before`/`next_attempt_at` when later; it fails the task.
- START_TO_CLOSE runs in in_progress, from each start; it fails the attempt, and the retry policy applies.
- SCHEDULE_TO_CLOSE runs in pending, retrying, awaiting_dependency and in_progress, from the task's
  creation (and a manual retry); it fails the task.

A task awaiting a dependency is not schedulable: its schedule-to-start timeout starts when it is released.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.domain import Status

#: The longest timeout a task (or a server default) may set: one year, in seconds.
MAX_TIMEOUT_SECONDS = 365 * 24 * 3600.0


@dataclass(frozen=True)
class Kind:
    """One timeout: its name (the event's `kind`), the state fields of its value and of its deadline, and
    the statuses it runs in (what the sweep looks for, by name)."""

    name: str
    timeout_field: str
    deadline_field: str
    statuses: tuple[str, ...]
    #: Whether firing fails the task for good (else the attempt fails and the retry policy applies).
    final: bool


SCHEDULE_TO_START = Kind(
    "SCHEDULE_TO_START",
    "schedule_to_start_timeout",
    "schedule_to_start_deadline",
    (Status.PENDING, Status.RETRYING),
    final=True,
)
START_TO_CLOSE = Kind(
    "START_TO_CLOSE", "start_to_close_timeout", "start_to_close_deadline", (Status.IN_PROGRESS,), final=False
)
SCHEDULE_TO_CLOSE = Kind(
    "SCHEDULE_TO_CLOSE",
    "schedule_to_close_timeout",
    "schedule_to_close_deadline",
    (Status.PENDING, Status.RETRYING, Status.AWAITING_DEPENDENCY, Status.IN_PROGRESS),
    final=True,
)
#: The stored timeouts, in the order the sweeper fires them: the final ones first (a task whose whole
#: time ran out is not retried), then the attempt's.
KINDS: tuple[Kind, ...] = (SCHEDULE_TO_CLOSE, SCHEDULE_TO_START, START_TO_CLOSE)
BY_NAME = {kind.name: kind for kind in KINDS}
#: The lease's lapse, recorded with the same event (`TASK_TIMED_OUT`) as the stored timeouts.
HEARTBEAT = "HEARTBEAT"
#: Every kind an event may name.
KIND_NAMES = (*(kind.name for kind in KINDS), HEARTBEAT)
#: The state fields a client sets (seconds; 0: none).
FIELDS = tuple(kind.timeout_field for kind in KINDS)


def error_type(kind: str) -> str:
    """The `last_error.error_type` a timeout of `kind` records: what a retry policy's
    `nonRetryableErrorTypes` names to make it final (e.g. `TimedOut:START_TO_CLOSE`)."""
    return f"TimedOut:{kind}"


def check(name: str, value: Any) -> float | None:
    """A timeout as given (None: not given), validated; raises ValueError with a sentence naming the limit."""
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not 0 <= value <= MAX_TIMEOUT_SECONDS:
        raise ValueError(
            f"{name} must be between 0 (none) and {MAX_TIMEOUT_SECONDS:.0f} seconds (one year), got {value:g}"
        )
    return float(value)


def seconds(state: Mapping[str, Any], kind: Kind) -> float | None:
    """The task's timeout of `kind` in seconds, None when it has none (read tolerantly)."""
    value = state.get(kind.timeout_field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if value > 0 else None


def resolved(given: Mapping[str, Any], defaults: Mapping[str, float] | None) -> dict[str, float]:
    """The timeouts a new task stores: its own (0 kept: "none", said explicitly), else the server's
    default when there is one."""
    out: dict[str, float] = {}
    for name in FIELDS:
        value = given.get(name)
        if value is None:
            value = (defaults or {}).get(name) or None
        if value is not None:
            out[name] = float(value)
    return out
