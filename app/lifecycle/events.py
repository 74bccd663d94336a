"""The `task_events` outbox: event types and how an event document is shaped.

Every change writes its event in the same transaction as the change, so an event exists exactly when
its change committed. Its commit-order position (`seq`, the cursor clients resume from) is stamped just
after the commit, from MongoDB's own commit order (see `app.store.events`).
Seed 003's payloads are kept under `payload` with their own field names.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """Every kind of event; the seed 003 ones keep their names."""

    TASK_CREATED = "TASK_CREATED"
    TASK_UPDATED = "TASK_UPDATED"
    TASK_DELETED = "TASK_DELETED"
    TASK_FINALIZED = "TASK_FINALIZED"
    STATUS_CHANGED = "STATUS_CHANGED"
    TASK_PROGRESS = "TASK_PROGRESS"
    TASK_COMPLETED = "TASK_COMPLETED"
    TASK_FAILED = "TASK_FAILED"
    #: A task's lease ran out before it finished: it went back to retrying (or failed, attempts used up).
    LEASE_EXPIRED = "LEASE_EXPIRED"
    #: A task not started yet was given a new `not_before` (`rescheduleTask`): no claim before it.
    TASK_RESCHEDULED = "TASK_RESCHEDULED"
    #: A task was cancelled by the cancel of its subtree (`cancelTask(scope: SUBTREE)`) or by `cancelTasks`,
    #: with the reason.
    TASK_CANCELLED = "TASK_CANCELLED"
    #: A timeout fired (`kind`: SCHEDULE_TO_START, START_TO_CLOSE, SCHEDULE_TO_CLOSE, or HEARTBEAT with a
    #: lease's LEASE_EXPIRED); app/lifecycle/timeouts.py.
    TASK_TIMED_OUT = "TASK_TIMED_OUT"
    #: A task was paused (`pauseTask`, `pauseTasks`), or a running one asked to pause, with the reason.
    TASK_PAUSED = "TASK_PAUSED"
    #: A paused task was resumed (`resumeTask`, `resumeTasks`), or a running one's pause request withdrawn.
    TASK_RESUMED = "TASK_RESUMED"
    TOOL_CALL = "TOOL_CALL"
    TOOL_RESULT = "TOOL_RESULT"
    MEMORY_OPERATION = "MEMORY_OPERATION"
    #: Read side only: an event of a type this server does not know (written by another program).
    OTHER = "OTHER"


def event_doc(
    type: EventType | str,
    task_id: str,
    workflow_id: str | None,
    agent_id: str | None,
    payload: dict[str, Any],
    now: dt.datetime,
) -> dict[str, Any]:
    """An event document ready to append (`append_events` gives it its `_id` and an unstamped `seq`)."""
    return {
        "type": str(type),
        "task_id": task_id,
        "workflow_id": workflow_id,
        "agent_id": agent_id,
        "timestamp": now,
        "payload": payload,
    }
