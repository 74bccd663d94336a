"""The Python client (`agent_tasks_client`) against a real `agent-tasks serve` process: every method,
the typed exception of each refusal, and `watch_events` resuming across a server restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from agent_tasks_client import (
    AgentTasksClient,
    AgentTasksError,
    Conflict,
    Event,
    LeaseLost,
    NotFound,
    TransitionRefused,
    TransportError,
    ValidationFailed,
)
from tests.support.polling import until
from tests.support.servers import ServerGroup, ServerProcess, free_port, serve


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    """One server process for the module (each test uses its own agent names and ids)."""
    return module_servers.start("client", {"EXPIRY_SWEEP_SECONDS": "0.2"})


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AgentTasksClient]:
    async with AgentTasksClient(server.url, timeout=30) as c:
        yield c


def agent() -> str:
    return f"Agent-{uuid.uuid4().hex[:8]}"


async def test_a_task_from_creation_to_completion(client: AgentTasksClient) -> None:
    name = agent()
    created = await client.create_agent_task(
        name, name="summarise", input_parameters={"doc": "a.txt"}, priority="high", max_attempts=2
    )
    assert (created.agent_name, created.status, created.attempts, created.max_attempts) == (
        name,
        "pending",
        0,
        2,
    )

    task = await client.claim(name, lease_seconds=30, worker_id="w-1")
    assert task is not None
    assert (task.id, task.attempt, task.agent_name) == (created.id, 1, name)
    assert task.input_parameters == {"doc": "a.txt"} and task.state.status == "in_progress"
    assert task.state.lease_holder == "w-1" and task.lease_expires_at is not None
    assert await client.claim(name) is None  # nothing else to claim

    state = await task.progress(40, "reading")
    assert (state.progress_percentage, state.current_step) == (40, "reading")
    call = await task.record_tool_call("search", {"q": "x"}, correlation_id="c-1")
    assert (call.type, call.task_id, call.data["toolName"], call.data["toolArgs"]) == (
        "TOOL_CALL",
        task.id,
        "search",
        {"q": "x"},
    )
    result = await task.record_tool_result("search", "success", result={"hits": 3}, correlation_id="c-1")
    assert (result.data["toolStatus"], result.data["toolResult"], result.agent_id) == (
        "SUCCESS",
        {"hits": 3},
        name,
    )
    memory = await task.record_memory_operation("set", "summary:a", "SUCCESS", message="stored")
    assert (memory.type, memory.data["keyOrQuery"], memory.data["memoryStatus"]) == (
        "MEMORY_OPERATION",
        "summary:a",
        "SUCCESS",
    )
    done = await task.complete({"summary": "short"}, output_references={"file": "s3://out/a"})
    assert done.status == "completed" and task.finished
    assert done.raw["version"] == done.version

    fetched = await client.get_task(task.id)
    assert fetched is not None and fetched.status == "completed"
    assert await client.get_task("no-such-task") is None

    page = await client.events(task_id=task.id)
    types = [e.type for e in page.events]
    assert types[0] == "TASK_CREATED" and types[-2:] == ["STATUS_CHANGED", "TASK_COMPLETED"]
    assert {"TASK_PROGRESS", "TOOL_CALL", "TOOL_RESULT", "MEMORY_OPERATION"} <= set(types)
    assert page.total_count == len(page.events) and not page.has_next_page
    assert page.events[-1].data["result"] == {"summary": "short"}
    # Paging: after the third event, exactly the rest.
    rest = await client.events(task_id=task.id, after=page.events[2].cursor, first=2)
    assert [e.cursor for e in rest.events] == [e.cursor for e in page.events[3:5]] and rest.has_next_page
    assert [e.cursor for e in await client.all_events(task_id=task.id)] == [e.cursor for e in page.events]


async def test_start_fail_retry_cancel(client: AgentTasksClient) -> None:
    name = agent()
    created = await client.create_agent_task(name, max_attempts=2)
    task = await client.start(created.id, lease_seconds=20)
    assert task.attempt == 1
    retrying = await task.fail("network down", "traceback…")
    assert (retrying.status, retrying.last_error) == ("retrying", "network down")
    again = await client.start(created.id)
    assert again.attempt == 2
    failed = await again.fail("still down", final=True)
    assert failed.status == "failed"
    events = await client.events(task_id=created.id, types=["TASK_FAILED"])
    assert [e.data["isFinal"] for e in events.events] == [False, True]

    retried = await client.retry(created.id)
    assert retried.status == "retrying"
    cancelled = await client.cancel(created.id, reason="no longer needed")
    assert (cancelled.status, cancelled.current_step) == ("cancelled", "cancelled: no longer needed")


async def test_refusals_arrive_as_typed_exceptions(client: AgentTasksClient) -> None:
    with pytest.raises(NotFound) as not_found:
        await client.complete("no-such-task")
    assert not_found.value.code == "not_found" and not_found.value.id == "no-such-task"
    assert "no-such-task" in not_found.value.message

    pending = await client.create_agent_task(agent())
    with pytest.raises(TransitionRefused) as refused:
        await client.complete(pending.id)
    assert refused.value.code == "refused" and refused.value.current_status == "pending"
    assert "pending" in str(refused.value)

    with pytest.raises(Conflict) as conflict:
        await client.start(pending.id, expected_version=pending.version + 5)
    assert conflict.value.code == "conflict" and conflict.value.current_version == pending.version

    task = await client.start(pending.id)
    with pytest.raises(ValidationFailed) as invalid:
        await task.progress(150)
    assert invalid.value.code == "invalid" and invalid.value.path == "percentage"
    assert "between 0 and 100" in invalid.value.message
    with pytest.raises(ValidationFailed) as empty:
        await client.claim("")
    assert empty.value.path == "agentName"

    # Errors are all AgentTasksError, with the answer as received.
    assert (
        isinstance(refused.value, AgentTasksError) and refused.value.data["__typename"] == "TransitionError"
    )

    with pytest.raises(TransportError) as bad_document:
        await client.execute("{ noSuchField }")
    assert bad_document.value.code == "transport" and "noSuchField" in bad_document.value.message
    assert bad_document.value.errors

    async with AgentTasksClient(f"http://127.0.0.1:{free_port()}", retries=1) as nowhere:
        with pytest.raises(TransportError) as unreachable:
            await nowhere.get_task("x")
    assert "no answer from" in unreachable.value.message and "after 2 tries" in unreachable.value.message


async def test_a_stale_attempt_raises_lease_lost(client: AgentTasksClient) -> None:
    assert await client.supports_leases()
    name = agent()
    created = await client.create_agent_task(name, max_attempts=3)
    first = await client.claim(name, lease_seconds=1, worker_id="slow")
    assert first is not None and first.attempt == 1
    # The sweeper (every 0.2 s here) hands the lapsed task back; another worker claims it.
    second = None

    async def claimed_again() -> bool:
        nonlocal second
        second = await client.claim(name, lease_seconds=30, worker_id="fast")
        return second is not None

    await until(claimed_again, "the lapsed task to be claimable again", every=0.1)
    assert second is not None and second.attempt == 2
    with pytest.raises(LeaseLost) as lost:
        await first.complete({"late": True})
    error = lost.value
    assert (error.code, error.current_attempt, error.current_holder, error.current_status) == (
        "lease_lost",
        2,
        "fast",
        "in_progress",
    )
    with pytest.raises(LeaseLost):
        await first.heartbeat()
    with pytest.raises(LeaseLost):
        await first.progress(10)
    with pytest.raises(LeaseLost):
        await first.fail("late failure")
    beat = await second.heartbeat(lease_seconds=30, percentage=50, current_step="halfway")
    assert beat.progress_percentage == 50 and beat.lease_holder == "fast"
    assert (await second.complete({"ok": True})).status == "completed"
    assert created.id == second.id


async def test_workflow_creation_and_tree(client: AgentTasksClient) -> None:
    wf = f"meta_{uuid.uuid4().hex[:8]}"
    created = await client.create_workflow(
        {
            "id": wf,
            "metaWorkflowId": "mw_test",
            "state": {"agentName": "Orchestrator"},
            "subTasks": [
                {
                    "id": f"{wf}_sub",
                    "state": {"agentName": "Writer"},
                    "behaviorTasks": [
                        {"id": f"{wf}_beh", "actionType": "write", "state": {"agentName": "Writer"}}
                    ],
                }
            ],
        }
    )
    assert created == {"id": wf, "subTasks": [{"id": f"{wf}_sub", "behaviorTasks": [{"id": f"{wf}_beh"}]}]}
    tree = await client.workflow_tree(wf)
    assert tree is not None and tree["subTasks"][0]["behaviorTasks"][0]["state"]["agentName"] == "Writer"
    assert tree["progress"]["total"] == 2
    assert await client.workflow_tree("meta_unknown") is None
    with pytest.raises(ValidationFailed) as duplicate_free:
        await client.create_workflow({"id": wf, "subTasks": [{"id": "x", "behaviorTasks": [{"id": "x"}]}]})
    assert duplicate_free.value.path
    events = await client.events(workflow_id=wf)
    assert {e.task_id for e in events.events} == {wf, f"{wf}_sub", f"{wf}_beh"}


async def test_an_invalid_subscription_is_raised_not_retried(client: AgentTasksClient) -> None:
    with pytest.raises(TransportError) as refused:
        async for _ in client.watch_events(after="not-a-cursor"):
            pass
    assert "subscription" in refused.value.message and refused.value.errors


async def _collect(stream: AsyncIterator[Event], into: list[Event], until: int) -> None:
    async for event in stream:
        into.append(event)
        if len(into) >= until:
            return


async def test_watch_events_resumes_after_the_server_restarts(mongo_uri: str) -> None:
    """A watcher on server A; A stops (SIGTERM) and events keep coming through server B; A comes back on
    the same port: the watcher gets every event exactly once, in order."""
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"watch_{uuid.uuid4().hex[:12]}"}
    port = free_port()
    name = agent()
    reconnects: list[int] = []
    seen: list[Event] = []
    with serve(env, port=port) as a, serve(env) as b:
        async with AgentTasksClient(a.url) as via_a, AgentTasksClient(b.url) as via_b:
            first = await via_a.create_agent_task(name)
            stream = via_a.watch_events(
                agent_id=name, max_backoff=0.5, on_reconnect=lambda n, e: reconnects.append(n)
            )
            watcher = asyncio.create_task(_collect(stream, seen, until=12))
            await until(lambda: len(seen) >= 1)
            for i in range(3):
                await via_b.record_tool_call(first.id, f"before-{i}")
            await until(lambda: len(seen) >= 4)
            assert await asyncio.to_thread(a.stop) == 0  # the stream is completed, then the socket closed
            for i in range(4):  # while A is down
                await via_b.record_tool_call(first.id, f"down-{i}")
            await until(lambda: len(reconnects) >= 2)  # it keeps trying
            with serve(env, port=port):
                for i in range(4):
                    await via_b.record_tool_call(first.id, f"after-{i}")
                await asyncio.wait_for(watcher, 60)
            stored = await via_b.all_events(agent_id=name)
    assert [e.cursor for e in seen] == [e.cursor for e in stored]
    assert len(stored) == 12 and len({e.cursor for e in seen}) == 12
    assert [e.data.get("toolName") for e in seen[1:]] == [
        *(f"before-{i}" for i in range(3)),
        *(f"down-{i}" for i in range(4)),
        *(f"after-{i}" for i in range(4)),
    ]


async def test_with_a_server_from_before_leases_lease_arguments_are_left_out(server: ServerProcess) -> None:
    """The documents sent then name no lease argument, field or error type (such a server refuses them)."""
    async with AgentTasksClient(server.url) as old:
        old._lease_support = False  # as the probe finds on a server without LeaseLostError
        name = agent()
        await old.create_agent_task(name)
        task = await old.claim(name, lease_seconds=1, worker_id="ignored")
        assert task is not None and task.state.lease_holder is None and task.lease_expires_at is None
        assert (await task.progress(20)).progress_percentage == 20
        assert (await task.complete({"ok": True})).status == "completed"
    async with AgentTasksClient(server.url) as probing:
        assert await probing.supports_leases()
