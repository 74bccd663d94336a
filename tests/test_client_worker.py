"""The client's worker loop against a real server process: 8 concurrent handlers over 200 tasks with
seeded random failures, a worker killed with SIGKILL mid-task whose task another worker finishes, and a
graceful stop."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from agent_tasks_client import AgentTasksClient, ClaimedTask, FatalError, LeaseLost, RetryableError
from tests.support.graphql import wait_for_subscribers
from tests.support.polling import until
from tests.support.servers import ROOT, ServerGroup, ServerProcess

SEED = 20261123
MAX_ATTEMPTS = 3
#: The module's server's database (the batch test reads the events it wrote).
DB = f"worker_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    # Leases lapse within a fifth of a second of their expiry (the crash test waits for one).
    return module_servers.start("worker", {"EXPIRY_SWEEP_SECONDS": "0.2"}, db_name=DB)


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AgentTasksClient]:
    async with AgentTasksClient(server.url, timeout=60) as c:
        yield c


def outcome(task_id: str, attempt: int) -> str:
    """What the handler does on this attempt: "ok", "retry" or "fatal" (seeded: the test can predict it)."""
    roll = random.Random(f"{SEED}:{task_id}:{attempt}").random()
    return "retry" if roll < 0.25 else "fatal" if roll < 0.30 else "ok"


def expected(task_id: str) -> tuple[str, int]:
    """The status and attempts the failure policy leads to for this task."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        what = outcome(task_id, attempt)
        if what == "ok":
            return "completed", attempt
        if what == "fatal":
            return "failed", attempt
    return "failed", MAX_ATTEMPTS


async def test_eight_handlers_over_two_hundred_tasks(client: AgentTasksClient) -> None:
    name = f"Bulk-{uuid.uuid4().hex[:8]}"
    ids: list[str] = []
    for batch in range(10):
        created = await asyncio.gather(
            *(
                client.create_agent_task(name, id=f"{name}-{batch * 20 + i:03d}", max_attempts=MAX_ATTEMPTS)
                for i in range(20)
            )
        )
        ids.extend(s.id for s in created)
    in_flight = 0
    most = 0
    handled: Counter[tuple[str, int]] = Counter()

    async def handler(task: ClaimedTask) -> dict[str, object]:
        nonlocal in_flight, most
        handled[task.id, task.attempt] += 1
        in_flight += 1
        most = max(most, in_flight)
        try:
            rng = random.Random(f"{SEED}:{task.id}:{task.attempt}:sleep")
            await asyncio.sleep(rng.uniform(0.005, 0.05))
            if rng.random() < 0.2:
                await task.progress(50, "halfway")
            what = outcome(task.id, task.attempt)
            if what == "retry":
                raise RetryableError(f"flaky tool on attempt {task.attempt}")
            if what == "fatal":
                raise FatalError("the input is unusable")
            if rng.random() < 0.1:  # the handler may complete the task itself
                await task.complete({"by": "handler", "attempt": task.attempt})
                return {}
            return {"attempt": task.attempt}
        finally:
            in_flight -= 1

    async with client.worker(name, handler, concurrency=8, lease_seconds=30, poll_max=0.5) as worker:
        # Idle is a moment: every slot found nothing to claim. A task failed an instant before can still
        # be passed over by this server process for up to CLAIM_LINGER_SECONDS (its claimers skip what
        # they picked a moment ago), so idle is awaited again until no task is left to run.
        async with asyncio.timeout(600):
            while True:
                await worker.wait_idle()
                states = await asyncio.gather(*(client.get_task(i) for i in ids))
                if all(s is not None and s.status in ("completed", "failed") for s in states):
                    break
                await asyncio.sleep(0.2)
    stats = worker.stats

    states = {s.id: s for s in await asyncio.gather(*(client.get_task(i) for i in ids)) if s is not None}
    assert len(states) == 200
    # Every task ended as the policy says: completed, or failed (fatal error, or attempts used up).
    assert {i: (states[i].status, states[i].attempts) for i in ids} == {i: expected(i) for i in ids}
    completed = {i for i in ids if states[i].status == "completed"}
    assert 0 < len(completed) < 200

    events = await client.all_events(agent_id=name)
    completions = Counter(e.task_id for e in events if e.type == "TASK_COMPLETED")
    assert completions == Counter(completed)  # exactly one TASK_COMPLETED per completed task, none else
    claims = Counter(
        e.task_id for e in events if e.type == "STATUS_CHANGED" and e.data["toStatus"] == "IN_PROGRESS"
    )
    assert claims == Counter({i: states[i].attempts for i in ids})  # every attempt accounted for
    failures = [e for e in events if e.type == "TASK_FAILED"]
    assert all(count == 1 for count in handled.values())  # no attempt ran twice
    assert sum(handled.values()) == sum(s.attempts for s in states.values())

    assert stats.claimed == sum(s.attempts for s in states.values())
    assert (stats.completed, stats.failed, stats.lost, stats.errors) == (len(completed), len(failures), 0, 0)
    assert stats.fatal == sum(1 for e in failures if e.data["isFinal"] and "unusable" in e.data["error"])
    assert 2 <= most <= 8


async def test_a_killed_worker_s_task_is_finished_by_another(client: AgentTasksClient) -> None:
    name = f"Crash-{uuid.uuid4().hex[:8]}"
    task_id = (await client.create_agent_task(name, max_attempts=3)).id
    doomed = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "support" / "crash_worker.py"),
        client.endpoint,
        name,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert doomed.stdout is not None
        line = await asyncio.wait_for(doomed.stdout.readline(), 60)
        assert json.loads(line) == {"id": task_id, "attempt": 1}
        # Its heartbeats keep the 2-second lease alive while it lives.
        await asyncio.sleep(3)
        alive = await client.get_task(task_id)
        assert alive is not None and (alive.status, alive.attempts, alive.lease_holder) == (
            "in_progress",
            1,
            "doomed",
        )
        doomed.send_signal(signal.SIGKILL)
    finally:
        if doomed.returncode is None:
            doomed.kill()
        await doomed.wait()

    finished: list[ClaimedTask] = []

    async def handler(task: ClaimedTask) -> str:
        finished.append(task)
        return "done by the survivor"

    async with client.worker(name, handler, lease_seconds=30, worker_id="survivor", poll_max=0.3) as worker:
        # Nothing to claim until the lease lapses (2 s after the last heartbeat) and the sweeper runs.
        await until(lambda: worker.stats.completed == 1, within=60)
    assert [(t.id, t.attempt) for t in finished] == [(task_id, 2)]
    completion = [e for e in await client.all_events(task_id=task_id) if e.type == "TASK_COMPLETED"]
    assert completion[0].data["result"] == {"value": "done by the survivor"}

    events = await client.all_events(task_id=task_id)
    story = [
        (e.type, e.data.get("toStatus") or e.data.get("leaseStatus"))
        for e in events
        if e.type in ("STATUS_CHANGED", "LEASE_EXPIRED", "TASK_COMPLETED")
    ]
    assert story == [
        ("STATUS_CHANGED", "IN_PROGRESS"),  # claimed by the doomed worker: attempt 1
        ("STATUS_CHANGED", "RETRYING"),  # its lease lapsed
        ("LEASE_EXPIRED", "RETRYING"),
        ("STATUS_CHANGED", "IN_PROGRESS"),  # claimed by the survivor: attempt 2
        ("STATUS_CHANGED", "COMPLETED"),
        ("TASK_COMPLETED", None),
    ], story
    lapse = next(e for e in events if e.type == "LEASE_EXPIRED")
    assert (lapse.data["holder"], lapse.data["attempt"]) == ("doomed", 1)
    final = await client.get_task(task_id)
    assert final is not None and (final.status, final.attempts) == ("completed", 2)
    # A late completion by attempt 1 is refused and changes nothing.
    with pytest.raises(LeaseLost) as late:
        await client.complete(task_id, result="zombie", attempt=1)
    assert (late.value.current_attempt, late.value.current_holder, late.value.current_status) == (
        2,
        None,
        "completed",
    )
    after = await client.get_task(task_id)
    assert after is not None and after.version == final.version


async def test_stopping_waits_for_handlers_then_cancels_them(client: AgentTasksClient) -> None:
    name = f"Stop-{uuid.uuid4().hex[:8]}"
    quick = (await client.create_agent_task(name, name="quick", priority="urgent")).id
    slow = (await client.create_agent_task(name, name="slow", priority="high")).id
    started = asyncio.Event()
    running: set[str] = set()

    async def handler(task: ClaimedTask) -> str:
        running.add(task.id)
        if len(running) == 2:
            started.set()
        await asyncio.sleep(0.3 if task.id == quick else 3600)
        return "done"

    worker = client.worker(name, handler, concurrency=2, lease_seconds=30)
    async with worker:
        await asyncio.wait_for(started.wait(), 60)
        await worker.stop(grace_seconds=2)
    assert (worker.stats.claimed, worker.stats.completed) == (2, 1)
    quick_state, slow_state = await client.get_task(quick), await client.get_task(slow)
    assert quick_state is not None and quick_state.status == "completed"  # finished within the grace period
    # Cancelled after it: still in progress on the server, until its lease lapses.
    assert slow_state is not None and (slow_state.status, slow_state.lease_holder) == (
        "in_progress",
        worker.worker_id,
    )
    assert await client.claim(f"{name}-nobody") is None


async def test_a_handler_whose_task_moved_on_is_cancelled_and_its_result_dropped(
    client: AgentTasksClient,
) -> None:
    """Cancelled on the server while its handler runs: the next heartbeat is refused, the handler is
    cancelled, nothing is completed, and the worker counts the task as lost."""
    name = f"Moved-{uuid.uuid4().hex[:8]}"
    task_id = (await client.create_agent_task(name)).id
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(task: ClaimedTask) -> str:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async with client.worker(name, handler, lease_seconds=30, heartbeat_every=0.2) as worker:
        await asyncio.wait_for(started.wait(), 60)
        await client.cancel(task_id, reason="the user changed their mind")
        await asyncio.wait_for(cancelled.wait(), 60)
        await until(lambda: worker.stats.lost == 1, within=30)
    assert (worker.stats.claimed, worker.stats.completed, worker.stats.failed) == (1, 0, 0)
    state = await client.get_task(task_id)
    assert state is not None and state.status == "cancelled"
    assert not [e for e in await client.all_events(task_id=task_id) if e.type == "TASK_COMPLETED"]


async def test_an_idle_worker_is_woken_by_the_agent_s_events(
    server: ServerProcess, client: AgentTasksClient
) -> None:
    """With `wake_on_events`, a slot sleeping on a long poll claims a new task when it is created, long
    before the poll would come round again."""
    name = f"Wake-{uuid.uuid4().hex[:8]}"
    handled: list[str] = []

    async def handler(task: ClaimedTask) -> None:
        handled.append(task.id)

    async with client.worker(name, handler, poll_min=600, poll_max=600, wake_on_events=True) as worker:
        await asyncio.wait_for(worker.wait_idle(), 60)  # found nothing: sleeping for 10 minutes
        await wait_for_subscribers(server.url, 1)  # its subscription (from HEAD) is registered
        task_id = (await client.create_agent_task(name)).id
        await until(lambda: worker.stats.completed == 1, within=60)
    assert handled == [task_id]


async def test_claim_many_starts_a_batch_with_a_token_each(client: AgentTasksClient) -> None:
    name = f"Many-{uuid.uuid4().hex[:8]}"
    for i in range(5):
        await client.create_agent_task(name, id=f"{name}-{i}")
    batch = await client.claim_many(name, 3, worker_id="w-many", lease_seconds=600)
    assert [t.id for t in batch] == [f"{name}-{i}" for i in range(3)]  # one priority: oldest first
    assert all(t.attempt == 1 and t.state.lease_holder == "w-many" for t in batch)
    for t in batch:
        await t.complete({"n": t.id})
    rest = await client.claim_many(name, 10, worker_id="w-many")
    assert [t.id for t in rest] == [f"{name}-3", f"{name}-4"]
    assert await client.claim_many(name, 10) == []


@pytest.mark.parametrize("claim_batch", [None, 1])
async def test_free_slots_claim_together_in_one_batch(
    client: AgentTasksClient, mongo_uri: str, claim_batch: int | None
) -> None:
    """Six slots and six ready tasks: the tasks go out in batches (their STATUS_CHANGED events share a
    request), every task once; with `claim_batch=1`, one claimTask per task."""
    from pymongo import AsyncMongoClient

    name = f"Slots-{uuid.uuid4().hex[:8]}"
    ids = [(await client.create_agent_task(name, id=f"{name}-{i}")).id for i in range(6)]
    running: set[str] = set()
    all_running = asyncio.Event()

    async def handle(task: ClaimedTask) -> None:
        running.add(task.id)
        if len(running) == len(ids):
            all_running.set()
        await all_running.wait()  # every slot holds its task until all six run at once

    async with client.worker(name, handle, concurrency=6, claim_batch=claim_batch) as worker:
        async with asyncio.timeout(60):
            await all_running.wait()
            await until(lambda: worker.stats.completed == len(ids), within=60)
    assert worker.stats.claimed == len(ids) and running == set(ids)
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_uri)
    try:
        events = mongo[DB].task_events.find(
            {"task_id": {"$in": ids}, "type": "STATUS_CHANGED", "payload.to_status": "in_progress"}
        )
        per_request = Counter([str(e["request_id"]) async for e in events])
    finally:
        await mongo.close()
    assert sum(per_request.values()) == len(ids)  # each task started once
    if claim_batch == 1:
        assert set(per_request.values()) == {1}
    else:
        assert max(per_request.values()) > 1, per_request
