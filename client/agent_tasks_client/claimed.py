"""`ClaimedTask`: a task this worker holds, carrying its fencing token into every later call.

The token is the attempt number the server handed out with the claim (`state.attempts`). A call with a
stale token (the lease lapsed and the task moved on) raises `LeaseLost` and changes nothing.

A `ClaimedTask` makes its calls through the client that claimed it, known here only by the operations it
uses (`TaskCalls`, which `AgentTasksClient` has), so this module sits below the client and imports none of
it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from agent_tasks_client.models import Event, TaskState


class TaskCalls(Protocol):
    """The calls a claimed task makes on the client that claimed it (`AgentTasksClient`'s methods)."""

    async def heartbeat(
        self,
        task_id: str,
        *,
        attempt: int | None = None,
        lease_seconds: int | None = None,
        percentage: float | None = None,
        current_step: str | None = None,
    ) -> TaskState: ...

    async def progress(
        self, task_id: str, percentage: float, *, current_step: str | None = None, attempt: int | None = None
    ) -> TaskState: ...

    async def complete(
        self,
        task_id: str,
        *,
        result: Any = None,
        output_references: Mapping[str, Any] | None = None,
        execution_time_seconds: float | None = None,
        attempt: int | None = None,
    ) -> TaskState: ...

    async def fail(
        self,
        task_id: str,
        error: str,
        *,
        details: str | None = None,
        final: bool = False,
        attempt: int | None = None,
        error_type: str | None = None,
        next_retry_delay: float | None = None,
    ) -> TaskState: ...

    async def record_tool_call(
        self,
        task_id: str,
        tool_name: str,
        tool_args: Mapping[str, Any] | None = None,
        *,
        correlation_id: str | None = None,
    ) -> Event: ...

    async def record_tool_result(
        self,
        task_id: str,
        tool_name: str,
        status: str,
        *,
        result: Any = None,
        error_message: str | None = None,
        correlation_id: str | None = None,
    ) -> Event: ...

    async def record_memory_operation(
        self, task_id: str, operation: str, key_or_query: str, status: str, *, message: str | None = None
    ) -> Event: ...


class ClaimedTask:
    """A claimed (started) task: `id`, `attempt` (the fencing token), `agent_name`, `lease_expires_at`,
    `input_parameters`, and the state as of the last call (`state`)."""

    def __init__(self, client: TaskCalls, state: TaskState, *, worker_id: str | None = None) -> None:
        self.client = client
        self.state = state
        self.id = state.id
        self.attempt = state.attempts
        self.agent_name = state.agent_name
        self.worker_id = worker_id
        #: True once `complete` or `fail` went through: the worker loop then leaves the task alone.
        self.finished = False

    def __repr__(self) -> str:
        return f"ClaimedTask(id={self.id!r}, attempt={self.attempt}, agent_name={self.agent_name!r})"

    @property
    def lease_expires_at(self) -> datetime | None:
        return self.state.lease_expires_at

    @property
    def input_parameters(self) -> dict[str, Any]:
        return self.state.input_parameters

    async def heartbeat(
        self,
        *,
        lease_seconds: int | None = None,
        percentage: float | None = None,
        current_step: str | None = None,
    ) -> TaskState:
        """Extend the lease (optionally reporting progress)."""
        self.state = await self.client.heartbeat(
            self.id,
            attempt=self.attempt,
            lease_seconds=lease_seconds,
            percentage=percentage,
            current_step=current_step,
        )
        return self.state

    async def progress(self, percentage: float, current_step: str | None = None) -> TaskState:
        """Report progress, 0–100, and what the agent is doing now."""
        self.state = await self.client.progress(
            self.id, percentage, current_step=current_step, attempt=self.attempt
        )
        return self.state

    async def complete(
        self,
        result: Any = None,
        *,
        output_references: Mapping[str, Any] | None = None,
        execution_time_seconds: float | None = None,
    ) -> TaskState:
        """Complete the task with its result."""
        self.state = await self.client.complete(
            self.id,
            result=result,
            output_references=output_references,
            execution_time_seconds=execution_time_seconds,
            attempt=self.attempt,
        )
        self.finished = True
        return self.state

    async def fail(
        self,
        error: str,
        details: str | None = None,
        *,
        final: bool = False,
        error_type: str | None = None,
        next_retry_delay: float | None = None,
    ) -> TaskState:
        """Record a failure: retrying after the retry policy's delay (or `next_retry_delay` seconds), or
        failed once attempts are used up or `error_type` is non-retryable; `final=True`: failed."""
        self.state = await self.client.fail(
            self.id,
            error,
            details=details,
            final=final,
            attempt=self.attempt,
            error_type=error_type,
            next_retry_delay=next_retry_delay,
        )
        self.finished = True
        return self.state

    async def record_tool_call(
        self, tool_name: str, tool_args: Mapping[str, Any] | None = None, *, correlation_id: str | None = None
    ) -> Event:
        return await self.client.record_tool_call(
            self.id, tool_name, tool_args, correlation_id=correlation_id
        )

    async def record_tool_result(
        self,
        tool_name: str,
        status: str,
        *,
        result: Any = None,
        error_message: str | None = None,
        correlation_id: str | None = None,
    ) -> Event:
        return await self.client.record_tool_result(
            self.id,
            tool_name,
            status,
            result=result,
            error_message=error_message,
            correlation_id=correlation_id,
        )

    async def record_memory_operation(
        self, operation: str, key_or_query: str, status: str, *, message: str | None = None
    ) -> Event:
        return await self.client.record_memory_operation(
            self.id, operation, key_or_query, status, message=message
        )
