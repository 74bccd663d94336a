"""Bulk actions by filter (issue 21 part 7) against a real server process over HTTP: `retryTasks`,
`cancelTasks`, `pauseTasks`, `resumeTasks` and `POST /agent-tasks/retry|cancel|pause|resume` act on the
tasks the lists' filter matches, each with its own compare-and-set and events (stored states and events
checked), skip and count what the action does not apply to, refuse an empty filter and a limit over
BULK_ACTION_MAX_TASKS; and a bulk retry of 1,000 failed tasks while agents write to the same tasks loses
no update (every write and the retry accounted for in the final versions and events; its time printed).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from agent_tasks_client import AgentTasksClient, ValidationFailed
from tests.support.polling import until
from tests.support.servers import ServerGroup, ServerProcess

DB = f"bulk_{uuid.uuid4().hex[:12]}"
BULK = """mutation($f: JSON, $agent: String, $status: [TaskStatus!], $limit: Int%s) {
  r: %s(filter: $f, agentName: $agent, status: $status, limit: $limit%s) {
    __typename
    ... on BulkActionSuccess { matched changed changedIds skipped { reason count } hasMore limit }
    ... on ValidationError { message field code }
  }
}"""


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    return module_servers.start("bulk", db_name=DB)


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AgentTasksClient]:
    async with AgentTasksClient(server.url, timeout=120) as c:
        yield c


@pytest.fixture
async def db(mongo_uri: str) -> AsyncIterator[Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    yield mongo[DB]
    await mongo.close()


def agent() -> str:
    return f"Bulk-{uuid.uuid4().hex[:8]}"


async def bulk(client: AgentTasksClient, field: str, **variables: Any) -> dict[str, Any]:
    retry = field == "retryTasks"
    query = BULK % ("" if retry else ", $reason: String", field, "" if retry else ", reason: $reason")
    if field == "retryTasks":
        variables.pop("reason", None)
    return (await client.execute(query, variables))["r"]


async def failed_tasks(client: AgentTasksClient, name: str, count: int) -> list[str]:
    ids = [(await client.create_agent_task(name)).id for _ in range(count)]
    for _ in ids:
        claimed = await client.claim(name)
        assert claimed is not None
        await claimed.fail("broken", final=True)
    return ids


async def statuses(db: Any, ids: list[str]) -> dict[str, str]:
    return {d["_id"]: d["status"] async for d in db.agent_task_states.find({"_id": {"$in": ids}})}


async def events(db: Any, ids: list[str], kind: str) -> list[dict[str, Any]]:
    return [e async for e in db.task_events.find({"task_id": {"$in": ids}, "type": kind})]


def retries_counted(server: ServerProcess, name: str) -> float:
    """`agent_tasks_retries_total` for the agent, from `/metrics`."""
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "agent_tasks_retries_total" and sample.labels.get("agent") == name
    )


async def test_retry_tasks(server: ServerProcess, client: AgentTasksClient, db: Any) -> None:
    name = agent()
    failed = await failed_tasks(client, name, 3)
    pending = (await client.create_agent_task(name)).id
    result = await bulk(client, "retryTasks", agent=name)
    assert result["__typename"] == "BulkActionSuccess", result
    assert (
        result["matched"] == 4 and result["changed"] == 3 and sorted(result["changedIds"]) == sorted(failed)
    )
    assert result["skipped"] == [{"reason": "ACTIVE", "count": 1}] and result["hasMore"] is False
    assert result["limit"] == 1000
    assert await statuses(db, [*failed, pending]) == {**dict.fromkeys(failed, "retrying"), pending: "pending"}
    changes = await events(db, failed, "STATUS_CHANGED")
    retried = [e for e in changes if e["payload"]["to_status"] == "retrying"]
    assert sorted(e["task_id"] for e in retried) == sorted(failed)
    assert all(e["payload"]["from_status"] == "failed" and e["actor"]["kind"] == "anonymous" for e in retried)
    assert retries_counted(server, name) == 3  # each counted in /metrics, as a single retryTask is
    # Again: nothing failed is left to retry (a status filter no longer matches them).
    again = await bulk(client, "retryTasks", agent=name, status=["FAILED"])
    assert again["matched"] == 0 and again["changed"] == 0


async def test_cancel_pause_and_resume_tasks(client: AgentTasksClient, db: Any) -> None:
    name = agent()
    ids = [(await client.create_agent_task(name)).id for _ in range(4)]
    running = await client.claim(name)
    assert running is not None
    paused = await bulk(client, "pauseTasks", f={"agent_name": name}, reason="maintenance")
    assert paused["changed"] == 4 and paused["skipped"] == []
    stored = {d["_id"]: d async for d in db.agent_task_states.find({"_id": {"$in": ids}})}
    assert {i: d["status"] for i, d in stored.items() if i != running.id} == dict.fromkeys(
        set(ids) - {running.id}, "paused"
    )
    assert stored[running.id]["status"] == "in_progress" and stored[running.id]["pause_requested"] is True
    pause_events = await events(db, ids, "TASK_PAUSED")
    assert Counter(e["task_id"] for e in pause_events) == Counter(ids)
    assert all(
        e["payload"]["reason"] == "maintenance" and e["payload"]["root_task_id"] is None for e in pause_events
    )
    again = await bulk(client, "pauseTasks", f={"agent_name": name})
    assert again["changed"] == 0 and again["skipped"] == [{"reason": "ALREADY_PAUSED", "count": 4}]

    resumed = await bulk(client, "resumeTasks", f={"agent_name": name, "status": "paused"})
    assert resumed["matched"] == 3 and resumed["changed"] == 3
    assert await statuses(db, ids) == {**dict.fromkeys(ids, "pending"), running.id: "in_progress"}
    assert len(await events(db, ids, "TASK_RESUMED")) == 3

    cancelled = await bulk(client, "cancelTasks", agent=name, status=["PENDING"], reason="obsolete")
    assert cancelled["changed"] == 3
    stored = {d["_id"]: d async for d in db.agent_task_states.find({"_id": {"$in": ids}})}
    assert {d["status"] for i, d in stored.items() if i != running.id} == {"cancelled"}
    assert {d["current_step"] for i, d in stored.items() if i != running.id} == {"cancelled: obsolete"}
    cancel_events = await events(db, ids, "TASK_CANCELLED")
    assert len(cancel_events) == 3 and {e["payload"]["reason"] for e in cancel_events} == {"obsolete"}
    finished = await bulk(client, "pauseTasks", agent=name, status=["CANCELLED"])
    assert finished["skipped"] == [{"reason": "FINISHED", "count": 3}]


async def test_refusals(client: AgentTasksClient, db: Any) -> None:
    name = agent()
    ids = await failed_tasks(client, name, 3)
    for variables in ({}, {"f": {}}):
        refused = await bulk(client, "retryTasks", **variables)
        assert refused["__typename"] == "ValidationError" and refused["code"] == "EMPTY_FILTER", refused
        assert refused["field"] == "filter"
    over = await bulk(client, "cancelTasks", agent=name, limit=1001)
    assert over["code"] == "LIMIT_EXCEEDED" and over["field"] == "limit"
    assert over["message"] == "limit must be between 1 and 1000 (BULK_ACTION_MAX_TASKS), got 1001"
    bad = await bulk(client, "pauseTasks", f={"$where": "1"})
    assert bad["__typename"] == "ValidationError" and bad["code"] == "BAD_FILTER", bad
    assert await statuses(db, ids) == dict.fromkeys(ids, "failed")  # nothing changed
    # A smaller limit acts on the first ones and says there are more.
    some = await bulk(client, "retryTasks", agent=name, limit=2)
    assert some["matched"] == 2 and some["hasMore"] is True and some["changedIds"] == sorted(ids)[:2]
    # The client raises the refusal.
    with pytest.raises(ValidationFailed) as raised:
        await client.retry_tasks()
    assert raised.value.data["code"] == "EMPTY_FILTER"
    rest = await client.retry_tasks({"agent_name": name})
    assert rest.changed_ids == sorted(ids)[2:] and rest.matched == 3 and rest.skipped == {"ACTIVE": 2}


async def test_rest_bulk_actions(server: ServerProcess, client: AgentTasksClient, db: Any) -> None:
    name = agent()
    failed = await failed_tasks(client, name, 2)
    pending = [(await client.create_agent_task(name)).id for _ in range(2)]
    async with httpx.AsyncClient(base_url=server.url, headers={"Content-Type": "application/json"}) as http:
        empty = await http.post("/agent-tasks/retry", json={"filter": {}})
        assert empty.status_code == 400 and empty.json()["error"]["code"] == "bad_filter", empty.text
        assert empty.json()["error"]["field"] == "filter"
        missing = await http.post("/agent-tasks/retry", json={})
        assert missing.status_code == 422 and missing.json()["error"]["field"] == "filter"
        over = await http.post("/agent-tasks/pause", json={"filter": {"agent_name": name}, "limit": 5000})
        assert over.status_code == 422 and over.json()["error"]["field"] == "limit"
        assert "BULK_ACTION_MAX_TASKS" in over.json()["error"]["message"]

        retried = await http.post("/agent-tasks/retry", json={"filter": {"agent_name": name}})
        assert retried.status_code == 200, retried.text
        body = retried.json()
        assert body["changed"] == 2 and sorted(body["changed_ids"]) == sorted(failed)
        assert body["skipped"] == [{"reason": "ACTIVE", "count": 2}] and body["matched"] == 4
        paused = await http.post(
            "/agent-tasks/pause", json={"filter": {"task_id": {"$in": pending}}, "reason": "hold"}
        )
        assert paused.json()["changed"] == 2
        resumed = await http.post("/agent-tasks/resume", json={"filter": {"task_id": {"$in": pending}}})
        assert resumed.json()["changed"] == 2
        cancelled = await http.post(
            "/agent-tasks/cancel", json={"filter": {"agent_name": name}, "reason": "done", "limit": 3}
        )
        assert cancelled.json()["changed"] == 3 and cancelled.json()["has_more"] is True
    stored = await statuses(db, [*failed, *pending])
    assert Counter(stored.values()) == Counter({"cancelled": 3, "retrying": 1}) or Counter(
        stored.values()
    ) == Counter({"cancelled": 3, "pending": 1})
    assert len(await events(db, pending, "TASK_PAUSED")) == 2
    assert len(await events(db, pending, "TASK_RESUMED")) == 2
    assert len(await events(db, [*failed, *pending], "TASK_CANCELLED")) == 3


SUBS, BEHAVIORS, WRITERS = 27, 36, 4  # the meta task, 27 sub-tasks and 972 behavior tasks: 1,000 tasks


async def test_bulk_retry_of_1000_failed_tasks_under_concurrent_writes(
    server: ServerProcess, client: AgentTasksClient, db: Any
) -> None:
    name = agent()
    root = f"bm-{uuid.uuid4().hex[:8]}"
    subs = [
        {"id": f"{root}-s{s}", "state": {"agentName": name}, "behaviorTasks": [
            {"id": f"{root}-s{s}-b{b}", "state": {"agentName": name}} for b in range(BEHAVIORS)
        ]}
        for s in range(SUBS)
    ]  # fmt: skip
    await client.create_workflow({"id": root, "state": {"agentName": name}, "subTasks": subs})
    tasks = {"workflow_id": root}
    # Setup written as another program would: 1,000 tasks failed for good.
    await db.agent_task_states.update_many(tasks, {"$set": {"status": "failed", "attempts": 3}})
    ids = sorted([d["_id"] async for d in db.agent_task_states.find(tasks, {"_id": 1})])
    assert len(ids) == 1000
    before = {d["_id"]: d.get("version", 0) async for d in db.agent_task_states.find({"_id": {"$in": ids}})}

    # Agents edit their tasks meanwhile (each writer its own slice, one write at a time, counting n up):
    # each successful write must be in the final version, events and input parameters.
    written: Counter[str] = Counter()
    last: dict[str, int] = {}
    stop = asyncio.Event()
    update = "mutation($id: ID!, $i: UpdateAgentTaskInput!) { r: updateAgentTask(id: $id, input: $i) { __typename } }"

    async def writer(slice_ids: list[str]) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            n = 0
            while not stop.is_set():
                task_id = random.choice(slice_ids)
                n += 1
                variables = {"id": task_id, "i": {"inputParameters": {"n": n}}}
                answer = await http.post("/graphql", json={"query": update, "variables": variables})
                if answer.json()["data"]["r"]["__typename"] == "AgentTaskSuccess":
                    written[task_id] += 1
                    last[task_id] = n

    slices = [ids[k::WRITERS] for k in range(WRITERS)]
    writers = [asyncio.create_task(writer(s)) for s in slices]
    await until(lambda: sum(written.values()) >= 20, "the agents' first writes")
    started = time.perf_counter()
    result = await bulk(client, "retryTasks", f={"workflow_id": root, "status": "failed"})
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.3)  # and write on a little after it
    stop.set()
    await asyncio.gather(*writers)
    during = sum(written.values())
    print(f"bulk retry of 1000 failed tasks: {elapsed:.2f} s, with {during} concurrent agent writes")

    assert result["__typename"] == "BulkActionSuccess", result
    assert result["matched"] == 1000 and result["changed"] == 1000 and result["skipped"] == []
    stored = {d["_id"]: d async for d in db.agent_task_states.find({"_id": {"$in": ids}})}
    assert {d["status"] for d in stored.values()} == {"retrying"}
    lost = [i for i in ids if stored[i]["version"] != before[i] + written[i] + 1]
    assert lost == []  # every write and the retry are in the version
    assert all(stored[i]["input_parameters"] == {"n": last[i]} for i in last)  # the last write stands
    updates = Counter(e["task_id"] for e in await events(db, ids, "TASK_UPDATED"))
    assert updates == written
    retries = [e for e in await events(db, ids, "STATUS_CHANGED") if e["payload"]["to_status"] == "retrying"]
    assert Counter(e["task_id"] for e in retries) == Counter(ids)

    # The same bulk retry with nobody writing, for comparison.
    await db.agent_task_states.update_many(tasks, {"$set": {"status": "failed"}})
    started = time.perf_counter()
    quiet = await client.retry_tasks({"workflow_id": root, "status": "failed"})
    print(f"bulk retry of 1000 failed tasks, no concurrent writes: {time.perf_counter() - started:.2f} s")
    assert len(quiet.changed_ids) == 1000
