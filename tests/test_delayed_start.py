"""Delayed starts (issue 21 part 3) against a real server process over HTTP: a task created with
`notBefore` (GraphQL, REST, the client) is never started before it (every start's `started_at`, on the
server's clock, checked in MongoDB: no test depends on how fast its own calls are) and startTask refuses it;
`rescheduleTask` moves the time (or clears it) with a TASK_RESCHEDULED event, and is refused once the task
has started."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from agent_tasks_client import AgentTasksClient, TransitionRefused
from tests.support.claims import claims_before
from tests.support.servers import ServerGroup, ServerProcess

DB_NAME = f"delayed_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    return module_servers.start("delayed", db_name=DB_NAME)


@pytest.fixture
async def db(server: ServerProcess, mongo_uri: str) -> AsyncIterator[Any]:
    """The server's database, read directly."""
    async with AsyncMongoClient(mongo_uri) as mongo:
        yield mongo[DB_NAME]


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AgentTasksClient]:
    async with AgentTasksClient(server.url, timeout=60) as c:
        yield c


def agent() -> str:
    return f"Delayed-{uuid.uuid4().hex[:8]}"


def soon(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


async def test_not_claimed_before_not_before(client: AgentTasksClient, db: Any) -> None:
    """Claimed as soon as due, never before: whatever the machine's load made of the test's own timing,
    every start's `started_at` (the server's clock) is at or after the task's `not_before`."""
    name = agent()
    at = soon(1.5)
    tasks = [await client.create_agent_task(name, not_before=at) for _ in range(20)]
    assert all(t.not_before and abs((t.not_before - at).total_seconds()) < 0.01 for t in tasks)
    ids = {t.id for t in tasks}
    if dt.datetime.now(dt.UTC) < at - dt.timedelta(milliseconds=200):
        with pytest.raises(TransitionRefused):
            await client.start(tasks[0].id)
    claimed: set[str] = set()
    async with asyncio.timeout(120):
        while claimed | await started_ids(db, ids) != ids:
            task = await client.claim(name)
            if task is None:
                await asyncio.sleep(0.02)
            else:
                claimed.add(task.id)
    states = await db.agent_task_states.find({"_id": {"$in": list(ids)}}).to_list()
    assert len(states) == 20
    # Against the stored `not_before`: MongoDB keeps milliseconds, so `at` itself (microseconds) may lie
    # up to 1 ms after what the server gates on, and a claim in that millisecond is on time, not early.
    early = [
        (s["_id"], s["started_at"], s["not_before"]) for s in states if s["started_at"] < s["not_before"]
    ]
    assert early == []
    assert all(abs((s["not_before"].replace(tzinfo=dt.UTC) - at).total_seconds()) < 0.001 for s in states)


async def started_ids(db: Any, ids: set[str]) -> set[str]:
    """Which of `ids` the server has started."""
    return {
        d["_id"] async for d in db.agent_task_states.find({"_id": {"$in": list(ids)}, "attempts": {"$gt": 0}})
    }


async def test_reschedule_moves_and_clears_the_time_with_an_event(client: AgentTasksClient) -> None:
    name = agent()
    first, later = soon(30), soon(60)
    task = await client.create_agent_task(name, not_before=first)
    state = await client.reschedule(task.id, later)
    assert state.status == "pending" and state.not_before is not None
    assert abs((state.not_before - later).total_seconds()) < 0.01
    assert await client.claim(name) is None
    events = await client.events(task_id=task.id, types=["TASK_RESCHEDULED"])
    (event,) = events.events
    assert event.data["notBefore"] is not None and event.data["previousNotBefore"] is not None
    cleared = await client.reschedule(task.id, None)
    assert cleared.not_before is None
    claimed = await client.claim(name)
    assert claimed is not None and claimed.id == task.id
    with pytest.raises(TransitionRefused):  # started: too late to reschedule
        await client.reschedule(task.id, soon(10))


async def test_rest_create_and_patch_not_before(
    server: ServerProcess, client: AgentTasksClient, db: Any
) -> None:
    name = agent()
    async with httpx.AsyncClient(base_url=server.url) as http:
        at = soon(1.2)
        created = await http.post(
            "/agent-tasks",
            json={"agent_name": name, "not_before": at.isoformat(), "retry_policy": {"jitter": 0.1}},
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["not_before"] is not None and body["retry_policy"] == {"jitter": 0.1}
        early, claimed = await claims_before(client, db, name, at)
        assert early == []
        # Due by the test's clock (the server's, on the same machine): claimable.
        await asyncio.sleep(max(0.0, (at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.1)
        claimed = claimed or await client.claim(name)
        assert claimed is not None and claimed.id == body["task_id"]
        second = (await http.post("/agent-tasks", json={"agent_name": name})).json()
        patched = await http.patch(
            f"/agent-tasks/{second['task_id']}", json={"not_before": soon(60).isoformat()}
        )
        assert patched.status_code == 200, patched.text
        assert await client.claim(name) is None
