"""Event mutations: what agents report while they work on a task — tool calls, tool results and memory
operations (seed 003). Thin: each passes its arguments to the `Recorder` service and returns the event;
`capture` turns refusals into the error types of the result union."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from app.api.results import ForbiddenError, NotFoundError, ValidationError, capture
from app.api.types.events import TaskEvent, event_from_doc
from app.lifecycle.recording import Recorder


@strawberry.type(description="The event was recorded (or, for a repeated idempotency key, had been).")
class RecordEventSuccess:
    event: TaskEvent = strawberry.field(description="The recorded event.")


RecordEventResult = Annotated[
    RecordEventSuccess | NotFoundError | ValidationError | ForbiddenError,
    strawberry.union("RecordEventResult", description="Outcome of a record* mutation."),
]

TaskId = Annotated[strawberry.ID, strawberry.argument(description="Id of the task the report is about.")]
ToolName = Annotated[str, strawberry.argument(description="Name of the tool (1–200 characters).")]
AgentId = Annotated[
    str | None,
    strawberry.argument(description="The agent reporting; default: the agent of the task's state."),
]
CorrelationId = Annotated[
    str | None,
    strawberry.argument(description="Links a TOOL_CALL, its TOOL_RESULT and the originating request."),
]
IdempotencyKey = Annotated[
    str | None,
    strawberry.argument(
        description="A retried request with the same key returns the first event, recording nothing twice."
    ),
]


def _recorder(info: strawberry.Info) -> Recorder:
    # The app's lifecycle service owns the database handle and the clock; a Recorder is a cheap view on it.
    return Recorder(info.context.app.lifecycle)


async def _recorded(work: Awaitable[dict[str, Any]]) -> RecordEventSuccess:
    return RecordEventSuccess(event=event_from_doc(await work))


async def _outcome(work: Awaitable[dict[str, Any]]) -> RecordEventSuccess | NotFoundError | ValidationError:
    # The recorder refuses only with NotFound and Invalid, never what becomes a Transition- or
    # ConflictError, which `capture`'s type allows for.
    return await capture(_recorded(work))  # type: ignore[return-value]


@strawberry.type(description="Reporting what agents do while they work on a task.")
class EventMutation:
    @strawberry.mutation(description="Record that an agent invoked a tool (a TOOL_CALL event).")
    async def record_tool_call(
        self,
        info: strawberry.Info,
        task_id: TaskId,
        tool_name: ToolName,
        # Defaults to null, not `{}`: graphql-core (like graphql-js) cannot turn an object default of a custom
        # scalar into a literal, so `__InputValue.defaultValue` failed and no client could introspect the
        # schema (tests/test_introspection.py). The recorder stores {} for null.
        tool_args: Annotated[
            JSON | None,
            strawberry.argument(
                description="Arguments passed to the tool (an object, at most 64 KiB); omitted or null: {}."
            ),
        ] = None,
        agent_id: AgentId = None,
        correlation_id: CorrelationId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> RecordEventResult:
        return await _outcome(
            _recorder(info).tool_call(
                task_id,
                tool_name,
                tool_args,
                agent_id=agent_id,
                correlation_id=correlation_id,
                idempotency_key=idempotency_key,
            )
        )

    @strawberry.mutation(description="Record the outcome of a tool execution (a TOOL_RESULT event).")
    async def record_tool_result(
        self,
        info: strawberry.Info,
        task_id: TaskId,
        tool_name: ToolName,
        status: Annotated[
            str, strawberry.argument(description="SUCCESS, FAILURE or ERROR (any case; stored upper-case).")
        ],
        result: Annotated[
            JSON | None, strawberry.argument(description="The tool's result data (JSON, at most 64 KiB).")
        ] = None,
        error_message: Annotated[
            str | None, strawberry.argument(description="What went wrong, if the tool failed.")
        ] = None,
        agent_id: AgentId = None,
        correlation_id: CorrelationId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> RecordEventResult:
        return await _outcome(
            _recorder(info).tool_result(
                task_id,
                tool_name,
                status,
                result,
                error_message=error_message,
                agent_id=agent_id,
                correlation_id=correlation_id,
                idempotency_key=idempotency_key,
            )
        )

    @strawberry.mutation(
        description="Record an operation on agent or system memory (a MEMORY_OPERATION event)."
    )
    async def record_memory_operation(
        self,
        info: strawberry.Info,
        task_id: TaskId,
        operation: Annotated[
            str, strawberry.argument(description="Kind of operation: set, get, delete, query… (1–200 chars).")
        ],
        key_or_query: Annotated[
            str, strawberry.argument(description="The key accessed or the query used (1–2000 characters).")
        ],
        status: Annotated[
            str, strawberry.argument(description="SUCCESS or FAILURE (any case; stored upper-case).")
        ],
        message: Annotated[
            str | None, strawberry.argument(description="Optional details or error message.")
        ] = None,
        agent_id: AgentId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> RecordEventResult:
        return await _outcome(
            _recorder(info).memory_operation(
                task_id,
                operation,
                key_or_query,
                status,
                message=message,
                agent_id=agent_id,
                idempotency_key=idempotency_key,
            )
        )
