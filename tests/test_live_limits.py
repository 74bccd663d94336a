"""Bounds on live connections, over real WebSockets and SSE against real server processes: connections per
process, operations per connection (both WebSocket protocols), subscriber buffers in bytes, and replay
length. Every refusal names its limit and the limit's value."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from websockets.exceptions import ConnectionClosed

from app.lifecycle.events import EventType, event_doc
from app.store.events import append_events
from tests.support.graphql import (
    EVENTS,
    LIVE,
    create_workflow,
    gql,
    live_env,
    subscribers,
    wait_for_subscribers,
)
from tests.support.servers import ServerGroup, ServerProcess, serve
from tests.support.wsclient import GraphQLWebSocket

SSE = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module")
def db_name() -> str:
    return f"limits_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def limited(module_servers: ServerGroup, db_name: str) -> ServerProcess:
    limits = {
        "MAX_SUBSCRIPTIONS_PER_CONNECTION": "2",
        "SUBSCRIPTION_QUEUE_BYTES": "65536",
        "SUBSCRIPTION_REPLAY_MAX": "5",
    }
    return module_servers.start("limits", LIVE | limits, db_name=db_name)


async def _refused_websocket(url: str, protocol: str = "graphql-transport-ws") -> ConnectionClosed:
    ws = await GraphQLWebSocket.open(url, protocol=protocol, init=False)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.receive(wait=10)
    return closed.value


async def test_connections_over_the_cap_are_refused_naming_it(mongo_uri: str, db_name: str) -> None:
    with serve(live_env(mongo_uri, db_name, WS_MAX_CONNECTIONS="2")) as server:
        first = await GraphQLWebSocket.open(server.url)
        second = await GraphQLWebSocket.open(server.url, protocol="graphql-ws")
        reason = "this server holds WS_MAX_CONNECTIONS=2 live connections already; retry later"
        for protocol in ("graphql-transport-ws", "graphql-ws"):
            refused = await _refused_websocket(server.url, protocol)
            assert refused.rcvd is not None
            assert (refused.rcvd.code, refused.rcvd.reason) == (1013, reason)
        # An SSE stream counts too: refused with 503, in GraphQL's error shape.
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            answer = await http.post("/graphql", json={"query": EVENTS, "variables": {}}, headers=SSE)
            assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
            assert answer.json() == {
                "errors": [{"message": reason, "extensions": {"code": "CONNECTION_LIMIT_EXCEEDED"}}]
            }
            # Plain requests are not live connections: still served.
            assert (await http.post("/graphql", json={"query": "{ __typename }"})).json() == {
                "data": {"__typename": "Query"}
            }
        # The ones held keep working; once one closes, a new connection is accepted.
        await first.subscribe(EVENTS, {"after": "HEAD"})
        await wait_for_subscribers(server.url, 1)
        await second.close()
        for _ in range(600):  # 60 s
            try:
                third = await GraphQLWebSocket.open(server.url)
                break
            except (AssertionError, ConnectionClosed):
                await asyncio.sleep(0.1)  # the server is still closing the second one
        else:
            raise AssertionError("no connection accepted after one closed")
        await third.subscribe(EVENTS, {"after": "HEAD"})
        await wait_for_subscribers(server.url, 2)
        await third.close()
        await first.close()
        await wait_for_subscribers(server.url, 0)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_operations_over_the_cap_are_refused_naming_it(limited: ServerProcess, protocol: str) -> None:
    ws = await GraphQLWebSocket.open(limited.url, protocol=protocol)
    await ws.subscribe(EVENTS, {"after": "HEAD"})
    await ws.subscribe(EVENTS, {"after": "HEAD"})
    await wait_for_subscribers(limited.url, 2)
    third = await ws.subscribe(EVENTS, {"after": "HEAD"})
    refused = await ws.receive(wait=10)
    error = {
        "message": "this connection already runs 2 operations, the most one connection may"
        " (MAX_SUBSCRIPTIONS_PER_CONNECTION=2); complete one first, or open another connection",
        "extensions": {"code": "SUBSCRIPTION_LIMIT_EXCEEDED"},
    }
    payload = [error] if protocol == "graphql-transport-ws" else error
    assert refused == {"id": third, "type": "error", "payload": payload}
    assert await subscribers(limited.url) == 2
    # Completing one frees its place.
    await ws.send({"id": "1", "type": "complete" if protocol == "graphql-transport-ws" else "stop"})
    await wait_for_subscribers(limited.url, 1)
    await ws.subscribe(EVENTS, {"after": "HEAD"})
    await wait_for_subscribers(limited.url, 2)
    await ws.close()
    await wait_for_subscribers(limited.url, 0)


async def test_a_subscriber_over_its_bytes_budget_is_ended_naming_it(
    limited: ServerProcess, mongo_uri: str, db_name: str
) -> None:
    wid = f"wf_{uuid.uuid4().hex[:8]}"
    # A client that never reads, with tiny receive buffers: the server's sends back up, then its buffer.
    ws = await GraphQLWebSocket.open(limited.url, max_queue=1, max_size=2**24)
    ws.ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await ws.subscribe(EVENTS, {"w": wid, "after": "HEAD"})
    await wait_for_subscribers(limited.url, 1)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    now = __import__("datetime").datetime.now(__import__("datetime").UTC)
    try:
        # 100 KB events (SUBSCRIPTION_QUEUE_SIZE, 1,000 events, is never reached), until the socket's
        # buffers are full and the hub's buffer holds more than the budget.
        payload = {"tool_name": "t", "tool_args": {"x": "y" * 100_000}}
        for _ in range(100):
            events = [event_doc(EventType.TOOL_CALL, "t", wid, "A", dict(payload), now) for _ in range(5)]
            await append_events(client[db_name], None, events)
            if await subscribers(limited.url) == 0:
                break
    finally:
        await client.close()
    await wait_for_subscribers(limited.url, 0)  # dropped by the hub: its buffer released
    while True:  # draining the socket, the client finds the error after the events it did get
        message = await ws.receive(wait=10)
        if message["type"] != "next" or "errors" in message["payload"]:
            break
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert "unread events exceeded 65536 bytes (SUBSCRIPTION_QUEUE_BYTES=65536): " in errors[0]["message"]
    assert errors[0]["extensions"]["code"] == "SLOW_CONSUMER"
    await ws.close()


async def test_a_replay_longer_than_the_cap_is_refused_with_how_to_page(limited: ServerProcess) -> None:
    wid = await create_workflow(limited.url)  # 3 events: TASK_CREATED × 3
    for name in ("startTask", "completeTask"):
        data = await gql(limited.url, f'mutation {{ r: {name}(id: "{wid}_s1") {{ __typename }} }}')
        assert data["r"]["__typename"] == "TaskTransitionSuccess", data
    stored = (
        await gql(
            limited.url,
            "query($w: ID) { taskEvents(workflowId: $w, first: 100) { edges { node { cursor } } } }",
            {"w": wid},
        )
    )["taskEvents"]["edges"]
    assert len(stored) > 5
    message = (
        "more than 5 stored events follow the start of the history, the most a subscription replays"
        " (SUBSCRIPTION_REPLAY_MAX=5); read them with the `taskEvents` query (`first` up to 100,"
        " `after` its `pageInfo.endCursor`), then subscribe with `after` set to the last cursor it returned"
    )
    ws = await GraphQLWebSocket.open(limited.url)
    op = await ws.subscribe(EVENTS, {"w": wid})  # from the start: too long
    refused = await ws.receive()
    assert refused["id"] == op
    errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
    assert [(e["message"], e["extensions"]["code"]) for e in errors] == [(message, "REPLAY_LIMIT_EXCEEDED")]
    assert await ws.receive() == {"id": op, "type": "complete"}  # and nothing was sent before it
    # Over SSE the same refusal.
    async with (
        httpx.AsyncClient(base_url=limited.url, timeout=10) as http,
        http.stream(
            "POST", "/graphql", json={"query": EVENTS, "variables": {"w": wid}}, headers=SSE
        ) as answer,
    ):
        lines = [line async for line in answer.aiter_lines() if line.startswith("data:") and line[5:].strip()]
    assert json.loads(lines[0][5:])["errors"][0]["extensions"]["code"] == "REPLAY_LIMIT_EXCEEDED"
    # Within the cap (the last 5 events, after the cursor the query gave) it replays, then goes live.
    cursor = stored[-6]["node"]["cursor"]
    await ws.subscribe(EVENTS, {"w": wid, "after": cursor})
    replayed = [e["taskEvents"]["cursor"] for e in await ws.take(5)]
    assert replayed == [e["node"]["cursor"] for e in stored[-5:]]
    await ws.close()
    await wait_for_subscribers(limited.url, 0)


async def test_websocket_messages_are_not_compressed_by_default(limited: ServerProcess) -> None:
    """permessage-deflate would hold ~50 KB of zlib state per connection (WS_PER_MESSAGE_DEFLATE)."""
    ws = await GraphQLWebSocket.open(limited.url)  # the client offers permessage-deflate
    assert ws.ws.protocol.extensions == []
    await ws.close()
