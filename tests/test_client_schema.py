"""The Python client kept in step with schema/schema.graphql: its enums name exactly the schema's values,
and every GraphQL document it sends (each method called with every argument it can pass, against the app
in-process, plus the event subscription and the fixed documents) validates against the SDL, with its
variables coerced by the SDL's types (so an enum value the client spells is one the schema has)."""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
import pytest
from graphql import (
    FieldNode,
    GraphQLEnumType,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    parse,
    validate,
)
from graphql.execution.values import get_variable_values

from agent_tasks_client import (
    AgentTasksClient,
    ErrorCode,
    EventType,
    RetryPolicy,
    TaskKind,
    TaskPriority,
    TaskStatus,
    Timeouts,
)
from agent_tasks_client.documents import EVENT_FIELDS, WORKFLOW_TREE
from agent_tasks_client.watch import subscription
from app.server import create_app
from app.settings import Settings
from tests.support.servers import ROOT

SCHEMA: GraphQLSchema = build_schema((ROOT / "schema" / "schema.graphql").read_text())


def problems(document: str, variables: dict[str, Any]) -> list[str]:
    """What the SDL finds wrong with a document and its variables (nothing: [])."""
    errors = validate(SCHEMA, parse(document))
    if errors:
        return [e.message for e in errors]
    (operation,) = [d for d in parse(document).definitions if isinstance(d, OperationDefinitionNode)]
    coerced = get_variable_values(SCHEMA, operation.variable_definitions or (), variables)
    return [e.message for e in coerced] if isinstance(coerced, list) else []


@pytest.mark.parametrize(
    ("enum", "name"),
    [
        (TaskStatus, "TaskStatus"),
        (TaskKind, "TaskKind"),
        (TaskPriority, "TaskPriority"),
        (EventType, "EventType"),
        (ErrorCode, "ErrorCode"),
    ],
)
def test_the_client_enums_are_the_schema_enums(enum: type[StrEnum], name: str) -> None:
    schema_enum = SCHEMA.get_type(name)
    assert isinstance(schema_enum, GraphQLEnumType)
    assert [m.name for m in enum] == list(schema_enum.values)  # the same values, in the schema's order


def test_enum_values_read_in_either_spelling_and_unknown_ones_are_kept() -> None:
    assert TaskStatus.parse("IN_PROGRESS") is TaskStatus.IN_PROGRESS
    assert TaskStatus.parse("in_progress") is TaskStatus.IN_PROGRESS
    assert TaskStatus.parse("ARCHIVED") == "archived"  # a newer server's status: still readable
    assert EventType.parse("TASK_COMPLETED") is EventType.TASK_COMPLETED
    assert EventType.parse("TASK_ARCHIVED") == "TASK_ARCHIVED"
    assert TaskStatus.parse(None) is None


def test_the_fixed_documents_and_the_subscription_validate() -> None:
    assert problems(WORKFLOW_TREE, {"id": "meta_1"}) == []
    document, variables = subscription(
        {"taskId": "t", "workflowId": "w", "agentId": "a", "types": list(EventType)}, "0-1", EVENT_FIELDS
    )
    assert set(variables) == {"taskId", "workflowId", "agentId", "types", "after"}
    assert problems(document, variables) == []


def root_field(document: str) -> str:
    (operation,) = [d for d in parse(document).definitions if isinstance(d, OperationDefinitionNode)]
    first = operation.selection_set.selections[0]
    assert isinstance(first, FieldNode)
    return first.name.value


@dataclass
class Recorder(httpx.AsyncBaseTransport):
    """Passes every request to the app and keeps its GraphQL body (the app answers: nothing is faked)."""

    app: httpx.AsyncBaseTransport
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(json.loads(request.content))
        return await self.app.handle_async_request(request)


@pytest.fixture
async def recorded(settings: Settings, db: Any) -> AsyncIterator[tuple[AgentTasksClient, Recorder]]:
    app = create_app(settings)
    recorder = Recorder(httpx.ASGITransport(app=app))
    async with (
        app.router.lifespan_context(app),
        AgentTasksClient("http://localhost/graphql", transport=recorder) as client,
    ):
        yield client, recorder


async def test_every_document_the_client_sends_validates(recorded: tuple[AgentTasksClient, Recorder]) -> None:
    client, recorder = recorded
    name, other = f"Schema-{uuid.uuid4().hex[:8]}", f"Schema-{uuid.uuid4().hex[:8]}"
    wf = f"meta_{uuid.uuid4().hex[:8]}"
    soon = datetime.now(UTC) + timedelta(hours=1)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {}

    # Each method with every argument it sends (an argument left at None is left out of the document).
    calls["create_workflow"] = lambda: client.create_workflow(
        {"id": wf, "state": {"agentName": name}, "subTasks": []}, idempotency_key=f"k-{wf}"
    )
    await calls["create_workflow"]()
    first = await client.create_agent_task(
        name,
        name="first",
        description="d",
        input_parameters={"n": 1},
        priority=TaskPriority.HIGH,
        max_attempts=3,
        parent_task_id=wf,
        id=f"t-{uuid.uuid4().hex[:8]}",
        extra={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        idempotency_key=f"k-{uuid.uuid4().hex}",
        retry_policy=RetryPolicy(
            initial_interval=1,
            backoff_coefficient=2,
            maximum_interval=10,
            maximum_attempts=3,
            non_retryable_error_types=["Fatal"],
            jitter=0.1,
        ),
        timeouts=Timeouts(3600, 3600, 7200),
        concurrency_key="key",
    )
    calls["create_agent_task"] = lambda: client.create_agent_task(
        name, dependencies=[{"taskId": first.id, "statusExpected": TaskStatus.COMPLETED}], not_before=soon
    )
    waiting = await calls["create_agent_task"]()
    kinds = [TaskKind.STANDALONE, TaskKind.SUB_TASK]
    claim = dict(workflow_id=wf, task_kinds=kinds, lease_seconds=30, worker_id="w", idempotency_key=None)
    calls["claim"] = lambda: client.claim(f"{name}-none", **claim)
    assert await calls["claim"]() is None  # every argument sent; nothing of that agent to claim
    task = await client.claim(name, lease_seconds=30)
    assert task is not None and task.id == first.id
    calls["heartbeat"] = lambda: client.heartbeat(
        first.id, attempt=task.attempt, lease_seconds=30, percentage=5, current_step="s", idempotency_key="hb"
    )
    state = await calls["heartbeat"]()
    calls["progress"] = lambda: client.progress(
        first.id, 10, current_step="s", attempt=task.attempt, expected_version=state.version
    )
    state = await calls["progress"]()
    calls["record_tool_call"] = lambda: client.record_tool_call(
        first.id, "tool", {"a": 1}, agent_id=name, correlation_id="c", idempotency_key=None
    )
    calls["record_tool_result"] = lambda: client.record_tool_result(
        first.id, "tool", "SUCCESS", result={"r": 1}, error_message="e", agent_id=name, correlation_id="c"
    )
    calls["record_memory_operation"] = lambda: client.record_memory_operation(
        first.id, "read", "key", "SUCCESS", message="m", agent_id=name
    )
    for method in ("record_tool_call", "record_tool_result", "record_memory_operation"):
        await calls[method]()
    calls["complete"] = lambda: client.complete(
        first.id,
        result={"ok": True},
        output_references={"o": "s3://x"},
        execution_time_seconds=1.5,
        attempt=task.attempt,
        expected_version=state.version,
    )
    await calls["complete"]()

    for _ in range(2):
        await client.create_agent_task(other)
    calls["claim_many"] = lambda: client.claim_many(f"{other}-none", 2, **claim)
    assert await calls["claim_many"]() == []
    many = await client.claim_many(other, 2, lease_seconds=30, worker_id="w")
    assert len(many) == 2
    calls["fail"] = lambda: client.fail(
        many[0].id,
        "boom",
        details="d",
        final=True,
        attempt=many[0].attempt,
        expected_version=many[0].state.version,
        error_type="Fatal",
        next_retry_delay=1,
    )
    await calls["fail"]()
    later = await client.create_agent_task(other)
    calls["reschedule"] = lambda: client.reschedule(later.id, soon, expected_version=later.version)
    rescheduled = await calls["reschedule"]()
    calls["cancel"] = lambda: client.cancel(
        later.id, reason="r", expected_version=rescheduled.version, subtree=True, idempotency_key=None
    )
    cancelled = await calls["cancel"]()
    calls["retry"] = lambda: client.retry(later.id, expected_version=cancelled.version, idempotency_key="r")
    assert (await calls["retry"]()).status == TaskStatus.RETRYING
    now = await client.get_task(waiting.id)  # its dependency completed since
    assert now is not None
    calls["pause"] = lambda: client.pause(waiting.id, reason="r", subtree=True, expected_version=now.version)
    paused = await calls["pause"]()
    calls["resume"] = lambda: client.resume(
        waiting.id, reason="r", subtree=True, expected_version=paused.version
    )
    await calls["resume"]()
    fresh = await client.create_agent_task(other)
    calls["start"] = lambda: client.start(
        fresh.id, lease_seconds=30, worker_id="w", expected_version=fresh.version, idempotency_key=None
    )
    await calls["start"]()

    bulk = dict(
        status=[TaskStatus.PENDING, TaskStatus.CANCELLED],
        agent_name=other,
        workflow_id=wf,
        parent_task_id=wf,
        limit=10,
    )
    calls["retry_tasks"] = lambda: client.retry_tasks({"agent_name": other}, **bulk)
    calls["cancel_tasks"] = lambda: client.cancel_tasks({"agent_name": other}, reason="r", **bulk)
    calls["pause_tasks"] = lambda: client.pause_tasks({"agent_name": other}, reason="r", **bulk)
    calls["resume_tasks"] = lambda: client.resume_tasks({"agent_name": other}, reason="r", **bulk)
    calls["bulk"] = lambda: client.bulk("cancel", None, reason="r", **bulk)
    for method in ("retry_tasks", "cancel_tasks", "pause_tasks", "resume_tasks", "bulk"):
        assert (await calls[method]()).matched == 0  # nothing of `other` is under the workflow

    calls["get_task"] = lambda: client.get_task(first.id)
    calls["workflow_tree"] = lambda: client.workflow_tree(wf)
    events = dict(workflow_id=wf, task_id=first.id, agent_id=name, types=list(EventType), after=None)
    calls["events"] = lambda: client.events(**events, first=5)
    calls["all_events"] = lambda: client.all_events(**events)
    for method in ("get_task", "workflow_tree", "events", "all_events"):
        await calls[method]()

    # Every coroutine method of the client was called (a new one must be added above).
    methods = {
        n
        for n, f in vars(AgentTasksClient).items()
        if not n.startswith("_") and inspect.iscoroutinefunction(f)
    }
    assert set(calls) == methods

    invalid = [
        (b["query"], errors) for b in recorder.sent if (errors := problems(b["query"], b["variables"]))
    ]
    assert invalid == []
    roots = {root_field(body["query"]) for body in recorder.sent}
    assert {
        "createWorkflow",
        "createAgentTask",
        "claimTask",
        "claimTasks",
        "startTask",
        "heartbeatTask",
        "reportProgress",
        "completeTask",
        "failTask",
        "rescheduleTask",
        "retryTask",
        "cancelTask",
        "pauseTask",
        "resumeTask",
        "retryTasks",
        "cancelTasks",
        "pauseTasks",
        "resumeTasks",
        "recordToolCall",
        "recordToolResult",
        "recordMemoryOperation",
        "agentTask",
        "metaWorkflowTask",
        "taskEvents",
    } <= roots
