"""Expiry: the sweeper fails overdue active tasks (once, with its events, even when several sweep at once),
it runs by itself inside the app's lifespan, and reads show an overdue task as failed before it is swept."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import ObjectId

from app.demo.workflow import DEMO_WORKFLOW_ID, load_demo
from app.lifecycle.expiry import ExpirySweeper, expire_overdue
from app.lifecycle.transitions import Lifecycle, utcnow
from app.settings import Settings
from app.store.indexes import ensure_indexes
from tests.conftest import GraphQLClient
from tests.support.app import serving
from tests.support.lifecycle_helpers import mutation, snapshot, task
from tests.support.polling import until

DETAILS = "expires_at passed before the task finished"


def expired_message(expires_at: dt.datetime) -> str:
    return f"task expired at {expires_at.isoformat()}"


@pytest.fixture
async def quiet_gql(settings: Settings, db: Any) -> AsyncIterator[GraphQLClient]:
    """The app with its sweeper off."""
    async with serving(settings, sweep_seconds=None) as gql:
        yield gql


@pytest.fixture
async def lifecycle(db: Any) -> Lifecycle:
    # Collections exist before any transaction writes to them, as the server's lifespan guarantees.
    await ensure_indexes(db)
    return Lifecycle(db)


async def test_expire_overdue_fails_exactly_the_overdue_active_tasks(db: Any, lifecycle: Lifecycle) -> None:
    now = utcnow()
    past = (now - dt.timedelta(minutes=1)).replace(microsecond=0)
    await db.agent_task_states.insert_many(
        [
            task("running", "in_progress", attempts=1, expires_at=past),
            task("waiting", "pending", expires_at=past - dt.timedelta(hours=1)),
            task("blocked", "awaiting_dependency", expires_at=past),
            task("due_now", "retrying", attempts=1, expires_at=now),
            task("done", "completed", expires_at=past),
            task("cancelled", "cancelled", expires_at=past),
            task("later", "in_progress", attempts=1, expires_at=now + dt.timedelta(hours=1)),
            task("no_expiry", "in_progress", attempts=1),
            # Written by another program: a spelled-out status and an ISO-string deadline.
            {"_id": "foreign", "agent_name": "X", "status": "In Progress", "expires_at": past.isoformat()},
            {"_id": "foreign_done", "agent_name": "X", "status": "Completed", "expires_at": past.isoformat()},
        ]
    )
    untouched = ["done", "cancelled", "later", "no_expiry", "foreign_done"]
    before = {d["_id"]: d async for d in db.agent_task_states.find({"_id": {"$in": untouched}})}

    expired = await expire_overdue(lifecycle, now)

    assert sorted(expired) == ["blocked", "due_now", "foreign", "running", "waiting"]
    for task_id in expired:
        stored = await db.agent_task_states.find_one({"_id": task_id})
        assert stored["status"] == "failed"
        assert stored["version"] == (2 if task_id != "foreign" else 1)  # foreign documents start at 0
        assert stored["last_error"]["message"].startswith("task expired at ")
        assert stored["last_error"]["details"] == DETAILS
    running = await db.agent_task_states.find_one({"_id": "running"})
    assert running["last_error"]["message"] == expired_message(past)
    assert running["attempts"] == 1

    events = [e async for e in db.task_events.find({"task_id": "running"}).sort("_id", 1)]
    assert [e["type"] for e in events] == ["STATUS_CHANGED", "TASK_FAILED"]
    assert events[0]["payload"] == {"task_id": "running", "from_status": "in_progress", "to_status": "failed"}
    assert events[1]["payload"] == {
        "task_id": "running",
        "status": "failed",
        "error": expired_message(past),
        "is_final": True,
        "details": DETAILS,
    }
    assert await db.task_events.count_documents({"type": "TASK_FAILED"}) == len(expired)
    assert await db.task_events.count_documents({"task_id": {"$in": untouched}}) == 0
    after = {d["_id"]: d async for d in db.agent_task_states.find({"_id": {"$in": untouched}})}
    assert after == before

    assert await expire_overdue(lifecycle, now) == []  # nothing left to do


async def test_expire_overdue_works_in_batches_oldest_deadline_first(db: Any, lifecycle: Lifecycle) -> None:
    now = utcnow()
    await db.agent_task_states.insert_many(
        [task(f"t{i}", "pending", expires_at=now - dt.timedelta(minutes=10 - i)) for i in range(5)]
    )
    assert await expire_overdue(lifecycle, batch=2) == ["t0", "t1"]
    assert await expire_overdue(lifecycle, batch=2) == ["t2", "t3"]
    assert await expire_overdue(lifecycle, batch=2) == ["t4"]
    assert await expire_overdue(lifecycle, batch=2) == []


async def test_concurrent_sweeps_expire_each_task_once(db: Any, lifecycle: Lifecycle) -> None:
    past = utcnow() - dt.timedelta(seconds=1)
    ids = [f"t{i}" for i in range(8)]
    await db.agent_task_states.insert_many([task(i, "in_progress", attempts=1, expires_at=past) for i in ids])
    # Two "processes": separate Lifecycle objects over the same database.
    first, second = await asyncio.gather(expire_overdue(lifecycle), expire_overdue(Lifecycle(db)))
    assert sorted(first + second) == ids  # every task expired by exactly one of them
    for task_id in ids:
        assert await db.task_events.count_documents({"task_id": task_id, "type": "TASK_FAILED"}) == 1
        assert await db.task_events.count_documents({"task_id": task_id, "type": "STATUS_CHANGED"}) == 1
        assert (await db.agent_task_states.find_one({"_id": task_id}))["version"] == 2


async def test_sweeper_in_the_lifespan_expires_a_task_by_itself(settings: Settings, db: Any) -> None:
    async with serving(settings, sweep_seconds=0.1) as gql:
        await db.agent_task_states.insert_one(
            task("t1", "in_progress", attempts=1, expires_at=utcnow() + dt.timedelta(milliseconds=300))
        )

        async def swept() -> bool:
            return (await db.agent_task_states.find_one({"_id": "t1"}))["status"] == "failed"

        await until(swept)
        state = (await gql.data('{ agentTask(id: "t1") { status version lastError { message } } }'))[
            "agentTask"
        ]
        assert state["status"] == "FAILED" and state["version"] == 2
        assert state["lastError"]["message"].startswith("task expired at ")
        assert await db.task_events.count_documents({"task_id": "t1", "type": "TASK_FAILED"}) == 1
    # The lifespan stopped the sweeper and awaited it: nothing is left running.
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "expiry-sweeper"]


async def test_sweeper_survives_errors_and_stops_promptly(
    db: Any, lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def flaky_clock() -> dt.datetime:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("clock hiccup")
        return utcnow()

    await db.agent_task_states.insert_one(task("t1", "pending", expires_at=utcnow()))
    sweeper = ExpirySweeper(Lifecycle(db, clock=flaky_clock), interval=0.05)
    with caplog.at_level(logging.ERROR, logger="agent_tasks.expiry"):
        sweeper.start()
        try:

            async def swept() -> bool:
                return (await db.agent_task_states.find_one({"_id": "t1"}))["status"] == "failed"

            await until(swept)
        finally:
            await asyncio.wait_for(sweeper.stop(), timeout=30)
    assert "expiry sweep failed" in caplog.text and "clock hiccup" in caplog.text
    assert not sweeper.running

    idle = ExpirySweeper(lifecycle, interval=3600)
    idle.start()
    await asyncio.sleep(0.1)  # let it finish its first sweep and go to sleep
    await asyncio.wait_for(idle.stop(), timeout=30)  # cancels the long sleep (of an hour)
    assert not idle.running
    await idle.stop()  # stopping twice is harmless


async def test_sweeper_logs_a_foreign_task_with_an_objectid_as_expired_not_as_a_failure(
    db: Any, lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program inserted a state without `_id`: MongoDB gave it an ObjectId. Expiring it must be
    reported as an expiry, not as a failed sweep."""
    oid = ObjectId()
    await db.agent_task_states.insert_one(
        {"_id": oid, "agent_name": "X", "status": "in_progress", "expires_at": utcnow()}
    )
    sweeper = ExpirySweeper(lifecycle, interval=3600)
    with caplog.at_level(logging.INFO, logger="agent_tasks.expiry"):
        sweeper.start()
        try:

            async def swept() -> bool:
                return (await db.agent_task_states.find_one({"_id": oid}))["status"] == "failed"

            await until(swept)
            await until(lambda: _logged(caplog, "expired 1 overdue task(s)"))
        finally:
            await sweeper.stop()
    assert str(oid) in caplog.text
    assert "expiry sweep failed" not in caplog.text


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


async def test_reads_show_an_overdue_task_as_failed_before_the_sweep(
    quiet_gql: GraphQLClient, db: Any
) -> None:
    past = (utcnow() - dt.timedelta(minutes=5)).replace(microsecond=0)
    await db.agent_task_states.insert_many(
        [
            task("t1", "in_progress", attempts=1, expires_at=past),
            task("t2", "in_progress", attempts=1, expires_at=utcnow() + dt.timedelta(hours=1)),
        ]
    )
    await load_demo(db)
    # One in-progress behavior task of the demo workflow is now overdue.
    await db.agent_task_states.update_one({"_id": "beh_write_script"}, {"$set": {"expires_at": past}})

    fields = "id status version lastError { message details timestamp }"
    state = (await quiet_gql.data(f'{{ agentTask(id: "t1") {{ {fields} }} }}'))["agentTask"]
    assert state["status"] == "FAILED" and state["version"] == 1
    assert state["lastError"]["message"] == expired_message(past)
    assert state["lastError"]["details"] == DETAILS
    assert state["lastError"]["timestamp"] is not None

    page = await quiet_gql.data(
        f"query($f: JSON) {{ agentTasks(filter: $f) {{ edges {{ node {{ {fields} }} }} }} }}",
        {"f": {"task_id": {"$in": ["t1", "t2"]}}},
    )
    nodes = {e["node"]["id"]: e["node"] for e in page["agentTasks"]["edges"]}
    assert nodes["t1"]["status"] == "FAILED"
    assert nodes["t1"]["lastError"]["message"] == expired_message(past)
    assert nodes["t2"]["status"] == "IN_PROGRESS" and nodes["t2"]["lastError"] is None

    tree = (
        await quiet_gql.data(
            """query($id: ID!) { metaWorkflowTask(id: $id) {
                 progress { failed inProgress counts { status count } }
                 subTasks { behaviorTasks { id state { status lastError { message } } } } } }""",
            {"id": DEMO_WORKFLOW_ID},
        )
    )["metaWorkflowTask"]
    progress = tree["progress"]
    counts = {c["status"]: c["count"] for c in progress["counts"]}
    # The demo has two tasks in progress (test_tree); the overdue one now counts as failed.
    assert progress["inProgress"] == counts["IN_PROGRESS"] == 1
    assert progress["failed"] == counts["FAILED"] == 1
    write = next(b for s in tree["subTasks"] for b in s["behaviorTasks"] if b["id"] == "beh_write_script")
    assert write["state"]["status"] == "FAILED"
    assert write["state"]["lastError"]["message"] == expired_message(past)

    # Only the reads changed: the stored documents still say running, and no event was written.
    for task_id in ("t1", "beh_write_script"):
        assert (await db.agent_task_states.find_one({"_id": task_id}))["status"] == "in_progress"
    assert await db.task_events.count_documents({"type": "TASK_FAILED"}) == 0


async def test_start_of_an_expired_pending_task_is_refused_and_changes_nothing(
    quiet_gql: GraphQLClient, db: Any
) -> None:
    await db.agent_task_states.insert_one(
        task("t1", "pending", expires_at=utcnow() - dt.timedelta(seconds=1))
    )
    before = await snapshot(db)
    r = (await quiet_gql.data(mutation("startTask", 'id: "t1"')))["r"]
    assert r["__typename"] == "TransitionError"
    assert "expired" in r["message"]
    assert await snapshot(db) == before
    # claimTask never hands it out either.
    claimed = await quiet_gql.data('mutation { r: claimTask(agentName: "AgentA") { __typename } }')
    assert claimed["r"]["__typename"] == "NothingToClaim"
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    ("name", "args"), [("completeTask", ""), ("reportProgress", "percentage: 50"), ("failTask", 'error: "x"')]
)
async def test_an_expired_task_refuses_every_change_before_the_sweep(
    quiet_gql: GraphQLClient, db: Any, name: str, args: str
) -> None:
    await db.agent_task_states.insert_one(
        task("t1", "in_progress", attempts=1, expires_at=utcnow() - dt.timedelta(seconds=1))
    )
    before = await snapshot(db)
    r = (await quiet_gql.data(mutation(name, f'id: "t1" {args}')))["r"]
    assert r["__typename"] == "TransitionError"
    assert r["currentStatus"] == "FAILED" and "has expired" in r["message"]
    assert await snapshot(db) == before
