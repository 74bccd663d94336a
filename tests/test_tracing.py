"""Tracing (issue 23 part 3): one trace from a workflow's creation, through the server's request,
GraphQL-operation and MongoDB spans, to the Python client's worker attempt and the handler's own spans and
tool calls; the `traceparent` stored with a task, given explicitly or taken from the creating request
(tracing on or off); what turns tracing on. Read with the SDK's in-memory exporter, the app in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agent_tasks_client import AgentTasksClient
from agent_tasks_client.claimed import ClaimedTask
from app import tracing
from app.server import create_app
from app.settings import Settings

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Traced:
    client: AgentTasksClient
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
async def traced(settings: Settings, db: Any) -> AsyncIterator[Traced]:
    """The app in-process with tracing on (every span kept in memory), and a client on it that traces
    with the same provider (as an agent runtime would with its own)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings.model_copy(update={"expiry_sweep_seconds": 3600}), tracer_provider=provider)
    async with app.router.lifespan_context(app):
        client = AgentTasksClient(
            "http://localhost/graphql", transport=httpx.ASGITransport(app=app), tracer_provider=provider
        )
        async with client:
            yield Traced(client, provider, exporter)


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next((s for s in spans if s.context.span_id == span.parent.span_id), None)


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[str]:
    out, current = [], parent_of(span, spans)
    while current is not None:
        out.append(current.name)
        current = parent_of(current, spans)
    return out


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, sorted({s.name for s in spans if not s.attributes.get("db.system.name")}))
    return found[0]


WORKFLOW = """mutation CreateTraced {
  createWorkflow(input: {id: "wf", state: {agentName: "planner"}, subTasks: [
    {id: "wf-s", state: {agentName: "planner"}, behaviorTasks: [{id: "wf-b", state: {agentName: "A"}}]}]}) {
    __typename
  }
}"""


async def test_one_trace_from_the_workflow_to_each_tool_call(traced: Traced) -> None:
    tracer = traced.provider.get_tracer("orchestrator")
    with tracer.start_as_current_span("orchestrate") as root:
        data = await traced.client.execute(WORKFLOW)
    assert data["createWorkflow"]["__typename"] == "MetaWorkflowTaskSuccess"
    trace_id = root.get_span_context().trace_id

    async def handle(task: ClaimedTask) -> dict[str, Any]:
        with traced.provider.get_tracer("agent").start_as_current_span("model call"):
            await task.record_tool_call("search", {"q": "x"})
        return {"ok": True}

    async with traced.client.worker("A", handle, poll_min=0.05) as worker:
        await worker.wait_idle()
    assert worker.stats.completed == 1

    spans = traced.spans()
    # The server's side of the creation: request -> operation -> MongoDB commands.
    create_op = one(spans, "mutation CreateTraced")
    request = parent_of(create_op, spans)
    assert request is not None and request.name == "POST /graphql"
    assert request.kind is SpanKind.SERVER and request.attributes["http.response.status_code"] == 200
    assert parent_of(request, spans).name == "orchestrate"  # the client's traceparent header
    inserts = [s for s in spans if parent_of(s, spans) is create_op and s.kind is SpanKind.CLIENT]
    assert {
        s.attributes["db.collection.name"] for s in inserts if s.attributes["db.operation.name"] == "insert"
    } >= {
        "meta_workflow_tasks",
        "agent_task_states",
        "task_events",
    }
    # Every task stored the creating operation's context, and the claim handed it back.
    attempt = one(spans, "task attempt")
    assert attempt.context.trace_id == trace_id
    assert parent_of(attempt, spans) is create_op
    assert attempt.attributes["agent_tasks.task_id"] == "wf-b"
    assert attempt.attributes["agent_tasks.status"] == "completed"
    # The handler's spans and the tool call nest under the attempt, and the server's under those.
    assert ancestors(one(spans, "model call"), spans)[:1] == ["task attempt"]
    tool = one(spans, "record tool call")
    assert ancestors(tool, spans)[:2] == ["model call", "task attempt"]
    assert tool.attributes["gen_ai.tool.name"] == "search"
    recorded = one(spans, "mutation RecordToolCall")
    assert ancestors(recorded, spans)[:4] == [
        "POST /graphql",
        "record tool call",
        "model call",
        "task attempt",
    ]
    completed = one(spans, "mutation CompleteTask")
    assert ancestors(completed, spans)[:2] == ["POST /graphql", "task attempt"]
    assert ancestors(attempt, spans)[-1] == "orchestrate"
    # One trace: the creation and everything done for the task share the orchestrator's trace id.
    in_trace = {s.name for s in spans if s.context.trace_id == trace_id}
    assert {
        "orchestrate",
        "mutation CreateTraced",
        "task attempt",
        "model call",
        "record tool call",
    } <= in_trace


async def test_traceparent_given_is_stored_and_handed_back_on_claim(traced: Traced, db: Any) -> None:
    created = await traced.client.execute(
        f'mutation {{ createAgentTask(input: {{id: "t1", agentName: "B", traceparent: "{TRACEPARENT}"}}) {{'
        " ... on AgentTaskSuccess { state { traceparent } } } }"
    )
    assert created["createAgentTask"]["state"]["traceparent"] == TRACEPARENT
    assert (await db.agent_task_states.find_one({"_id": "t1"}))["traceparent"] == TRACEPARENT
    task = await traced.client.claim("B")
    assert task is not None and task.state.traceparent == TRACEPARENT

    bad = await traced.client.execute(
        'mutation { createAgentTask(input: {id: "t2", agentName: "B", traceparent: "00-zz-11-01"}) {'
        " __typename ... on ValidationError { field message } } }"
    )
    assert bad["createAgentTask"]["__typename"] == "ValidationError"
    assert bad["createAgentTask"]["field"] == "input.traceparent"
    assert "W3C trace context" in bad["createAgentTask"]["message"]
    assert await db.agent_task_states.find_one({"_id": "t2"}) is None


async def test_with_tracing_off_the_header_is_stored(settings: Settings, db: Any) -> None:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        response = await http.post(
            "/graphql",
            json={"query": 'mutation { createAgentTask(input: {id: "h", agentName: "B"}) { __typename } }'},
            headers={"traceparent": TRACEPARENT},
        )
        assert response.json()["data"]["createAgentTask"]["__typename"] == "AgentTaskSuccess"
        await http.post(
            "/graphql",
            json={"query": 'mutation { createAgentTask(input: {id: "n", agentName: "B"}) { __typename } }'},
            headers={"traceparent": "not-a-traceparent"},
        )
    assert (await db.agent_task_states.find_one({"_id": "h"}))["traceparent"] == TRACEPARENT
    assert "traceparent" not in await db.agent_task_states.find_one({"_id": "n"})


def test_what_turns_tracing_on() -> None:
    assert not tracing.requested({})
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.requested({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.requested(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert tracing.configure({}) is None
    provider = tracing.configure({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "svc"})
    try:
        assert provider.resource.attributes["service.name"] == "svc"
    finally:
        provider.shutdown()
    with pytest.raises(ValueError, match="unknown exporter 'zipkin'"):
        tracing.configure({"OTEL_TRACES_EXPORTER": "zipkin"})
