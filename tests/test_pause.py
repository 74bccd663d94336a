"""Pause and resume (issue 21 part 5) against a real server process over HTTP (GraphQL, REST, the client):

- pending / retrying / awaiting_dependency → paused (pausedFrom, pausedAt), never claimed or started, with
  STATUS_CHANGED and TASK_PAUSED {fromStatus toStatus reason rootTaskId} and the caller as actor; resume
  restores it (retrying keeps its nextAttemptAt; a dependency met during the pause is honoured: pending);
- a running task keeps running with pauseRequested (its worker is not fenced): complete completes it; a
  failure that would retry, or a lapsed lease, pauses it (pausedFrom retrying); resume withdraws a request;
- pausing a paused task / resuming an unpaused one writes nothing; a finished task is refused;
- a paused task does not expire while paused; once resumed, a passed expiresAt fails it;
- a subtree (1 × 3 × 4 workflow) pauses and resumes as a whole, root first; REST routes do the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent_tasks_client import AgentTasksClient, TransitionRefused
from tests.support.polling import until
from tests.support.servers import ServerGroup, ServerProcess


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    return module_servers.start("pause", {"EXPIRY_SWEEP_SECONDS": "0.2"})


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AgentTasksClient]:
    async with AgentTasksClient(server.url, timeout=60) as c:
        yield c


def agent() -> str:
    return f"Pause-{uuid.uuid4().hex[:8]}"


async def events_of(client: AgentTasksClient, task_id: str, *types: str) -> list[Any]:
    return await client.all_events(task_id=task_id, types=list(types))


async def test_pause_and_resume_a_pending_task(client: AgentTasksClient) -> None:
    name = agent()
    task = await client.create_agent_task(name)
    paused = await client.pause(task.id, reason="hold on")
    assert paused.status == "paused" and paused.paused_from == "pending" and paused.paused_at is not None
    assert paused.version == task.version + 1
    assert await client.claim(name) is None  # never claimable
    with pytest.raises(TransitionRefused) as refused:
        await client.start(task.id)
    assert refused.value.current_status == "paused" and "cannot start a task that is paused" in str(
        refused.value
    )

    (changed,) = await events_of(client, task.id, "STATUS_CHANGED")
    assert changed.data["fromStatus"] == "PENDING" and changed.data["toStatus"] == "PAUSED"
    (event,) = await events_of(client, task.id, "TASK_PAUSED")
    assert event.data["reason"] == "hold on" and event.data["pauseFrom"] == "PENDING"
    assert event.data["pauseTo"] == "PAUSED" and event.data["rootTaskId"] is None
    actor = await client.execute(
        "query($id: ID!) { taskEvents(taskId: $id, types: [TASK_PAUSED]) { edges { node { actor { kind } } } } }",
        {"id": task.id},
    )
    assert actor["taskEvents"]["edges"][0]["node"]["actor"] == {"kind": "ANONYMOUS"}

    # Pausing again writes nothing.
    again = await client.pause(task.id)
    assert again.version == paused.version and len(await events_of(client, task.id, "TASK_PAUSED")) == 1

    resumed = await client.resume(task.id, reason="go")
    assert resumed.status == "pending" and resumed.paused_from is None and resumed.paused_at is None
    (event,) = await events_of(client, task.id, "TASK_RESUMED")
    assert event.data["resumeFrom"] == "PAUSED" and event.data["resumeTo"] == "PENDING"
    assert event.data["reason"] == "go"
    # Resuming a task that is not paused writes nothing.
    assert (await client.resume(task.id)).version == resumed.version
    claimed = await client.claim(name)
    assert claimed is not None and claimed.id == task.id


async def test_retrying_keeps_its_next_attempt(client: AgentTasksClient) -> None:
    name = agent()
    task = await client.create_agent_task(name)
    claimed = await client.claim(name)
    assert claimed is not None
    await claimed.fail("transient", next_retry_delay=600)
    retrying = await client.get_task(task.id)
    assert retrying is not None and retrying.status == "retrying" and retrying.next_attempt_at is not None
    paused = await client.pause(task.id)
    assert paused.paused_from == "retrying" and paused.next_attempt_at == retrying.next_attempt_at
    resumed = await client.resume(task.id)
    assert resumed.status == "retrying" and resumed.next_attempt_at == retrying.next_attempt_at


async def test_a_dependency_met_during_the_pause_is_honoured(client: AgentTasksClient) -> None:
    name = agent()
    first = await client.create_agent_task(name, priority="urgent")
    waiting = await client.create_agent_task(name, dependencies=[{"taskId": first.id}])
    other = await client.create_agent_task(name, dependencies=[{"taskId": first.id}])
    assert waiting.status == "awaiting_dependency"
    paused = await client.pause(waiting.id)
    assert paused.paused_from == "awaiting_dependency"
    claimed = await client.claim(name)
    assert claimed is not None and claimed.id == first.id
    await claimed.complete({"ok": True})
    # The task not paused was released; the paused one stays paused (not released while paused).
    released = await client.get_task(other.id)
    assert released is not None and released.status == "pending"
    still = await client.get_task(waiting.id)
    assert still is not None and still.status == "paused"
    resumed = await client.resume(waiting.id)
    assert resumed.status == "pending"  # its dependency is met now

    # And one whose dependency is still unmet goes back to waiting.
    blocker = await client.create_agent_task(name)
    blocked = await client.create_agent_task(name, dependencies=[{"taskId": blocker.id}])
    await client.pause(blocked.id)
    assert (await client.resume(blocked.id)).status == "awaiting_dependency"


async def test_a_running_task_finishes_its_attempt(client: AgentTasksClient) -> None:
    name = agent()
    task = await client.create_agent_task(name, max_attempts=5)
    claimed = await client.claim(name, lease_seconds=60)
    assert claimed is not None
    asked = await client.pause(task.id, reason="after this attempt")
    assert asked.status == "in_progress" and asked.pause_requested and asked.paused_from is None
    (event,) = await events_of(client, task.id, "TASK_PAUSED")
    assert event.data["pauseTo"] == "IN_PROGRESS" and event.data["pauseRequested"] is True
    beat = await claimed.heartbeat()  # the worker is not fenced
    assert beat.pause_requested and beat.status == "in_progress"
    assert (await client.pause(task.id)).version == beat.version  # asked already: nothing written
    await claimed.fail("boom")  # would retry: pauses instead
    paused = await client.get_task(task.id)
    assert paused is not None and paused.status == "paused" and paused.paused_from == "retrying"
    assert not paused.pause_requested
    assert len(await events_of(client, task.id, "TASK_FAILED")) == 1
    changes = [
        (e.data["fromStatus"], e.data["toStatus"]) for e in await events_of(client, task.id, "STATUS_CHANGED")
    ]
    assert changes[-1] == ("IN_PROGRESS", "PAUSED")
    assert await client.claim(name) is None
    assert (await client.resume(task.id)).status == "retrying"

    # Completing a pause-requested attempt completes the task.
    claimed = await client.claim(name)
    assert claimed is not None
    await client.pause(task.id)
    await claimed.complete({"done": True})
    done = await client.get_task(task.id)
    assert done is not None and done.status == "completed" and not done.pause_requested

    # A resume withdraws the request: the failure then retries as usual.
    other = await client.create_agent_task(name, max_attempts=5)
    claimed = await client.claim(name)
    assert claimed is not None and claimed.id == other.id
    await client.pause(other.id)
    withdrawn = await client.resume(other.id)
    assert withdrawn.status == "in_progress" and not withdrawn.pause_requested
    await claimed.fail("boom")
    retried = await client.get_task(other.id)
    assert retried is not None and retried.status == "retrying"


async def test_a_lapsed_lease_pauses_a_pause_requested_task(client: AgentTasksClient) -> None:
    name = agent()
    task = await client.create_agent_task(name, max_attempts=5)
    claimed = await client.claim(name, lease_seconds=1)
    assert claimed is not None
    await client.pause(task.id)

    async def paused() -> bool:
        state = await client.get_task(task.id)
        return state is not None and state.status == "paused"

    await until(paused)
    state = await client.get_task(task.id)
    assert state is not None and state.paused_from == "retrying"
    (lapse,) = await events_of(client, task.id, "LEASE_EXPIRED")
    assert lapse.data["leaseStatus"] == "PAUSED"


async def test_finished_tasks_are_refused(client: AgentTasksClient) -> None:
    name = agent()
    task = await client.create_agent_task(name)
    await client.cancel(task.id)
    for call in (client.pause, client.resume):
        with pytest.raises(TransitionRefused) as refused:
            await call(task.id)
        assert refused.value.current_status == "cancelled" and "a task that is cancelled" in str(
            refused.value
        )


async def test_a_paused_task_does_not_expire(client: AgentTasksClient) -> None:
    name = agent()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    task = await client.create_agent_task(name, extra={"expiresAt": expires.isoformat()})
    await client.pause(task.id)
    await asyncio.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.8)  # 4 sweeps
    state = await client.get_task(task.id)
    assert state is not None and state.status == "paused"
    assert await events_of(client, task.id, "TASK_FAILED") == []
    resumed = await client.resume(task.id)
    assert resumed.status == "failed"  # stored pending, shown failed: its expiresAt has passed

    async def failed() -> bool:
        return len(await events_of(client, task.id, "TASK_FAILED")) == 1

    await until(failed)


async def build_tree(client: AgentTasksClient, name: str) -> tuple[str, list[str]]:
    root = f"pm-{uuid.uuid4().hex[:8]}"
    subs = [
        {"id": f"{root}-s{s}", "state": {"agentName": name}, "behaviorTasks": [
            {"id": f"{root}-s{s}-b{b}", "state": {"agentName": name}} for b in range(4)
        ]}
        for s in range(3)
    ]  # fmt: skip
    await client.create_workflow({"id": root, "state": {"agentName": name}, "subTasks": subs})
    ids = [root] + [s["id"] for s in subs] + [b["id"] for s in subs for b in s["behaviorTasks"]]  # type: ignore[attr-defined]
    return root, ids


async def test_pause_and_resume_a_subtree(client: AgentTasksClient) -> None:
    name = agent()
    root, ids = await build_tree(client, name)
    running = await client.claim(name, task_kinds=["BEHAVIOR_TASK"])
    done = await client.claim(name, task_kinds=["BEHAVIOR_TASK"])
    assert running is not None and done is not None
    await done.complete({"ok": True})
    state = await client.pause(root, reason="freeze", subtree=True)
    assert state.status == "paused"
    events = await client.all_events(workflow_id=root, types=["TASK_PAUSED"])
    assert sorted(e.task_id for e in events) == sorted(set(ids) - {done.id})
    assert all(e.data["rootTaskId"] == root and e.data["reason"] == "freeze" for e in events)
    assert await client.claim(name) is None
    held = await client.get_task(running.id)
    assert held is not None and held.status == "in_progress" and held.pause_requested
    # Sent again: nothing more to pause.
    await client.pause(root, subtree=True)
    assert len(await client.all_events(workflow_id=root, types=["TASK_PAUSED"])) == len(events)

    await client.resume(root, subtree=True, reason="thaw")
    resumed = await client.all_events(workflow_id=root, types=["TASK_RESUMED"])
    assert sorted(e.task_id for e in resumed) == sorted(set(ids) - {done.id})
    statuses = {i: (await client.get_task(i)).status for i in ids}  # type: ignore[union-attr]
    assert statuses[done.id] == "completed" and statuses[running.id] == "in_progress"
    assert {s for i, s in statuses.items() if i not in (done.id, running.id)} == {"pending"}


async def test_rest_pause_and_resume(server: ServerProcess, client: AgentTasksClient) -> None:
    name = agent()
    parent = await client.create_agent_task(name)
    child = await client.create_agent_task(name, parent_task_id=parent.id)
    finished = await client.create_agent_task(name)
    await client.cancel(finished.id)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        bad = await http.post(f"/agent-tasks/{parent.id}/pause?scope=everything")
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "scope"
        paused = await http.post(f"/agent-tasks/{parent.id}/pause?scope=subtree&reason=wait")
        assert paused.status_code == 200, paused.text
        assert paused.json()["status"] == "paused" and paused.json()["paused_from"] == "pending"
        assert (await client.get_task(child.id)).status == "paused"  # type: ignore[union-attr]
        refused = await http.post(f"/agent-tasks/{finished.id}/pause")
        assert refused.status_code == 409 and refused.json()["error"]["current_status"] == "cancelled"
        missing = await http.post("/agent-tasks/nope/resume")
        assert missing.status_code == 404
        resumed = await http.post(f"/agent-tasks/{parent.id}/resume")  # the task alone
        assert resumed.status_code == 200 and resumed.json()["status"] == "pending"
        assert (await client.get_task(child.id)).status == "paused"  # type: ignore[union-attr]
        resumed = await http.post(f"/agent-tasks/{parent.id}/resume?scope=subtree")
        assert (await client.get_task(child.id)).status == "pending"  # type: ignore[union-attr]
