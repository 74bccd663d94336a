"""Memory a subscription keeps per event: none (graphql-core 3.3's per-event executor shares caches that
grow with every event; `app/api/execution.py` gives each event its own).

Counted, not timed: cache entries on the subscription's executor, and the live objects of graphql-core
types in a server running in this process while one WebSocket subscription receives hundreds of events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from graphql import build_schema, parse, subscribe
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from app.api.execution import EventScopedExecutor
from app.lifecycle.events import EventType, event_doc
from app.server import create_app
from app.settings import Settings
from app.store.events import append_events
from tests.support.wsclient import GraphQLWebSocket

SCHEMA = build_schema(
    """
    type Query { noop: String }
    type Item { name: String, tags: [String] }
    type Event { id: Int, item: Item }
    type Subscription { events: Event }
    """
)


async def _run_events(executor_class: type, count: int) -> list[Any]:
    """Run `count` events through one subscription; the executors built (the subscription's first)."""
    built: list[Any] = []

    class Recording(executor_class):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    async def source(*_: Any) -> AsyncIterator[dict[str, Any]]:
        for i in range(count):
            yield {"events": {"id": i, "item": {"name": "x", "tags": ["a"]}}}

    stream = subscribe(
        SCHEMA,
        parse("subscription { events { id item { name tags } } }"),
        subscribe_field_resolver=source,
        executor_class=Recording,
    )
    results = [result async for result in stream]  # type: ignore[union-attr]
    assert len(results) == count and not any(r.errors for r in results)
    return built


async def test_per_event_executors_do_not_grow_the_subscriptions_caches() -> None:
    # What graphql-core does (the reason for the override): two entries per event, kept for the
    # subscription's life. If this stops growing, graphql-core fixed it and app/api/execution.py can go.
    upstream = (await _run_events(StrawberryGraphQLCoreExecutionContext, 300))[0]
    assert len(upstream._relevant_sub_fields) == 600

    ours = (await _run_events(EventScopedExecutor, 300))[0]
    assert len(ours._relevant_sub_fields) == 0
    assert len(ours._stream_usages) == 0


def _graphql_objects() -> Counter[str]:
    """Live objects of graphql-core's types, by type name."""
    gc.collect()
    return Counter(
        type(o).__name__
        for o in gc.get_objects()
        if str(getattr(type(o), "__module__", "")).startswith("graphql.")
    )


@pytest.fixture
async def server_in_process(settings: Settings, db: Any) -> AsyncIterator[str]:
    """The app under uvicorn in this process (so its memory can be inspected); yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(600):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_a_long_subscription_keeps_nothing_per_event(server_in_process: str, db: Any) -> None:
    wid = f"wf_{uuid.uuid4().hex[:8]}"
    ws = await GraphQLWebSocket.open(server_in_process)
    query = """subscription($w: ID) { taskEvents(workflowId: $w, after: "HEAD") {
        cursor type taskId ... on ToolCallEvent { toolName toolArgs } } }"""
    await ws.subscribe(query, {"w": wid})
    now = dt.datetime.now(dt.UTC)

    async def deliver(count: int) -> None:
        for start in range(0, count, 50):
            batch = [
                event_doc(EventType.TOOL_CALL, "t", wid, "A", {"tool_name": f"x{i}", "tool_args": {}}, now)
                for i in range(start, start + 50)
            ]
            await append_events(db, None, batch)
            received = await ws.take(len(batch), wait=30)
            assert [r["taskEvents"]["toolName"] for r in received] == [
                e["payload"]["tool_name"] for e in batch
            ]

    await deliver(100)  # warm up: parser and validation caches, the first executor
    before = _graphql_objects()
    await deliver(500)
    grown = {name: n - before[name] for name, n in _graphql_objects().items() if n - before[name] > 20}
    # With graphql-core's shared caches: +500 FieldDetails, CollectedFields… (one set per event).
    assert grown == {}
    await ws.close()
