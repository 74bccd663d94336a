"""Live subscriptions against real uvicorn processes and a real WebSocket client: commit order, filters,
resume after a disconnect, HEAD, nested fields, progress, clean-up, the slow-consumer limit, protocol
limits, the legacy protocol, SSE, and two server processes on one database behaving as one."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import read_query
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

WATCH = read_query("WatchWorkflow.graphql")


@pytest.fixture(scope="module")
def db_name() -> str:
    return f"live_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup, db_name: str) -> ServerProcess:
    return module_servers.start("live", LIVE, db_name=db_name)


async def transition(url: str, name: str, task_id: str, args: str = "") -> None:
    data = await gql(url, f'mutation {{ r: {name}(id: "{task_id}" {args}) {{ __typename }} }}')
    assert data["r"]["__typename"] == "TaskTransitionSuccess", data


async def run_task(url: str, task_id: str) -> None:
    await transition(url, "startTask", task_id)
    await transition(url, "reportProgress", task_id, ", percentage: 50")
    await transition(url, "completeTask", task_id)


async def stored_events(url: str, workflow_id: str) -> list[dict[str, Any]]:
    data = await gql(
        url,
        "query($w: ID) { taskEvents(workflowId: $w, first: 100) { edges { node { cursor type taskId } } } }",
        {"w": workflow_id},
    )
    return [e["node"] for e in data["taskEvents"]["edges"]]


async def test_events_arrive_in_commit_order_with_filters(server: ServerProcess) -> None:
    wid = await create_workflow(server.url)
    other = await create_workflow(server.url)
    ws = await GraphQLWebSocket.open(server.url)
    await ws.subscribe(EVENTS, {"w": wid, "after": "HEAD"})
    completed_only = await GraphQLWebSocket.open(server.url)
    await completed_only.subscribe(EVENTS, {"w": wid, "types": ["TASK_COMPLETED"], "after": "HEAD"})
    await wait_for_subscribers(server.url, 2)

    await run_task(server.url, f"{other}_s1")  # another workflow: must not arrive
    await run_task(server.url, f"{wid}_s1")  # releases s2 in the same transaction
    await run_task(server.url, f"{wid}_s2")

    stored = [e for e in await stored_events(server.url, wid) if e["type"] != "TASK_CREATED"]
    received = [(await ws.next())["taskEvents"] for _ in stored]
    assert received == stored  # every event, in commit order, nothing from the other workflow
    assert [e["type"] for e in received[:5]] == [
        "STATUS_CHANGED",
        "TASK_PROGRESS",
        "STATUS_CHANGED",
        "TASK_COMPLETED",
        "STATUS_CHANGED",
    ]
    assert received[4]["taskId"] == f"{wid}_s2"  # its release, committed with s1's completion
    done = [(await completed_only.next())["taskEvents"] for _ in range(2)]
    assert [(e["type"], e["taskId"]) for e in done] == [
        ("TASK_COMPLETED", f"{wid}_s1"),
        ("TASK_COMPLETED", f"{wid}_s2"),
    ]
    assert await ws.nothing_within(0.3) and await completed_only.nothing_within(0.1)
    await ws.close()
    await completed_only.close()
    await wait_for_subscribers(server.url, 0)  # nothing left behind


async def test_resume_after_a_disconnect_gets_exactly_what_was_missed(server: ServerProcess) -> None:
    wid = await create_workflow(server.url)
    ws = await GraphQLWebSocket.open(server.url)
    await ws.subscribe(WATCH, {"workflowId": wid}, "WorkflowEvents")  # no cursor: the whole history first
    history = [(await ws.next())["taskEvents"] for _ in range(3)]
    assert [e["type"] for e in history] == ["TASK_CREATED"] * 3
    await transition(server.url, "startTask", f"{wid}_s1")
    last_seen = (await ws.next())["taskEvents"]
    assert last_seen["type"] == "STATUS_CHANGED" and last_seen["toStatus"] == "IN_PROGRESS"
    await ws.close()  # the dashboard drops off...
    await wait_for_subscribers(server.url, 0)

    await transition(server.url, "reportProgress", f"{wid}_s1", ', percentage: 30, currentStep: "drafting"')
    await gql(
        server.url,
        f'mutation {{ recordToolCall(taskId: "{wid}_s1", toolName: "search", toolArgs: {{q: "x"}}) {{ __typename }} }}',
    )
    missed = [
        e for e in await stored_events(server.url, wid) if e["cursor"] > last_seen["cursor"]
    ]  # positions: fixed-width hex, so text order is commit order
    assert len(missed) == 2

    ws = await GraphQLWebSocket.open(server.url)  # ...and comes back with its last cursor
    await ws.subscribe(WATCH, {"workflowId": wid, "after": last_seen["cursor"]}, "WorkflowEvents")
    replayed = [(await ws.next())["taskEvents"] for _ in missed]
    assert [e["cursor"] for e in replayed] == [e["cursor"] for e in missed]
    assert replayed[0]["progress"] == 0.3 and replayed[1]["toolName"] == "search"
    assert await ws.nothing_within(0.3)  # nothing twice
    await transition(server.url, "completeTask", f"{wid}_s1")  # and it continues live
    live = [(await ws.next())["taskEvents"]["type"] for _ in range(3)]
    assert live == ["STATUS_CHANGED", "TASK_COMPLETED", "STATUS_CHANGED"]
    await ws.close()


async def test_head_means_live_only(server: ServerProcess) -> None:
    wid = await create_workflow(server.url)
    ws = await GraphQLWebSocket.open(server.url)
    await ws.subscribe(EVENTS, {"w": wid, "after": "HEAD"})
    await wait_for_subscribers(server.url, 1)
    assert await ws.nothing_within(0.3)  # the three TASK_CREATED events are history
    await transition(server.url, "startTask", f"{wid}_s1")
    assert (await ws.next())["taskEvents"]["type"] == "STATUS_CHANGED"
    await ws.close()
    await wait_for_subscribers(server.url, 0)


async def test_bad_cursor_is_refused(server: ServerProcess) -> None:
    ws = await GraphQLWebSocket.open(server.url)
    await ws.subscribe(EVENTS, {"after": "not-a-cursor"})
    message = await ws.receive()
    assert message["type"] == "next" and message["payload"]["data"] is None, message
    assert message["payload"]["errors"][0]["message"] == "cursor was not issued by this server"
    assert message["payload"]["errors"][0]["extensions"]["code"] == "BAD_CURSOR"
    assert (await ws.receive())["type"] == "complete"
    await ws.close()


async def test_task_states_with_nested_fields_and_progress(server: ServerProcess) -> None:
    wid = await create_workflow(server.url)
    ws = await GraphQLWebSocket.open(server.url)
    await ws.subscribe(WATCH, {"workflowId": wid}, "WorkflowEvents")  # three operations: pick by name
    await ws.close()

    states = await GraphQLWebSocket.open(server.url)
    op = {
        "id": "s",
        "type": "subscribe",
        "payload": {"query": WATCH, "operationName": "TaskStates", "variables": {"workflowId": wid}},
    }
    await states.send(op)
    progress = await GraphQLWebSocket.open(server.url)
    await progress.send({**op, "payload": {**op["payload"], "operationName": "WorkflowProgress"}})
    await wait_for_subscribers(server.url, 2)

    await transition(server.url, "startTask", f"{wid}_s1")
    state = (await states.next())["taskStateChanged"]
    assert state["id"] == f"{wid}_s1" and state["status"] == "IN_PROGRESS" and state["attempts"] == 1
    assert state["task"] == {"__typename": "SubTask", "id": f"{wid}_s1"}
    first = (await progress.next())["workflowProgress"]
    assert first["inProgress"] == 1 and first["total"] == 2

    await transition(server.url, "completeTask", f"{wid}_s1")
    changed = [(await states.next())["taskStateChanged"] for _ in range(2)]
    assert [(s["id"], s["status"]) for s in changed] == [(f"{wid}_s1", "COMPLETED"), (f"{wid}_s2", "PENDING")]
    # nested fields are resolved afresh for each event: s2's dependency is now satisfied
    assert changed[1]["dependencies"] == [{"taskId": f"{wid}_s1", "satisfied": True}]
    after = (await progress.next())["workflowProgress"]
    assert after["completed"] == 1 and after["percentage"] == 50.0
    await states.close()
    await progress.close()
    await wait_for_subscribers(server.url, 0)


async def test_two_server_processes_behave_as_one(
    mongo_uri: str, db_name: str, server: ServerProcess
) -> None:
    with serve(live_env(mongo_uri, db_name)) as other:
        wid = await create_workflow(other.url)
        ws = await GraphQLWebSocket.open(server.url)  # watching on the first process...
        await ws.subscribe(EVENTS, {"w": wid, "after": "HEAD"})
        await wait_for_subscribers(server.url, 1)
        await run_task(other.url, f"{wid}_s1")  # ...while the second one handles the writes
        received = [(await ws.next())["taskEvents"] for _ in range(5)]
        stored = [e for e in await stored_events(server.url, wid) if e["type"] != "TASK_CREATED"]
        assert received == stored
        await ws.close()


async def hub_health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url) as http:
        return (await http.get("/healthz")).json()["event_hub"]


async def test_two_processes_stamp_every_position_once_between_them(
    mongo_uri: str, db_name: str, server: ServerProcess
) -> None:
    """Two processes on one database: each stamps the events it sees in its own change stream, so a
    mutation on either answers with cursors after one stream hop, and its subscribers get every event
    once. Between them each position is written once: the second write of the same position matches it
    and changes nothing. One process holds the orphan-sweep lease."""
    with serve(live_env(mongo_uri, db_name)) as other:
        before = [(await hub_health(url))["stamped"] for url in (server.url, other.url)]
        wid = await create_workflow(other.url)
        ws = await GraphQLWebSocket.open(other.url)
        await ws.subscribe(EVENTS, {"w": wid, "after": "HEAD"})
        await wait_for_subscribers(other.url, 1)
        data = await gql(
            other.url,
            f'mutation {{ r: startTask(id: "{wid}_s1") {{ ... on TaskTransitionSuccess {{ events {{ cursor }} }} }} }}',
        )
        cursors = [e["cursor"] for e in data["r"]["events"]]
        assert cursors and all(
            len(c) == 24 and int(c, 16) > 0 for c in cursors
        )  # positions, not "unstamped-"
        await transition(server.url, "reportProgress", f"{wid}_s1", ", percentage: 50")
        await transition(other.url, "completeTask", f"{wid}_s1")
        received = [(await ws.next())["taskEvents"] for _ in range(5)]
        stored = [e for e in await stored_events(server.url, wid) if e["type"] != "TASK_CREATED"]
        assert received == stored and received[0]["cursor"] == cursors[0]
        first, second = await hub_health(server.url), await hub_health(other.url)
        assert {first["orphan_sweeper"], second["orphan_sweeper"]} == {True, False}
        # Each event of this workflow (three creations, five lifecycle events) stamped once in all; any
        # event stamped meanwhile by another test's writes on this database would add to both sides.
        written = first["stamped"] - before[0] + second["stamped"] - before[1]
        assert written == 8
        await ws.close()


async def test_legacy_graphql_ws_protocol(server: ServerProcess) -> None:
    wid = await create_workflow(server.url)
    ws = await GraphQLWebSocket.open(server.url, protocol="graphql-ws")
    await ws.subscribe(EVENTS, {"w": wid})
    created = [(await ws.next())["taskEvents"]["type"] for _ in range(3)]
    assert created == ["TASK_CREATED"] * 3
    await ws.close()


async def test_server_sent_events(server: ServerProcess) -> None:
    wid = await create_workflow(server.url)
    body = {"query": EVENTS, "variables": {"w": wid}}
    received: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        http.stream("POST", "/graphql", json=body, headers={"Accept": "text/event-stream"}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data:") and line[5:].strip():
                payload = json.loads(line[5:])
                if "data" in payload:
                    received.append(payload["data"]["taskEvents"])
            if len(received) == 3:
                break
    assert [e["type"] for e in received] == ["TASK_CREATED"] * 3


async def test_connection_init_timeout_and_subscription_cap(mongo_uri: str, db_name: str) -> None:
    env = live_env(
        mongo_uri, db_name, CONNECTION_INIT_TIMEOUT_SECONDS="0.5", MAX_SUBSCRIPTIONS_PER_CONNECTION="2"
    )
    with serve(env) as limited:
        silent = await GraphQLWebSocket.open(limited.url, init=False)
        with pytest.raises(Exception) as closed:
            await silent.receive(wait=60)
        assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 4408

        ws = await GraphQLWebSocket.open(limited.url)
        await ws.subscribe(EVENTS, {"after": "HEAD"})
        await ws.subscribe(EVENTS, {"after": "HEAD"})
        await wait_for_subscribers(limited.url, 2)
        third = await ws.subscribe(EVENTS, {"after": "HEAD"})
        refused = await ws.receive(wait=60)
        assert refused["id"] == third and refused["type"] == "error"
        assert "(MAX_SUBSCRIPTIONS_PER_CONNECTION=2)" in refused["payload"][0]["message"]
        assert await subscribers(limited.url) == 2
        await ws.close()
        await wait_for_subscribers(limited.url, 0)


async def test_a_slow_consumer_is_disconnected_and_cleaned_up(mongo_uri: str, db_name: str) -> None:
    from pymongo import AsyncMongoClient

    from app.lifecycle.events import EventType, event_doc
    from app.store.events import append_events

    T0 = __import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").UTC)

    with serve(live_env(mongo_uri, db_name, SUBSCRIPTION_QUEUE_SIZE="20")) as slow_server:
        wid = f"wf_{uuid.uuid4().hex[:8]}"
        # A tiny receive buffer and no reading: the server's sends back up, its buffer overflows.
        ws = await GraphQLWebSocket.open(slow_server.url, max_queue=1, max_size=2**24)
        ws.ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await ws.subscribe(EVENTS, {"w": wid, "after": "HEAD"})
        await wait_for_subscribers(slow_server.url, 1)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
        try:
            db = client[db_name]
            for _ in range(40):
                events = [
                    event_doc(EventType.TOOL_CALL, "t", wid, "A", {"tool_name": "x" * 200}, T0)
                    for _ in range(500)
                ]
                await append_events(db, None, events)
                if await subscribers(slow_server.url) == 0:
                    break
        finally:
            await client.close()
        await wait_for_subscribers(slow_server.url, 0)  # the hub dropped it, memory bounded
        # Draining the socket, the client finds the clear error after the events it did get.
        while True:
            message = await ws.receive(wait=10)
            if message["type"] != "next" or "errors" in message["payload"]:
                break
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert "fell more than 20 events behind" in errors[0]["message"]
        assert errors[0]["extensions"]["code"] == "SLOW_CONSUMER"
        await ws.close()
