"""Mutation results as data: the `Error` interface, its concrete error types, and the success payloads.

Expected failures never become GraphQL errors: a mutation answers one member of its result union, so a
client can `switch` on `__typename` and read `message` (plus the specific fields) of any error.

`capture` is the one place a service refusal becomes data (every mutation resolver is `return await
capture(<service call>)`), and `graphql_path` the one place a service's field path (domain, snake_case:
`input.sub_tasks[0].task_id`) becomes GraphQL's naming (`input.subTasks[0].taskId`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import strawberry
from strawberry.scalars import JSON
from strawberry.types.base import StrawberryObjectDefinition

from app.api import inputs
from app.api.types.convert import from_doc
from app.api.types.enums import ErrorCode, TaskStatus
from app.api.types.events import TaskEvent, event_from_doc
from app.api.types.tasks import AgentTaskState
from app.domain import Status, parse_status
from app.lifecycle.errors import Conflict, Invalid, LeaseLost, NotFound, NotYourAgent, Refused, ServiceError

S = TypeVar("S")


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
    description="The caller no longer holds the task: its `attempt` (fencing token) is not the task's"
    " current attempt in progress, or its lease ran out. Nothing was written."
)
class LeaseLostError(Error):
    current_attempt: int = strawberry.field(description="The task's attempt now (the current token).")
    current_holder: str | None = strawberry.field(
        description="Who holds the task's lease now (null when nobody does)."
    )
    # Nullable like TransitionError's, so one query can select `currentStatus` on both without an alias
    # (GraphQL refuses same-named fields of different types in one selection).
    current_status: TaskStatus | None = strawberry.field(description="The task's status now (always set).")
    cancel_requested: bool = strawberry.field(
        default=False,
        description="The task was cancelled (alone or with its subtree): the holder should stop its work.",
    )


@strawberry.type(
    description="The task changed since it was read (`expectedVersion` is stale), or a rule refused."
)
class ConflictError(Error):
    current_version: int | None = strawberry.field(description="The task's version now, when known.")


@strawberry.type(description="An argument is invalid.")
class ValidationError(Error):
    field: str = strawberry.field(description="The input field at fault (a dotted path).")
    code: ErrorCode | None = strawberry.field(
        default=None,
        description="Why, when a client acts on it: IDEMPOTENCY_KEY_REUSED (the key was sent before with"
        " other arguments: use a new key), BAD_FILTER or FILTER_TOO_SLOW (`purgeTasks` and the bulk actions:"
        " the filter is not allowed, or MongoDB stopped it at FILTER_MAX_TIME_MS), EMPTY_FILTER or"
        " LIMIT_EXCEEDED (a bulk action's empty filter, or `limit` out of range).",
    )


@strawberry.type(
    description="The caller is bound to agents (an agent-bound API key or token) and the task belongs to"
    " another agent, or to none. Nothing was written."
)
class ForbiddenError(Error):
    agent_name: str | None = strawberry.field(description="The agent the task belongs to (null: none).")
    code: ErrorCode = strawberry.field(default=ErrorCode.FORBIDDEN, description="Always FORBIDDEN.")


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


@strawberry.type(description="The tasks a claimTasks call started, in claim order (priority, then age).")
class ClaimTasksSuccess:
    claimed: list[TaskTransitionSuccess] = strawberry.field(
        description="One per task started, each with its state (its attempt is the fencing token) and events;"
        " empty when there was nothing to claim, fewer than max when the queue ran dry."
    )
    reason: str | None = strawberry.field(
        description="Why nothing was handed out, when `claimed` is empty; null otherwise (not `message`,"
        " which every Error has as String!: one selection can ask for both)."
    )


#: What a service refusal becomes (`error_from`); every mutation's result union holds these (or some).
ErrorResult = NotFoundError | ValidationError | TransitionError | ConflictError | ForbiddenError


def error_from(exc: ServiceError) -> ErrorResult:
    """The GraphQL error type for a service refusal."""
    if isinstance(exc, NotYourAgent):
        return ForbiddenError(message=exc.message, agent_name=exc.agent_name)
    if isinstance(exc, NotFound):
        return NotFoundError(message=exc.message, id=None if exc.id is None else strawberry.ID(exc.id))
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
        return ValidationError(message=exc.message, field=graphql_path(exc.field), code=exc.code)
    # Every ServiceError is one of the above; an interface instance could not be answered in a union.
    raise TypeError(f"unexpected service error {type(exc).__name__}") from exc  # pragma: no cover


def _status_or_pending(value: str | None) -> TaskStatus:
    # Fencing refuses documents of other programs too, whose status may be one this server does not know.
    return parse_status(value) or TaskStatus.PENDING


async def capture(work: Awaitable[S]) -> S | ErrorResult:
    """`work`'s answer, or the error type of the service refusal it raised: the refusal-as-data step of
    every mutation, so resolvers stay one line (the idea of dagster-graphql's `capture_error`)."""
    try:
        return await work
    except ServiceError as exc:
        return error_from(exc)


async def capture_fenced(work: Awaitable[S]) -> S | ErrorResult | LeaseLostError:
    """`capture` for the lifecycle changes whose union also holds `LeaseLostError` (a stale fencing token
    or a lapsed lease); elsewhere such a refusal would read as the `TransitionError` it specialises."""
    try:
        return await work
    except LeaseLost as exc:
        return LeaseLostError(
            message=exc.message,
            current_attempt=exc.current_attempt,
            current_holder=exc.current_holder,
            current_status=_status_or_pending(exc.current_status),
            cancel_requested=exc.current_status == Status.CANCELLED,
        )
    except ServiceError as exc:
        return error_from(exc)


_SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
_SEGMENT = re.compile(r"(?P<name>[^\[]*)(?P<indexes>(?:\[\d+\])*)")


def graphql_path(path: str) -> str:
    """A service's field path in GraphQL's naming: `input.sub_tasks[0].task_id` → `input.subTasks[0].taskId`.

    Idempotent: camelCase names (no underscore) and list indexes are left as they are, so a path already
    in GraphQL's terms comes back unchanged. The keys inside a JSON value are the client's own and are
    never renamed (`input.metaWorkflowGraph.my_key`). The one place service paths become GraphQL paths.
    """
    out: list[str] = []
    for n, part in enumerate(path.split(".")):
        match = _SEGMENT.fullmatch(part)
        if match is None:  # not a name with indexes: leave this and the rest as they are
            return ".".join([*out, *path.split(".")[n:]])
        name = match["name"]
        out.append(_camel(name) + match["indexes"])
        if name in _json_fields():  # below it, the client's own keys
            return ".".join([*out, *path.split(".")[n + 1 :]])
    return ".".join(out)


def _camel(name: str) -> str:
    if not _SNAKE.fullmatch(name):
        return name
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


@functools.cache
def _json_fields() -> frozenset[str]:
    """Names (both spellings) of the input fields that hold a JSON value, read from the input types."""
    names: set[str] = set()
    for value in vars(inputs).values():
        definition = getattr(value, "__strawberry_definition__", None)
        if not isinstance(definition, StrawberryObjectDefinition) or not definition.is_input:
            continue
        for field in definition.fields:
            if getattr(field.type, "of_type", field.type) is JSON:
                names |= {field.python_name, field.graphql_name or _camel(field.python_name)}
    return frozenset(names)


def transition_success(
    state: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
) -> TaskTransitionSuccess:
    """The success payload: the main event is the last one about the task itself."""
    own = [e for e in events if e.get("task_id") == state["_id"]]
    return TaskTransitionSuccess(
        state=from_doc(AgentTaskState, AgentTaskState.spec, state),
        event=event_from_doc(own[-1]) if own else None,
        events=[event_from_doc(e) for e in events],
    )
