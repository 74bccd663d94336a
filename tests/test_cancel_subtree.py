"""Cascading cancel (issue 21 part 4) against a real server process over HTTP: `cancelTask(scope:
SUBTREE)` on a 1 x 20 x 50 workflow (plus a seed 001 sub-task below a behavior task) cancels every
unfinished task once, with STATUS_CHANGED and TASK_CANCELLED (reason, root, actor) each, leaves nothing
claimable and finished tasks alone; the holder of a running one learns it from its next heartbeat
(`LeaseLost.cancel_requested`) and every later write with its attempt is refused; the client's worker
cancels the handler."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent_tasks_client import AgentTasksClient, ClaimedTask, LeaseLost
from tests.support.polling import DEADLINE, until
from tests.support.servers import ServerGroup, ServerProcess

SUBS, BEHAVIORS = 20, 50


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    return module_servers.start("cancel")


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AgentTasksClient]:
    async with AgentTasksClient(server.url, timeout=120) as c:
        yield c


async def build_tree(client: AgentTasksClient, agent: str) -> tuple[str, list[str]]:
    """A meta task with SUBS sub-tasks of BEHAVIORS behavior tasks each; every id, root first."""
    root = f"m-{uuid.uuid4().hex[:8]}"
    await client.create_workflow({"id": root, "state": {"agentName": agent}})
    ids = [root]
    create = """mutation($i: CreateSubTaskInput!) { createSubTask(input: $i) { __typename } }"""
    for s in range(SUBS):
        sub = f"{root}-s{s}"
        behaviors = [{"id": f"{sub}-b{b}", "state": {"agentName": agent}} for b in range(BEHAVIORS)]
        data = await client.execute(
            create,
            {"i": {"taskId": root, "id": sub, "state": {"agentName": agent}, "behaviorTasks": behaviors}},
        )
        assert data["createSubTask"]["__typename"] == "SubTaskSuccess", data
        ids += [sub, *(b["id"] for b in behaviors)]
    return root, ids


async def test_cancel_a_1x20x50_subtree(client: AgentTasksClient) -> None:
    agent = f"Cancel-{uuid.uuid4().hex[:8]}"
    root, ids = await build_tree(client, agent)
    assert len(ids) == 1 + SUBS + SUBS * BEHAVIORS == 1021
    # A seed 001 sub-task below a behavior task is part of the subtree too.
    deep = await client.create_agent_task(agent, parent_task_id=ids[-1])
    ids.append(deep.id)
    # One task running under a lease, one already completed.
    running = await client.claim(agent, lease_seconds=60)
    assert running is not None
    done = await client.claim(agent)
    assert done is not None
    await done.complete({"ok": True})

    started = time.perf_counter()
    state = await client.cancel(root, reason="the user stopped the run", subtree=True)
    elapsed = time.perf_counter() - started
    print(f"cancelled a subtree of {len(ids)} tasks in {elapsed:.2f} s")
    assert state.status == "cancelled"

    events = await client.all_events(workflow_id=root, types=["TASK_CANCELLED"])
    events += await client.all_events(task_id=deep.id, types=["TASK_CANCELLED"])
    per_task = Counter(e.task_id for e in events)
    assert set(per_task) == set(ids) - {done.id} and set(per_task.values()) == {1}
    assert all(
        e.data["reason"] == "the user stopped the run" and e.data["rootTaskId"] == root for e in events
    )
    actor = await client.execute(
        "query($id: ID!) { taskEvents(taskId: $id, types: [TASK_CANCELLED]) { edges { node { actor { kind } } } } }",
        {"id": ids[-2]},
    )
    assert actor["taskEvents"]["edges"][0]["node"]["actor"] == {"kind": "ANONYMOUS"}
    finished = await client.get_task(done.id)
    assert finished is not None and finished.status == "completed"
    assert await client.claim(agent) is None  # nothing left claimable

    # The running task's holder learns it from its next heartbeat; later writes with its attempt fail.
    with pytest.raises(LeaseLost) as lost:
        await running.heartbeat()
    assert lost.value.cancel_requested and lost.value.current_status == "cancelled"
    with pytest.raises(LeaseLost):
        await running.complete({"late": True})
    with pytest.raises(LeaseLost):
        await running.progress(50)

    # Again: nothing left to cancel, nothing written twice.
    await client.cancel(root, subtree=True)
    again = await client.all_events(workflow_id=root, types=["TASK_CANCELLED"])
    assert len(again) == len(events) - 1  # (the deep task's event is not filed under the workflow)


async def test_the_worker_cancels_its_handler(client: AgentTasksClient) -> None:
    agent = f"CancelW-{uuid.uuid4().hex[:8]}"
    parent = await client.create_agent_task(agent)
    child = await client.create_agent_task(agent, parent_task_id=parent.id, priority="urgent")
    started, stopped = asyncio.Event(), asyncio.Event()

    async def handler(task: ClaimedTask) -> Any:
        assert task.id == child.id
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise

    async with client.worker(agent, handler, lease_seconds=5, heartbeat_every=0.3, poll_max=0.2) as worker:
        await asyncio.wait_for(started.wait(), DEADLINE)
        await client.cancel(parent.id, reason="stop", subtree=True)
        await asyncio.wait_for(stopped.wait(), DEADLINE)  # on the next heartbeat (every 0.3 s)
        await until(lambda: worker.stats.cancelled == 1, "the worker to count the cancellation")
    state = await client.get_task(child.id)
    assert state is not None and state.status == "cancelled"


async def test_rest_cancel(server: ServerProcess, client: AgentTasksClient) -> None:
    agent = f"CancelR-{uuid.uuid4().hex[:8]}"
    parent = await client.create_agent_task(agent)
    child = await client.create_agent_task(agent, parent_task_id=parent.id)
    alone = await client.create_agent_task(agent)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        bad = await http.post(f"/agent-tasks/{parent.id}/cancel?scope=everything")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_parameter", bad.text
        one = await http.post(f"/agent-tasks/{alone.id}/cancel?reason=no")
        assert one.status_code == 200 and one.json()["status"] == "cancelled", one.text
        tree = await http.post(f"/agent-tasks/{parent.id}/cancel?scope=subtree&reason=stop")
        assert tree.status_code == 200 and tree.json()["status"] == "cancelled", tree.text
        again = await http.post(f"/agent-tasks/{alone.id}/cancel")
        assert again.status_code == 409, again.text
    state = await client.get_task(child.id)
    assert state is not None and state.status == "cancelled"
    (event,) = (await client.events(task_id=child.id, types=["TASK_CANCELLED"])).events
    assert event.data["reason"] == "stop" and event.data["rootTaskId"] == parent.id
