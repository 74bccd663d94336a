"""The `TaskEvent` interface and one concrete type per event payload (seed 003, plus lifecycle events).

An event's `cursor` is its position in commit order (24 hex digits, stamped just after its change
committed; see app/store/events.py): events are ordered by it, and a client resumes a stream or a list
exactly after the last cursor it saw.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeAlias

import strawberry
from strawberry.scalars import JSON

from app.api.types.convert import as_datetime
from app.api.types.enums import TaskStatus
from app.domain import EventType as StoredEventType
from app.domain import parse_status
from app.store.events import encode_event_cursor


@strawberry.enum(description="What kind of caller wrote an event.")
class ActorKind(Enum):
    KEY = strawberry.enum_value("key", description="An API key (`id` is the key's id).")
    JWT = strawberry.enum_value("jwt", description="A JWT's subject (`id` is its `sub` claim).")
    ANONYMOUS = strawberry.enum_value("anonymous", description="A caller without credentials (open mode).")
    SYSTEM = strawberry.enum_value(
        "system", description="The server's own work (`id` names it: `expiry-sweeper`, `demo`, `server`)."
    )


@strawberry.type(description="Who wrote an event: the caller of the request, or the server's own job.")
class Actor:
    kind: ActorKind = strawberry.field(description="Kind of caller.")
    id: str | None = strawberry.field(
        description="The API key's id, the JWT's subject or the job's name; null for anonymous callers."
    )
    name: str | None = strawberry.field(description="The key's name, or the token's name claim.")


def actor_from_doc(value: Any) -> Actor | None:
    """The stored `actor` sub-document as an `Actor`; None for events written before actors existed."""
    if not isinstance(value, Mapping):
        return None
    try:
        kind = ActorKind(value.get("kind"))
    except ValueError:
        return None
    name = value.get("name")
    return Actor(
        kind=kind,
        id=None if value.get("id") is None else str(value["id"]),
        name=None if name is None else str(name),
    )


# `strawberry.enum` registers the stored enum itself (named EventType) as the GraphQL enum `EventType`
# and returns it; the alias gives the API a name for it that type checkers take as a type.
strawberry.enum(StoredEventType, description="Kinds of task events.")
EventType: TypeAlias = StoredEventType


@strawberry.interface(description="Something that happened to a task, in commit order.")
class TaskEvent:
    id: strawberry.ID = strawberry.field(description="Id of the event (same as `cursor`).")
    cursor: str = strawberry.field(
        description="Position of the event; pass it as `after` to resume after it."
    )
    type: EventType = strawberry.field(description="Kind of event.")
    task_id: strawberry.ID = strawberry.field(description="Id of the task the event is about.")
    workflow_id: strawberry.ID | None = strawberry.field(
        description="Id of the meta workflow task whose tree holds the task (null for standalone tasks)."
    )
    agent_id: str | None = strawberry.field(description="The agent the event concerns or that reported it.")
    timestamp: dt.datetime = strawberry.field(description="When the change committed.")
    actor: Actor | None = strawberry.field(
        description="Who wrote it: the API key, JWT subject or anonymous caller of the request, or the"
        " server's own job (null for events written before actors were recorded)."
    )
    request_id: str | None = strawberry.field(
        description="The id of the request that wrote it (its `X-Request-ID`, as in the server's log)."
    )


@strawberry.type(description="A task was created.")
class TaskCreatedEvent(TaskEvent):
    task_kind: str | None = strawberry.field(
        description="meta_workflow, sub_task, behavior_task or standalone."
    )
    status: TaskStatus | None = strawberry.field(description="Its initial status.")


@strawberry.type(description="Stored fields of a task were edited.")
class TaskUpdatedEvent(TaskEvent):
    fields: list[str] = strawberry.field(description="Names of the fields that were set.")


@strawberry.type(description="A task was deleted (with its subtree when `cascade`).")
class TaskDeletedEvent(TaskEvent):
    deleted_ids: list[str] = strawberry.field(description="Ids of every task removed.")


@strawberry.type(description="A task was finalized (one-way).")
class TaskFinalizedEvent(TaskEvent):
    task_kind: str | None = strawberry.field(description="Which level was finalized.")


@strawberry.type(description="A task's status changed.")
class StatusChangedEvent(TaskEvent):
    from_status: TaskStatus = strawberry.field(description="Status before the change.")
    to_status: TaskStatus = strawberry.field(description="Status after the change.")


@strawberry.type(description="Progress was reported (seed 003 TASK_PROGRESS).")
class TaskProgressEvent(TaskEvent):
    status: TaskStatus = strawberry.field(description="Status of the task (in progress).")
    progress: float = strawberry.field(
        description="Progress as a fraction, 0.0 to 1.0 (seed 003's TASK_PROGRESS scale):"
        " `reportProgress(percentage: 70)` records 0.7, while the state's `progressPercentage` is 70."
    )
    details: str | None = strawberry.field(description="The current step, if reported.")


@strawberry.type(description="A task completed (seed 003 TASK_COMPLETED).")
class TaskCompletedEvent(TaskEvent):
    status: TaskStatus = strawberry.field(description="Status of the task (completed).")
    result: JSON = strawberry.field(description="The task's result data.")


@strawberry.type(description="A task failed (seed 003 TASK_FAILED).")
class TaskFailedEvent(TaskEvent):
    status: TaskStatus = strawberry.field(
        description="Status after the failure: retrying or failed (paused: a pause was asked while it ran)."
    )
    error: str = strawberry.field(description="Why it failed.")
    is_final: bool = strawberry.field(description="True when the failure is final (no retry will follow).")
    details: str | None = strawberry.field(description="More detail, e.g. a stack trace.")
    error_type: str | None = strawberry.field(
        default=None, description="The type the worker gave (failTask(errorType:)), if any."
    )
    retry_delay_seconds: float | None = strawberry.field(
        default=None,
        description="The retry policy's delay before the next attempt, before jitter (null: no retry).",
    )
    applied_delay_seconds: float | None = strawberry.field(
        default=None, description="The delay applied: jittered, or the worker's nextRetryDelay."
    )
    next_attempt_at: dt.datetime | None = strawberry.field(
        default=None, description="When the next attempt may be claimed (null: at once, or no retry)."
    )


@strawberry.type(
    description="A task's lease ran out before it finished: the task went back to retrying, or to failed"
    " when its attempts were used up."
)
class LeaseExpiredEvent(TaskEvent):
    holder: str | None = strawberry.field(description="Who held the lease.")
    attempt: int = strawberry.field(description="The attempt whose lease ran out (its fencing token).")
    lease_expires_at: dt.datetime | None = strawberry.field(description="When the lease ran out.")
    status: TaskStatus | None = strawberry.field(
        description="Status the task moved to: retrying or failed (paused: a pause was asked while it ran)."
    )


@strawberry.type(
    description="A task not started yet got a new notBefore (rescheduleTask): no claim before it."
)
class TaskRescheduledEvent(TaskEvent):
    status: TaskStatus | None = strawberry.field(description="Status of the task (unchanged).")
    not_before: dt.datetime | None = strawberry.field(description="The new time (null: claimable at once).")
    previous_not_before: dt.datetime | None = strawberry.field(description="The time before (null: none).")


@strawberry.type(
    description="A task was cancelled with its subtree (cancelTask(scope: SUBTREE)) or by cancelTasks."
)
class TaskCancelledEvent(TaskEvent):
    status: TaskStatus | None = strawberry.field(description="Status after the change (cancelled).")
    from_status: TaskStatus | None = strawberry.field(description="Status before the cancel.")
    reason: str | None = strawberry.field(description="Why, as the cancel gave it.")
    root_task_id: str | None = strawberry.field(
        description="The task whose subtree was cancelled (null: a bulk cancelTasks)."
    )


@strawberry.enum(description="Which of a task's timeouts fired (docs/STEERING.md, Timeouts).")
class TimeoutKind(Enum):
    SCHEDULE_TO_START = strawberry.enum_value(
        "SCHEDULE_TO_START",
        description="Not started in time after it became schedulable: the task failed for good.",
    )
    START_TO_CLOSE = strawberry.enum_value(
        "START_TO_CLOSE", description="One attempt ran too long: it failed, and the retry policy applied."
    )
    SCHEDULE_TO_CLOSE = strawberry.enum_value(
        "SCHEDULE_TO_CLOSE", description="The whole task, retries included, took too long: failed for good."
    )
    HEARTBEAT = strawberry.enum_value(
        "HEARTBEAT", description="The lease ran out (no heartbeat in time); LEASE_EXPIRED says the same."
    )


@strawberry.type(
    description="A timeout fired: the task failed (SCHEDULE_TO_START, SCHEDULE_TO_CLOSE), or its attempt"
    " failed and the retry policy applied (START_TO_CLOSE, HEARTBEAT). `lastError.errorType` is"
    " `TimedOut:<kind>`."
)
class TaskTimedOutEvent(TaskEvent):
    kind: TimeoutKind | None = strawberry.field(description="Which timeout.")
    timeout_seconds: float | None = strawberry.field(description="The timeout, in seconds.")
    deadline: dt.datetime | None = strawberry.field(description="When it ran out.")
    attempt: int = strawberry.field(description="The attempt counted when it fired (0: never started).")
    status: TaskStatus | None = strawberry.field(description="Status after it: failed, or retrying.")
    next_attempt_at: dt.datetime | None = strawberry.field(
        default=None, description="A retry's time by its retry policy (null: at once, or no retry)."
    )


@strawberry.type(
    description="A task was paused (pauseTask / pauseTasks): toStatus PAUSED, or IN_PROGRESS with"
    " pauseRequested for a running one (its attempt finishes)."
)
class TaskPausedEvent(TaskEvent):
    from_status: TaskStatus | None = strawberry.field(description="Status before the pause.")
    to_status: TaskStatus | None = strawberry.field(description="Status after it: PAUSED or IN_PROGRESS.")
    reason: str | None = strawberry.field(description="Why, as the caller gave it.")
    root_task_id: str | None = strawberry.field(
        description="The task whose subtree was paused (null: the task alone, or a bulk action)."
    )
    pause_requested: bool | None = strawberry.field(
        description="True when the task was running: it is asked to pause once its attempt ends."
    )


@strawberry.type(
    description="A paused task was resumed (resumeTask / resumeTasks) to the status it was paused from, or"
    " a running task's pause request was withdrawn."
)
class TaskResumedEvent(TaskEvent):
    from_status: TaskStatus | None = strawberry.field(description="Status before the resume (PAUSED).")
    to_status: TaskStatus | None = strawberry.field(description="Status restored.")
    reason: str | None = strawberry.field(description="Why, as the caller gave it.")
    root_task_id: str | None = strawberry.field(
        description="The task whose subtree was resumed (null: the task alone, or a bulk action)."
    )


@strawberry.type(description="An agent invoked a tool (seed 003 TOOL_CALL).")
class ToolCallEvent(TaskEvent):
    tool_name: str = strawberry.field(description="Name of the tool called.")
    tool_args: JSON = strawberry.field(description="Arguments passed to the tool.")
    correlation_id: str | None = strawberry.field(description="Links this call to its result or request.")


@strawberry.type(description="A tool reported its outcome (seed 003 TOOL_RESULT).")
class ToolResultEvent(TaskEvent):
    tool_name: str = strawberry.field(description="Name of the tool that was called.")
    status: str = strawberry.field(description="Outcome: SUCCESS, FAILURE or ERROR.")
    result: JSON | None = strawberry.field(description="The tool's result data.")
    error_message: str | None = strawberry.field(description="What went wrong, if it failed.")
    correlation_id: str | None = strawberry.field(description="Links back to the TOOL_CALL.")


@strawberry.type(description="An operation on agent or system memory (seed 003 MEMORY_OPERATION).")
class MemoryOperationEvent(TaskEvent):
    operation: str = strawberry.field(description="set, get, delete, query…")
    key_or_query: str = strawberry.field(description="The key accessed or the query used.")
    status: str = strawberry.field(description="SUCCESS or FAILURE.")
    message: str | None = strawberry.field(description="Optional details or error message.")


@strawberry.type(description="An event of a type this server does not know, written by another program.")
class OtherEvent(TaskEvent):
    raw_type: str = strawberry.field(description="The type as stored.")
    payload: JSON = strawberry.field(description="The payload as stored.")


_TYPES: dict[str, type[TaskEvent]] = {
    EventType.TASK_CREATED: TaskCreatedEvent,
    EventType.TASK_UPDATED: TaskUpdatedEvent,
    EventType.TASK_DELETED: TaskDeletedEvent,
    EventType.TASK_FINALIZED: TaskFinalizedEvent,
    EventType.STATUS_CHANGED: StatusChangedEvent,
    EventType.TASK_PROGRESS: TaskProgressEvent,
    EventType.TASK_COMPLETED: TaskCompletedEvent,
    EventType.TASK_FAILED: TaskFailedEvent,
    EventType.LEASE_EXPIRED: LeaseExpiredEvent,
    EventType.TASK_RESCHEDULED: TaskRescheduledEvent,
    EventType.TASK_CANCELLED: TaskCancelledEvent,
    EventType.TASK_TIMED_OUT: TaskTimedOutEvent,
    EventType.TASK_PAUSED: TaskPausedEvent,
    EventType.TASK_RESUMED: TaskResumedEvent,
    EventType.TOOL_CALL: ToolCallEvent,
    EventType.TOOL_RESULT: ToolResultEvent,
    EventType.MEMORY_OPERATION: MemoryOperationEvent,
}


def _status(value: Any) -> TaskStatus | None:
    return None if value is None else parse_status(value)


def _timeout_kind(value: Any) -> TimeoutKind | None:
    try:
        return TimeoutKind(str(value))
    except ValueError:
        return None


def event_from_doc(doc: Mapping[str, Any]) -> TaskEvent:
    """The concrete event type for a stored event; payload fields become its fields."""
    payload = doc.get("payload") or {}
    cls = _TYPES.get(str(doc.get("type")))
    if cls is None:
        return OtherEvent(
            **_common(doc, StoredEventType.OTHER), raw_type=str(doc.get("type")), payload=JSON(payload)
        )
    kwargs: dict[str, Any] = {}
    for name in cls.__dataclass_fields__:
        if name in _COMMON_FIELDS:
            continue
        value = payload.get(name)
        if name in ("status", "from_status", "to_status") and cls not in (
            ToolResultEvent,
            MemoryOperationEvent,
        ):
            value = _status(value)
        elif name in ("result", "tool_args") and value is None and cls is not ToolResultEvent:
            value = {}
        elif name in ("fields", "deleted_ids") and value is None:
            value = []
        elif name in ("lease_expires_at", "next_attempt_at", "not_before", "previous_not_before", "deadline"):
            value = as_datetime(value)
        elif name == "kind":
            value = _timeout_kind(value)
        elif name == "timeout_seconds" and (isinstance(value, bool) or not isinstance(value, int | float)):
            value = None
        elif name == "attempt" and not isinstance(value, int):
            value = 0
        kwargs[name] = value
    return cls(**_common(doc, StoredEventType(doc["type"])), **kwargs)


def _common(doc: Mapping[str, Any], kind: StoredEventType) -> dict[str, Any]:
    """The `TaskEvent` interface fields of a stored event."""
    # An event's id and cursor are its commit-order position (app/store/events.py). A mutation answered
    # while the change stream is down may return an event not stamped yet: it is named by its stored id
    # with a prefix no cursor has, so resuming from it is refused rather than skipping events.
    seq = doc.get("seq")
    number = encode_event_cursor(seq) if seq is not None else f"unstamped-{doc['_id']}"
    return {
        "id": number,
        "cursor": number,
        "type": kind,
        "task_id": doc.get("task_id", ""),
        "workflow_id": doc.get("workflow_id"),
        "agent_id": doc.get("agent_id"),
        "timestamp": as_datetime(doc.get("timestamp")) or dt.datetime.fromtimestamp(0, dt.UTC),
        "actor": actor_from_doc(doc.get("actor")),
        "request_id": None if doc.get("request_id") is None else str(doc["request_id"]),
    }


#: The `TaskEvent` interface's fields (`_common`), as opposed to each type's payload fields.
_COMMON_FIELDS = frozenset(
    ("id", "cursor", "type", "task_id", "workflow_id", "agent_id", "timestamp", "actor", "request_id")
)


ALL_EVENT_TYPES: list[type[TaskEvent]] = [*_TYPES.values(), OtherEvent]
