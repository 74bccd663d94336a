"""`AgentTasksClient`: the agent-tasks GraphQL API as async Python methods, over one httpx connection pool.

Every mutation but `heartbeatTask` is sent with an idempotency key (a fresh uuid4 unless the caller gives
one), so a request whose answer was lost to the network is sent again safely (`retries` times, with
backoff): the server applies it once and answers the retry with the first answer. Refusals arrive as
typed exceptions (`errors.py`); `NothingToClaim` is not a refusal (`claim` returns None).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from agent_tasks_client import tracing
from agent_tasks_client.claimed import ClaimedTask
from agent_tasks_client.documents import (
    BULK_FIELDS,
    CLAIM_FIELDS,
    CLAIM_MANY_FIELDS,
    ERROR_FIELDS,
    RECORD_ERROR_FIELDS,
    STATE_FIELDS,
    WORKFLOW_TREE,
    operation,
    transition_fields,
)
from agent_tasks_client.errors import AgentTasksError, raise_for_member
from agent_tasks_client.models import (
    BulkResult,
    Event,
    EventPage,
    RetryPolicy,
    TaskState,
    Timeouts,
    format_time,
)
from agent_tasks_client.transport import Transport
from agent_tasks_client.watch import watch
from agent_tasks_client.worker import Handler, Worker

_T = TypeVar("_T")


class AgentTasksClient(Transport):
    """An async client for one agent-tasks server.

    `url` is the server (`http://127.0.0.1:8000`) or its GraphQL endpoint (`…/graphql`). Use it as an
    async context manager (`async with AgentTasksClient(url) as client:`), or call `aclose()`. The
    connection, `execute` and the `supports_*` probes are `Transport`'s (transport.py).
    """

    async def _steering_arg(self, value: _T | None, what: str) -> _T | None:
        """A steering argument; refused (ValueError) to a server from before retry policies."""
        if value is not None and not await self.supports_steering():
            raise ValueError(f"{what} needs a server with retry policies and delayed starts")
        return value

    async def _transition(
        self, field: str, arguments: Mapping[str, tuple[str, Any]], *, key: str | None = None
    ) -> dict[str, Any]:
        """Run a lifecycle mutation; the success member (or NothingToClaim), refusals raised."""
        lease = await self.supports_leases()
        selection = await self.fit_selection(
            CLAIM_FIELDS if field == "claimTask" else transition_fields(lease)
        )
        # A heartbeat is sent without a key unless given one: sending it twice only extends the lease
        # twice, and a key per heartbeat would keep a stored answer for a day for each one.
        key = key or (None if field == "heartbeatTask" else _key())
        args = {**arguments, "idempotencyKey": ("String", key)}
        document, variables = operation("mutation", field, args, selection)
        member = (await self.execute(document, variables))[field]
        raise_for_member(member)
        return member

    async def _state(
        self, field: str, arguments: Mapping[str, tuple[str, Any]], key: str | None
    ) -> TaskState:
        member = await self._transition(field, arguments, key=key)
        return TaskState.from_graphql(member["state"])

    async def _attempt(self, attempt: int | None) -> int | None:
        """The fencing token to send: none to a server without leases."""
        return await self._lease_arg(attempt)

    async def _lease_arg(self, value: _T | None) -> _T | None:
        """A lease or fencing argument, left out for a server from before leases (which refuses it)."""
        return value if value is not None and await self.supports_leases() else None

    # ------------------------------------------------------------------------------------------- creating

    async def create_workflow(
        self, input: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """`createWorkflow`: a meta task with its nested sub-tasks and behavior tasks (GraphQL input names,
        see `CreateMetaWorkflowTaskInput`), all or nothing. The created tree's ids:
        `{"id", "subTasks": [{"id", "behaviorTasks": [{"id"}]}]}`."""
        args = {
            "input": ("CreateMetaWorkflowTaskInput!", dict(input)),
            "idempotencyKey": ("String", idempotency_key or _key()),
        }
        tree = "id subTasks { id behaviorTasks { id } }"
        selection = f"{ERROR_FIELDS} ... on MetaWorkflowTaskSuccess {{ task {{ {tree} }} }}"
        document, variables = operation("mutation", "createWorkflow", args, selection)
        member = (await self.execute(document, variables))["createWorkflow"]
        raise_for_member(member)
        return dict(member["task"])

    async def create_agent_task(
        self,
        agent_name: str,
        *,
        name: str | None = None,
        description: str | None = None,
        input_parameters: Mapping[str, Any] | None = None,
        priority: str | None = None,
        max_attempts: int | None = None,
        dependencies: Sequence[Mapping[str, Any]] | None = None,
        parent_task_id: str | None = None,
        id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry_policy: RetryPolicy | None = None,
        not_before: datetime | None = None,
        timeouts: Timeouts | None = None,
        concurrency_key: str | None = None,
    ) -> TaskState:
        """`createAgentTask`: a standalone task for `agent_name`. `priority` is `low`, `medium`, `high`
        or `urgent` (a `TaskPriority`); `dependencies` are `{"taskId", "statusExpected"}` (a `TaskStatus`,
        either spelling); `retry_policy` how its failed attempts are retried; `not_before` a delayed
        start; `timeouts` its timeouts (refused, ValueError, to a server without them); `concurrency_key`
        the key a concurrency limit on KEY counts it under (a server with concurrency limits only);
        `extra` passes further `CreateAgentTaskInput` fields (GraphQL names) as they are."""
        policy = await self._steering_arg(retry_policy, "retry_policy")
        start = await self._steering_arg(not_before, "not_before")
        if timeouts is not None and not await self.supports_timeouts():
            raise ValueError("timeouts need a server with timeouts")
        fields = {
            "agentName": agent_name,
            "name": name,
            "description": description,
            "inputParameters": dict(input_parameters) if input_parameters is not None else None,
            "priority": priority.upper() if priority else None,
            "maxAttempts": max_attempts,
            "dependencies": [_dependency(d) for d in dependencies] if dependencies is not None else None,
            "parentTaskId": parent_task_id,
            "id": id,
            "retryPolicy": None if policy is None else policy.to_graphql(),
            "notBefore": None if start is None else format_time(start),
            **({} if timeouts is None else timeouts.to_graphql()),
            "concurrencyKey": concurrency_key,
            **dict(extra or {}),
        }
        args = {
            "input": ("CreateAgentTaskInput!", {k: v for k, v in fields.items() if v is not None}),
            "idempotencyKey": ("String", idempotency_key or _key()),
        }
        fields_ = await self._state_fields()
        selection = f"{ERROR_FIELDS} ... on AgentTaskSuccess {{ state {{ {fields_} }} }}"
        document, variables = operation("mutation", "createAgentTask", args, selection)
        member = (await self.execute(document, variables))["createAgentTask"]
        raise_for_member(member)
        return TaskState.from_graphql(member["state"])

    async def _state_fields(self) -> str:
        return await self.fit_selection(STATE_FIELDS)

    # ------------------------------------------------------------------------------------------- lifecycle

    async def claim(
        self,
        agent_name: str,
        *,
        workflow_id: str | None = None,
        task_kinds: Sequence[str] | None = None,
        lease_seconds: int | None = None,
        worker_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> ClaimedTask | None:
        """`claimTask`: start the agent's most urgent, oldest claimable task under a lease; None when there
        is nothing to claim. The `ClaimedTask` carries the fencing token (its attempt)."""
        member = await self._transition(
            "claimTask",
            {
                "agentName": ("String!", agent_name),
                "workflowId": ("ID", workflow_id),
                "taskKinds": ("[TaskKind!]", [k.upper() for k in task_kinds] if task_kinds else None),
                "leaseSeconds": ("Int", await self._lease_arg(lease_seconds)),
                "workerId": ("String", await self._lease_arg(worker_id)),
            },
            key=idempotency_key,
        )
        if member["__typename"] == "NothingToClaim":
            return None
        return ClaimedTask(self, TaskState.from_graphql(member["state"]), worker_id=worker_id)

    async def claim_many(
        self,
        agent_name: str,
        max_tasks: int,
        *,
        workflow_id: str | None = None,
        task_kinds: Sequence[str] | None = None,
        lease_seconds: int | None = None,
        worker_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[ClaimedTask]:
        """`claimTasks`: start up to `max_tasks` of the agent's claimable tasks at once, in claim order, each
        under its own lease; an empty list when there is nothing to claim. A server without `claimTasks`
        gets one `claimTask` instead (a list of at most one)."""
        if not await self.supports_batch_claims():
            one = await self.claim(
                agent_name,
                workflow_id=workflow_id,
                task_kinds=task_kinds,
                lease_seconds=lease_seconds,
                worker_id=worker_id,
                idempotency_key=idempotency_key,
            )
            return [] if one is None else [one]
        args = {
            "agentName": ("String!", agent_name),
            "max": ("Int!", max_tasks),
            "workflowId": ("ID", workflow_id),
            "taskKinds": ("[TaskKind!]", [k.upper() for k in task_kinds] if task_kinds else None),
            "leaseSeconds": ("Int", lease_seconds),
            "workerId": ("String", worker_id),
            "idempotencyKey": ("String", idempotency_key or _key()),
        }
        document, variables = operation(
            "mutation", "claimTasks", args, await self.fit_selection(CLAIM_MANY_FIELDS)
        )
        member = (await self.execute(document, variables))["claimTasks"]
        raise_for_member(member)
        return [
            ClaimedTask(self, TaskState.from_graphql(item["state"]), worker_id=worker_id)
            for item in member["claimed"]
        ]

    async def start(
        self,
        task_id: str,
        *,
        lease_seconds: int | None = None,
        worker_id: str | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> ClaimedTask:
        """`startTask`: start this pending or retrying task under a lease."""
        state = await self._state(
            "startTask",
            {
                "id": ("ID!", task_id),
                "leaseSeconds": ("Int", await self._lease_arg(lease_seconds)),
                "workerId": ("String", await self._lease_arg(worker_id)),
                "expectedVersion": ("Int", expected_version),
            },
            idempotency_key,
        )
        return ClaimedTask(self, state, worker_id=worker_id)

    async def heartbeat(
        self,
        task_id: str,
        *,
        attempt: int | None = None,
        lease_seconds: int | None = None,
        percentage: float | None = None,
        current_step: str | None = None,
        idempotency_key: str | None = None,
    ) -> TaskState:
        """`heartbeatTask`: extend the lease (and, with `percentage`/`current_step`, report progress)."""
        return await self._state(
            "heartbeatTask",
            {
                "id": ("ID!", task_id),
                "attempt": ("Int", await self._attempt(attempt)),
                "leaseSeconds": ("Int", lease_seconds),
                "percentage": ("Float", percentage),
                "currentStep": ("String", current_step),
            },
            idempotency_key,
        )

    async def progress(
        self,
        task_id: str,
        percentage: float,
        *,
        current_step: str | None = None,
        attempt: int | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> TaskState:
        """`reportProgress`: `percentage` 0–100 and what the agent is doing now."""
        return await self._state(
            "reportProgress",
            {
                "id": ("ID!", task_id),
                "percentage": ("Float!", percentage),
                "currentStep": ("String", current_step),
                "attempt": ("Int", await self._attempt(attempt)),
                "expectedVersion": ("Int", expected_version),
            },
            idempotency_key,
        )

    async def complete(
        self,
        task_id: str,
        *,
        result: Any = None,
        output_references: Mapping[str, Any] | None = None,
        execution_time_seconds: float | None = None,
        attempt: int | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> TaskState:
        """`completeTask` with its result (any JSON) and output references."""
        return await self._state(
            "completeTask",
            {
                "id": ("ID!", task_id),
                "result": ("JSON", result),
                "outputReferences": ("JSON", dict(output_references) if output_references else None),
                "executionTimeSeconds": ("Float", execution_time_seconds),
                "attempt": ("Int", await self._attempt(attempt)),
                "expectedVersion": ("Int", expected_version),
            },
            idempotency_key,
        )

    async def fail(
        self,
        task_id: str,
        error: str,
        *,
        details: str | None = None,
        final: bool = False,
        attempt: int | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        error_type: str | None = None,
        next_retry_delay: float | None = None,
    ) -> TaskState:
        """`failTask`: retrying after the task's retry policy's delay (or failed once attempts are used
        up); `final=True`: failed, no retry. `error_type` names the error (one of the policy's
        non-retryable types fails it for good); `next_retry_delay` (seconds) replaces the policy's delay,
        e.g. a model's Retry-After. Both are left out for a server from before retry policies."""
        steering = await self.supports_steering()
        return await self._state(
            "failTask",
            {
                "id": ("ID!", task_id),
                "error": ("String!", error),
                "details": ("String", details),
                "isFinal": ("Boolean!", final),
                "attempt": ("Int", await self._attempt(attempt)),
                "expectedVersion": ("Int", expected_version),
                "errorType": ("String", error_type if steering else None),
                "nextRetryDelay": ("Float", next_retry_delay if steering else None),
            },
            idempotency_key,
        )

    async def reschedule(
        self,
        task_id: str,
        not_before: datetime | None,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> TaskState:
        """`rescheduleTask`: a task not started yet is not claimed before `not_before` (None: at once)."""
        if not await self.supports_steering():
            raise ValueError("reschedule needs a server with retry policies and delayed starts")
        return await self._state(
            "rescheduleTask",
            {
                "id": ("ID!", task_id),
                "notBefore": ("DateTime", None if not_before is None else format_time(not_before)),
                "expectedVersion": ("Int", expected_version),
            },
            idempotency_key,
        )

    async def retry(
        self, task_id: str, *, expected_version: int | None = None, idempotency_key: str | None = None
    ) -> TaskState:
        """`retryTask`: a failed or cancelled task back to retrying."""
        return await self._state(
            "retryTask",
            {"id": ("ID!", task_id), "expectedVersion": ("Int", expected_version)},
            idempotency_key,
        )

    async def cancel(
        self,
        task_id: str,
        *,
        reason: str | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        subtree: bool = False,
    ) -> TaskState:
        """`cancelTask`: stop an unfinished task; `subtree=True`: and every unfinished task below it (a
        worker holding one of them learns it from its next heartbeat and cancels its handler)."""
        if subtree and not await self.supports_steering():
            raise ValueError("cancelling a subtree needs a server with cascading cancel")
        return await self._state(
            "cancelTask",
            {
                "id": ("ID!", task_id),
                "reason": ("String", reason),
                "expectedVersion": ("Int", expected_version),
                "scope": ("CancelScope", "SUBTREE" if subtree else None),
            },
            idempotency_key,
        )

    async def pause(
        self,
        task_id: str,
        *,
        reason: str | None = None,
        subtree: bool = False,
        expected_version: int | None = None,
    ) -> TaskState:
        """`pauseTask`: a task not started is paused (not claimable until resumed); a running one keeps
        running with `pause_requested` (a failure that would be retried pauses it). `subtree=True`: every
        task below it too. Pausing a paused task changes nothing."""
        return await self._pause("pauseTask", task_id, reason, subtree, expected_version)

    async def resume(
        self,
        task_id: str,
        *,
        reason: str | None = None,
        subtree: bool = False,
        expected_version: int | None = None,
    ) -> TaskState:
        """`resumeTask`: a paused task back to the status it was paused from (pending or awaiting by its
        dependencies now); a running one's pause request withdrawn. `subtree=True`: every task below it
        too. Resuming a task that is not paused changes nothing."""
        return await self._pause("resumeTask", task_id, reason, subtree, expected_version)

    async def _pause(
        self, field: str, task_id: str, reason: str | None, subtree: bool, expected_version: int | None
    ) -> TaskState:
        if not await self.supports_pause():
            raise ValueError(f"{field} needs a server with pause and resume")
        # No idempotency key: pausing a paused task (resuming a resumed one) writes nothing.
        lease = await self.supports_leases()
        args = {
            "id": ("ID!", task_id),
            "reason": ("String", reason),
            "scope": ("PauseScope", "SUBTREE" if subtree else None),
            "expectedVersion": ("Int", expected_version),
        }
        document, variables = operation(
            "mutation", field, args, await self.fit_selection(transition_fields(lease))
        )
        member = (await self.execute(document, variables))[field]
        raise_for_member(member)
        return TaskState.from_graphql(member["state"])

    async def retry_tasks(self, filter: Mapping[str, Any] | None = None, **options: Any) -> BulkResult:
        """`retryTasks`: retry the failed or cancelled tasks a filter matches (see `bulk`)."""
        return await self.bulk("retry", filter, **options)

    async def cancel_tasks(self, filter: Mapping[str, Any] | None = None, **options: Any) -> BulkResult:
        """`cancelTasks`: cancel the unfinished tasks a filter matches (see `bulk`)."""
        return await self.bulk("cancel", filter, **options)

    async def pause_tasks(self, filter: Mapping[str, Any] | None = None, **options: Any) -> BulkResult:
        """`pauseTasks`: pause the tasks a filter matches (see `bulk`)."""
        return await self.bulk("pause", filter, **options)

    async def resume_tasks(self, filter: Mapping[str, Any] | None = None, **options: Any) -> BulkResult:
        """`resumeTasks`: resume the tasks a filter matches (see `bulk`)."""
        return await self.bulk("resume", filter, **options)

    async def bulk(
        self,
        action: str,
        filter: Mapping[str, Any] | None = None,
        *,
        status: Sequence[str] | None = None,
        agent_name: str | None = None,
        workflow_id: str | None = None,
        parent_task_id: str | None = None,
        limit: int | None = None,
        reason: str | None = None,
    ) -> BulkResult:
        """A bulk action (`retry`, `cancel`, `pause`, `resume`) over the tasks `agentTasks` would list
        for this `filter` (a MongoDB-style filter over stored field names) and these arguments; at most
        `limit` (the server's BULK_ACTION_MAX_TASKS by default). Each task changes on its own; the
        answer counts them. A filter and arguments that select nothing are refused (`ValidationFailed`,
        `data["code"] == "EMPTY_FILTER"`)."""
        if action not in ("retry", "cancel", "pause", "resume"):
            raise ValueError(f"unknown bulk action {action!r}")
        if not await self.supports_pause():
            raise ValueError("bulk actions need a server with pause and resume")
        field = f"{action}Tasks"
        args: dict[str, tuple[str, Any]] = {
            "filter": ("JSON", dict(filter) if filter is not None else None),
            "status": ("[TaskStatus!]", [s.upper() for s in status] if status else None),
            "agentName": ("String", agent_name),
            "workflowId": ("ID", workflow_id),
            "parentTaskId": ("ID", parent_task_id),
            "limit": ("Int", limit),
        }
        if action != "retry":
            args["reason"] = ("String", reason)
        document, variables = operation("mutation", field, args, BULK_FIELDS)
        member = (await self.execute(document, variables))[field]
        raise_for_member(member)
        return BulkResult.from_graphql(member)

    # ------------------------------------------------------------------------------------------- reports

    async def record_tool_call(
        self,
        task_id: str,
        tool_name: str,
        tool_args: Mapping[str, Any] | None = None,
        *,
        agent_id: str | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Event:
        """`recordToolCall`: a TOOL_CALL event, recorded in a span `record tool call` (a child of the
        span in progress, e.g. the worker's task attempt)."""
        with tracing.span(
            self.tracer,
            "record tool call",
            kind="client",
            attributes={"agent_tasks.task_id": task_id, "gen_ai.tool.name": tool_name},
        ):
            return await self._record(
                "recordToolCall",
                {
                    "taskId": ("ID!", task_id),
                    "toolName": ("String!", tool_name),
                    "toolArgs": ("JSON", dict(tool_args) if tool_args is not None else None),
                    "agentId": ("String", agent_id),
                    "correlationId": ("String", correlation_id),
                },
                idempotency_key,
            )

    async def record_tool_result(
        self,
        task_id: str,
        tool_name: str,
        status: str,
        *,
        result: Any = None,
        error_message: str | None = None,
        agent_id: str | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Event:
        """`recordToolResult`: a TOOL_RESULT event; `status` is SUCCESS, FAILURE or ERROR."""
        return await self._record(
            "recordToolResult",
            {
                "taskId": ("ID!", task_id),
                "toolName": ("String!", tool_name),
                "status": ("String!", status),
                "result": ("JSON", result),
                "errorMessage": ("String", error_message),
                "agentId": ("String", agent_id),
                "correlationId": ("String", correlation_id),
            },
            idempotency_key,
        )

    async def record_memory_operation(
        self,
        task_id: str,
        operation: str,
        key_or_query: str,
        status: str,
        *,
        message: str | None = None,
        agent_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Event:
        """`recordMemoryOperation`: a MEMORY_OPERATION event; `status` is SUCCESS or FAILURE."""
        return await self._record(
            "recordMemoryOperation",
            {
                "taskId": ("ID!", task_id),
                "operation": ("String!", operation),
                "keyOrQuery": ("String!", key_or_query),
                "status": ("String!", status),
                "message": ("String", message),
                "agentId": ("String", agent_id),
            },
            idempotency_key,
        )

    async def _record(self, field: str, arguments: Mapping[str, tuple[str, Any]], key: str | None) -> Event:
        args = {**arguments, "idempotencyKey": ("String", key or _key())}
        selection = (
            f"{RECORD_ERROR_FIELDS} ... on RecordEventSuccess {{ event {{ {await self.event_fields()} }} }}"
        )
        document, variables = operation("mutation", field, args, selection)
        member = (await self.execute(document, variables))[field]
        raise_for_member(member)
        return Event.from_graphql(member["event"])

    # ------------------------------------------------------------------------------------------- reads

    async def get_task(self, task_id: str) -> TaskState | None:
        """`agentTask(id:)`: a task's state now; None for an unknown id."""
        document, variables = operation(
            "query", "agentTask", {"id": ("ID!", task_id)}, await self._state_fields()
        )
        data = (await self.execute(document, variables))["agentTask"]
        return None if data is None else TaskState.from_graphql(data)

    async def workflow_tree(self, workflow_id: str) -> dict[str, Any] | None:
        """The whole workflow tree in one request (`metaWorkflowTask(id:)` with its sub-tasks, behavior
        tasks, outputs, states and progress roll-up), as the server answered it; None for an unknown id."""
        data = await self.execute(WORKFLOW_TREE, {"id": workflow_id})
        tree = data["metaWorkflowTask"]
        return None if tree is None else dict(tree)

    async def events(
        self,
        *,
        workflow_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        types: Sequence[str] | None = None,
        after: str | None = None,
        first: int | None = None,
    ) -> EventPage:
        """One page of `taskEvents`, oldest first, after the cursor `after`."""
        selection = (
            "totalCount pageInfo { hasNextPage endCursor } "
            f"edges {{ node {{ {await self.event_fields()} }} }}"
        )
        document, variables = operation(
            "query",
            "taskEvents",
            {
                "taskId": ("ID", task_id),
                "workflowId": ("ID", workflow_id),
                "agentId": ("String", agent_id),
                "types": ("[EventType!]", list(types) if types is not None else None),
                "after": ("String", after),
                "first": ("Int", first),
            },
            selection,
        )
        data = (await self.execute(document, variables))["taskEvents"]
        return EventPage(
            events=[Event.from_graphql(edge["node"]) for edge in data["edges"]],
            end_cursor=data["pageInfo"]["endCursor"],
            has_next_page=data["pageInfo"]["hasNextPage"],
            total_count=data["totalCount"],
        )

    async def all_events(self, **filters: Any) -> list[Event]:
        """Every event matching the filters of `events` (page after page)."""
        found: list[Event] = []
        after = filters.pop("after", None)
        first = filters.pop("first", 100)  # the server's default maximum page size
        while True:
            page = await self.events(**filters, after=after, first=first)
            found.extend(page.events)
            if not page.has_next_page or page.end_cursor is None:
                return found
            after = page.end_cursor

    def watch_events(
        self,
        *,
        workflow_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        types: Sequence[str] | None = None,
        after: str | None = None,
        max_backoff: float = 5.0,
        on_reconnect: Callable[[int, BaseException | None], Awaitable[None] | None] | None = None,
    ) -> AsyncIterator[Event]:
        """Events as they happen (the `taskEvents` subscription over graphql-transport-ws): every stored
        event after `after` (all when None; `"HEAD"`: live ones only), then live ones. After a disconnect
        it reconnects with backoff (up to `max_backoff` seconds) and resumes after the last cursor it
        yielded: no duplicate, no gap. `on_reconnect(tries, error)` is called before each reconnection."""
        return watch(
            self,
            {"workflowId": workflow_id, "taskId": task_id, "agentId": agent_id, "types": types},
            after=after,
            max_backoff=max_backoff,
            on_reconnect=on_reconnect,
        )

    def worker(
        self,
        agent_name: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        lease_seconds: int | None = None,
        heartbeat_every: float | None = None,
        workflow_id: str | None = None,
        task_kinds: Sequence[str] | None = None,
        worker_id: str | None = None,
        poll_min: float = 0.1,
        poll_max: float = 2.0,
        grace_seconds: float = 10.0,
        wake_on_events: bool = False,
        claim_batch: int | None = None,
    ) -> Worker:
        """A worker loop over this client (see `Worker`): `async with client.worker("Agent", fn) as w:`."""
        return Worker(
            self,
            agent_name,
            handler,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            heartbeat_every=heartbeat_every,
            workflow_id=workflow_id,
            task_kinds=task_kinds,
            worker_id=worker_id,
            poll_min=poll_min,
            poll_max=poll_max,
            grace_seconds=grace_seconds,
            wake_on_events=wake_on_events,
            claim_batch=claim_batch,
        )


def _key() -> str:
    return str(uuid.uuid4())


def _dependency(dependency: Mapping[str, Any]) -> dict[str, Any]:
    """A dependency as `DependencyInput`, its `statusExpected` in GraphQL's spelling (`completed` or
    `TaskStatus.COMPLETED` -> `COMPLETED`)."""
    out = dict(dependency)
    if out.get("statusExpected") is not None:
        out["statusExpected"] = str(out["statusExpected"]).upper()
    return out


__all__ = ["AgentTasksClient", "AgentTasksError"]
