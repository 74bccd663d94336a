"""Mutation results as data: the `Error` interface, its concrete error types, and the success payloads.

Expected failures never become GraphQL errors: a mutation answers one member of its result union, so a
client can `switch` on `__typename` and read `message` (plus the specific fields) of any error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import strawberry

from app.api.types.convert import from_doc
from app.api.types.enums import TaskStatus
from app.api.types.events import TaskEvent, event_from_doc
from app.api.types.tasks import AgentTaskState
from app.lifecycle.errors import Conflict, Invalid, NotFound, Refused, ServiceError
from app.store.collections import ALL, FieldKind


@strawberry.interface(description="An expected failure of a mutation; nothing was written.")
class Error:
    message: str = strawberry.field(description="One sentence saying what was wrong.")


@strawberry.type(description="The id names no document.")
class NotFoundError(Error):
    id: strawberry.ID | None = strawberry.field(description="The id that was not found.")


@strawberry.type(description="The task's status (or finalization) does not allow this change.")
class TransitionError(Error):
    current_status: TaskStatus | None = strawberry.field(description="The task's status now.")


@strawberry.type(
    description="The task changed since it was read (`expectedVersion` is stale), or a rule refused."
)
class ConflictError(Error):
    current_version: int | None = strawberry.field(description="The task's version now, when known.")


@strawberry.type(description="An argument is invalid.")
class ValidationError(Error):
    field: str = strawberry.field(description="The input field at fault (a dotted path).")


@strawberry.type(description="The change was applied.")
class TaskTransitionSuccess:
    state: AgentTaskState = strawberry.field(description="The task's state after the change.")
    event: TaskEvent | None = strawberry.field(
        description="The main event of this change (e.g. TASK_COMPLETED), or null if it wrote none."
    )
    events: list[TaskEvent] = strawberry.field(
        description="Every event written by the change, in order, including dependents it released."
    )


@strawberry.type(description="No pending task of that agent has its dependencies met right now.")
class NothingToClaim:
    message: str = strawberry.field(description="Why nothing was handed out.")


#: Free-form JSON fields: the keys below them are the client's own, never renamed.
_FREE_FORM = frozenset(
    name for spec in ALL for name, kind in spec.fields.items() if kind is FieldKind.JSON
) | {"tool_args", "result"}


def graphql_path(path: str) -> str:
    """A service's field path (domain snake_case: `input.sub_tasks[0].task_id`) in GraphQL's naming
    (`input.subTasks[0].taskId`). Keys below a free-form JSON field are the client's and stay as sent;
    a path already in camelCase is unchanged. The one place service paths become GraphQL paths."""
    out: list[str] = []
    segments = path.split(".")
    for n, segment in enumerate(segments):
        name, bracket, index = segment.partition("[")
        out.append(re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name) + bracket + index)
        if name in _FREE_FORM:
            out += segments[n + 1 :]
            break
    return ".".join(out)


def error_from(exc: ServiceError) -> Error:
    """The GraphQL error type for a service refusal."""
    if isinstance(exc, NotFound):
        return NotFoundError(message=exc.message, id=exc.id)
    if isinstance(exc, Refused):
        status = None
        if exc.current_status:
            try:
                status = TaskStatus(exc.current_status)
            except ValueError:
                status = None
        return TransitionError(message=exc.message, current_status=status)
    if isinstance(exc, Conflict):
        return ConflictError(message=exc.message, current_version=exc.current_version)
    if isinstance(exc, Invalid):
        return ValidationError(message=exc.message, field=graphql_path(exc.field))
    return Error(message=exc.message)  # pragma: no cover - every ServiceError is one of the above


def transition_success(state: Mapping[str, Any], events: list[Mapping[str, Any]]) -> TaskTransitionSuccess:
    """The success payload: the main event is the last one about the task itself."""
    own = [e for e in events if e.get("task_id") == state["_id"]]
    return TaskTransitionSuccess(
        state=from_doc(AgentTaskState, AgentTaskState.spec, state),
        event=event_from_doc(own[-1]) if own else None,
        events=[event_from_doc(e) for e in events],
    )
