"""Timeouts (issue 21 part 2) against real server processes over HTTP: each kind fires exactly once per
task with two `agent-tasks serve` processes sweeping one database (counted from `task_events`), a
start-to-close timeout fails the attempt (its holder is fenced) and the retry policy retries it, a
schedule-to-close timeout runs across retries, a deadline that passes while no server runs fires once at
the next start, a subtree inherits its timeouts, the server's default applies, and bad values are
refused with the field and the limit, nothing stored."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from agent_tasks_client import AgentTasksClient, LeaseLost, RetryPolicy, Timeouts, ValidationFailed
from app.settings import Settings
from tests.support.polling import until
from tests.support.servers import ServerGroup, ServerProcess, serve

DB_NAME = f"timeouts_{uuid.uuid4().hex[:12]}"
#: The server default of the module's servers: a task naming no schedule-to-close timeout takes it.
DEFAULT_SCHEDULE_TO_CLOSE = 3600.0


# The module's servers sweep every 0.1 s.
SWEEPING = {
    "EXPIRY_SWEEP_SECONDS": "0.1",
    "SCHEDULE_TO_CLOSE_TIMEOUT_SECONDS": str(DEFAULT_SCHEDULE_TO_CLOSE),
}


def env(mongo_uri: str, db_name: str) -> dict[str, str]:
    return {"MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, **SWEEPING}


@pytest.fixture(scope="module")
def servers(module_servers: ServerGroup) -> list[ServerProcess]:
    """Two server processes sweeping the same database every 0.1 s."""
    return [module_servers.start("timeouts", SWEEPING, db_name=DB_NAME) for _ in range(2)]


@pytest.fixture
async def clients(servers: list[ServerProcess]) -> AsyncIterator[list[AgentTasksClient]]:
    async with (
        AgentTasksClient(servers[0].url, timeout=60) as a,
        AgentTasksClient(servers[1].url, timeout=60) as b,
    ):
        yield [a, b]


@pytest.fixture
async def db(servers: list[ServerProcess], mongo_uri: str) -> AsyncIterator[Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    yield mongo[DB_NAME]
    await mongo.close()


def agent() -> str:
    return f"TimeoutAgent-{uuid.uuid4().hex[:8]}"


async def statuses(db: Any, ids: list[str]) -> dict[str, str]:
    return {d["_id"]: d["status"] async for d in db.agent_task_states.find({"_id": {"$in": ids}})}


async def settle(db: Any, ids: list[str], status: str) -> None:
    async def done() -> bool:
        return set((await statuses(db, ids)).values()) == {status}

    await until(done)


async def timed_out(db: Any, task_id: str) -> list[dict[str, Any]]:
    """The task's TASK_TIMED_OUT payloads, by attempt."""
    cursor = db.task_events.find({"task_id": task_id, "type": "TASK_TIMED_OUT"})
    return sorted([e["payload"] async for e in cursor], key=lambda p: (p["attempt"], p["kind"]))


async def count(db: Any, task_id: str, kind: str, **payload: Any) -> int:
    query = {"task_id": task_id, "type": kind, **{f"payload.{k}": v for k, v in payload.items()}}
    return int(await db.task_events.count_documents(query))


async def test_each_kind_fires_exactly_once_with_two_servers_sweeping(
    clients: list[AgentTasksClient], db: Any
) -> None:
    """Ten tasks of each kind, created and claimed through both processes; every one times out once."""
    n, name = 10, agent()
    once = RetryPolicy(maximum_attempts=1)  # the first timeout of an attempt is final: one event each
    kinds: dict[str, list[str]] = {"SCHEDULE_TO_START": [], "SCHEDULE_TO_CLOSE": [], "START_TO_CLOSE": []}
    for i in range(n):
        c = clients[i % 2]
        kinds["SCHEDULE_TO_START"].append(
            (await c.create_agent_task(f"{name}-idle", timeouts=Timeouts(schedule_to_start=0.5))).id
        )
        kinds["SCHEDULE_TO_CLOSE"].append(
            (await c.create_agent_task(f"{name}-idle", timeouts=Timeouts(schedule_to_close=1))).id
        )
    held = []
    for i in range(n):
        c = clients[i % 2]
        await c.create_agent_task(f"{name}-slow", retry_policy=once, timeouts=Timeouts(start_to_close=1))
        claimed = await c.claim(f"{name}-slow", lease_seconds=3600)
        assert claimed is not None and claimed.state.start_to_close_deadline is not None
        kinds["START_TO_CLOSE"].append(claimed.id)
        held.append(claimed)
    heartbeat = []
    for i in range(n):
        c = clients[i % 2]
        await c.create_agent_task(f"{name}-silent", retry_policy=once)
        claimed = await c.claim(f"{name}-silent", lease_seconds=1)
        assert claimed is not None
        heartbeat.append(claimed.id)
    kinds["HEARTBEAT"] = heartbeat
    everything = [task_id for ids in kinds.values() for task_id in ids]
    await settle(db, everything, "failed")
    await asyncio.sleep(1)  # more sweeps by both processes: nothing fires twice
    for kind, ids in kinds.items():
        for task_id in ids:
            events = await timed_out(db, task_id)
            assert [(e["kind"], e["status"]) for e in events] == [(kind, "failed")], (kind, task_id)
            assert await count(db, task_id, "STATUS_CHANGED", to_status="failed") == 1
            state = await db.agent_task_states.find_one({"_id": task_id})
            assert state["last_error"]["error_type"] == f"TimedOut:{kind}"
            # Cleared once they no longer apply.
            for field in (
                "schedule_to_start_deadline",
                "start_to_close_deadline",
                "schedule_to_close_deadline",
            ):
                assert state.get(field) is None
    for task_id in heartbeat:  # the lease's lapse keeps its own event too
        assert await count(db, task_id, "LEASE_EXPIRED") == 1
    # A start-to-close timeout fences the attempt like a lapse: its holder's writes are refused.
    with pytest.raises(LeaseLost):
        await held[0].heartbeat()
    with pytest.raises(LeaseLost):
        await held[1].complete({"late": True})
    # The event as the API shows it.
    page = await clients[0].events(task_id=kinds["START_TO_CLOSE"][0], types=["TASK_TIMED_OUT"])
    [event] = page.events
    assert event.data["kind"] == "START_TO_CLOSE" and event.data["timeoutSeconds"] == 1.0
    assert event.data["attempt"] == 1 and event.data["timedOutStatus"] == "FAILED"


async def test_start_to_close_fails_the_attempt_and_the_task_is_retried(
    clients: list[AgentTasksClient], db: Any
) -> None:
    client, name = clients[0], agent()
    policy = RetryPolicy(initial_interval=0.5, maximum_attempts=3)
    task = await client.create_agent_task(name, retry_policy=policy, timeouts=Timeouts(start_to_close=1))
    first = await client.claim(name, lease_seconds=3600)
    assert first is not None and first.attempt == 1
    await settle(db, [task.id], "retrying")
    [event] = await timed_out(db, task.id)
    assert (event["kind"], event["attempt"], event["status"]) == ("START_TO_CLOSE", 1, "retrying")
    state = await client.get_task(task.id)
    assert state is not None and state.next_attempt_at is not None
    assert event["next_attempt_at"] == state.next_attempt_at.isoformat()
    assert state.start_to_close_deadline is None
    with pytest.raises(LeaseLost):  # the timed-out attempt is fenced
        await first.heartbeat()

    second = None

    async def claimed_again() -> bool:  # claimable once its backoff ends, then runs under a fresh deadline
        nonlocal second
        second = await client.claim(name, lease_seconds=3600)
        return second is not None

    await until(claimed_again, "the retry to be claimable", every=0.1)
    assert second is not None and second.attempt == 2 and second.state.start_to_close_deadline is not None
    done = await second.complete({"ok": True})
    assert done.status == "completed" and done.start_to_close_deadline is None
    assert done.schedule_to_close_deadline is None  # the server's default, cleared with the task done
    assert len(await timed_out(db, task.id)) == 1


async def test_schedule_to_close_runs_across_retries(clients: list[AgentTasksClient], db: Any) -> None:
    client, name = clients[1], agent()
    task = await client.create_agent_task(
        name, retry_policy=RetryPolicy(maximum_attempts=0), timeouts=Timeouts(schedule_to_close=3)
    )
    deadline = task.schedule_to_close_deadline
    assert deadline is not None
    for attempt in (1, 2):
        claimed = await client.claim(name)
        assert claimed is not None and claimed.attempt == attempt
        failed = await claimed.fail("flaky")
        assert failed.status == "retrying" and failed.schedule_to_close_deadline == deadline  # unchanged
    await settle(db, [task.id], "failed")
    [event] = await timed_out(db, task.id)
    assert (event["kind"], event["attempt"], event["status"]) == ("SCHEDULE_TO_CLOSE", 2, "failed")
    assert event["deadline"] == deadline.isoformat() and event["timeout_seconds"] == 3.0


async def test_a_deadline_passed_while_no_server_ran_fires_once_at_the_next_start(mongo_uri: str) -> None:
    db_name = f"timeouts_restart_{uuid.uuid4().hex[:12]}"
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    db = mongo[db_name]
    try:
        with serve(env(mongo_uri, db_name)) as first:
            async with AgentTasksClient(first.url, timeout=60) as client:
                task = await client.create_agent_task(agent(), timeouts=Timeouts(schedule_to_start=2))
            assert first.stop() == 0
        deadline = task.schedule_to_start_deadline
        assert deadline is not None
        while dt.datetime.now(dt.UTC) <= deadline + dt.timedelta(seconds=0.5):  # it passes with no server
            await asyncio.sleep(0.2)
        assert (await db.agent_task_states.find_one({"_id": task.id}))["status"] == "pending"
        with ExitStack() as stack:
            for _ in range(2):
                stack.enter_context(serve(env(mongo_uri, db_name)))
            await settle(db, [task.id], "failed")
            await asyncio.sleep(1)
        assert [e["kind"] for e in await timed_out(db, task.id)] == ["SCHEDULE_TO_START"]
        assert await count(db, task.id, "STATUS_CHANGED") == 1
    finally:
        await mongo.drop_database(db_name)
        await mongo.close()


async def test_a_subtree_inherits_its_timeouts_and_the_server_default_applies(
    clients: list[AgentTasksClient], db: Any
) -> None:
    client, root = clients[0], f"wf-{uuid.uuid4().hex[:8]}"
    await client.create_workflow(
        {
            "id": root,
            "state": {"agentName": agent(), "startToCloseTimeout": 30, "scheduleToStartTimeout": 600},
            "subTasks": [
                {
                    "id": f"{root}-s",
                    "state": {"agentName": agent(), "scheduleToStartTimeout": 0},
                    "behaviorTasks": [{"id": f"{root}-b", "state": {"agentName": agent()}}],
                }
            ],
        }
    )
    docs = {d["_id"]: d async for d in db.agent_task_states.find({"_id": {"$regex": f"^{root}"}})}
    assert docs[f"{root}-s"]["start_to_close_timeout"] == 30.0  # inherited
    assert docs[f"{root}-s"]["schedule_to_start_timeout"] == 0.0  # its own 0: none
    assert "schedule_to_start_deadline" not in docs[f"{root}-s"]
    assert docs[f"{root}-b"]["start_to_close_timeout"] == 30.0  # two levels down
    assert docs[f"{root}-b"]["schedule_to_start_timeout"] == 0.0  # from its parent
    meta = docs[root]
    assert meta["schedule_to_start_deadline"] == meta["created_at"] + dt.timedelta(seconds=600)
    # No schedule-to-close given: the server's SCHEDULE_TO_CLOSE_TIMEOUT_SECONDS.
    for doc in docs.values():
        assert doc["schedule_to_close_timeout"] == DEFAULT_SCHEDULE_TO_CLOSE
        assert doc["schedule_to_close_deadline"] == doc["created_at"] + dt.timedelta(seconds=3600)


async def test_bad_values_are_refused_with_the_field_and_the_limit(
    servers: list[ServerProcess], clients: list[AgentTasksClient], db: Any
) -> None:
    client, name = clients[0], agent()
    before = await db.agent_task_states.count_documents({})
    with pytest.raises(ValidationFailed) as refused:
        await client.create_agent_task(name, timeouts=Timeouts(schedule_to_start=-1))
    assert refused.value.path == "input.scheduleToStartTimeout"
    assert "between 0 (none) and 31536000 seconds" in str(refused.value)
    with pytest.raises(ValidationFailed) as refused:
        await client.create_agent_task(name, timeouts=Timeouts(schedule_to_close=400 * 24 * 3600))
    assert refused.value.path == "input.scheduleToCloseTimeout"
    task = await client.create_agent_task(name)
    update = (
        "mutation($id: ID!, $v: Float) { updateAgentTask(id: $id, input: {startToCloseTimeout: $v}) {"
        " __typename ... on ValidationError { field message }"
        " ... on AgentTaskSuccess { state { startToCloseTimeout version } } } }"
    )
    answer = (await client.execute(update, {"id": task.id, "v": -5}))["updateAgentTask"]
    assert answer["__typename"] == "ValidationError" and answer["field"] == "input.startToCloseTimeout"
    async with httpx.AsyncClient(base_url=servers[1].url) as http:
        bad = await http.post("/agent-tasks", json={"agent_name": name, "start_to_close_timeout": -1})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid", bad.text
        assert "start_to_close_timeout" in bad.text
        assert await db.agent_task_states.count_documents({}) == before + 1  # only the good one
        # REST sets them too, and an edit moves the running deadline.
        good = await http.post("/agent-tasks", json={"agent_name": name, "schedule_to_start_timeout": 60})
        assert good.status_code == 201, good.text
        body = good.json()
        assert body["schedule_to_start_timeout"] == 60.0 and body["schedule_to_start_deadline"] is not None
        patched = await http.patch(f"/agent-tasks/{body['task_id']}", json={"schedule_to_start_timeout": 0})
        assert patched.status_code == 200, patched.text
        assert patched.json()["schedule_to_start_deadline"] is None
    answer = (await client.execute(update, {"id": task.id, "v": 10}))["updateAgentTask"]
    assert answer["state"]["startToCloseTimeout"] == 10.0
    with pytest.raises(ValueError, match="schedule_to_start_timeout_seconds"):
        Settings(schedule_to_start_timeout_seconds=-1)


async def test_the_sweep_query_reads_the_deadline_index(db: Any) -> None:
    """The sweep's query (`states.timed_out`) is answered from the partial (status, deadline) index: no
    collection scan, and only due documents are examined."""
    from app.lifecycle import timeouts
    from app.store import states as state_store

    now = dt.datetime.now(dt.UTC)
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    await db.agent_task_states.insert_many(
        [
            {
                "_id": f"{marker}-due",
                "status": "paused",
                "agent_name": marker,
                "schedule_to_close_deadline": now,
            },
            {
                "_id": f"{marker}-late",
                "status": "pending",
                "agent_name": marker,
                "schedule_to_close_deadline": now,
            },
        ]
    )
    await db.command("profile", 2)
    try:
        kind = timeouts.SCHEDULE_TO_CLOSE
        due = await state_store.timed_out(db, kind.deadline_field, kind.statuses, now, 100)
    finally:
        await db.command("profile", 0)
    # A paused task is never due: the sweep names the statuses (the other fired since: the servers sweep).
    assert f"{marker}-due" not in due
    finds = [
        p
        async for p in db["system.profile"].find(
            {
                "op": "query",
                "ns": f"{DB_NAME}.agent_task_states",
                "command.filter.schedule_to_close_deadline": {"$exists": True},
            }
        )
    ]
    assert finds and all(
        "IXSCAN { status: 1, schedule_to_close_deadline: 1 }" in f["planSummary"] for f in finds
    ), [f["planSummary"] for f in finds]
    await db.agent_task_states.delete_many({"agent_name": marker})
