"""Retry policies (issue 21 part 1) against a real server process over HTTP: a failed attempt waits its
backoff (`nextAttemptAt`) and no claim hands it out before then (counted), the delay is the documented
one and recorded in the event, non-retryable error types fail for good, a worker's `nextRetryDelay`
wins, `maximumAttempts: 0` is unlimited, createWorkflow gives a subtree one policy, the server's
default comes from RETRY_* settings, and the claim passes over waiting tasks on the claim index."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from agent_tasks_client import AgentTasksClient, ClaimedTask, RetryPolicy, ValidationFailed
from app.lifecycle import retry_policy
from tests.support.claims import claims_before
from tests.support.servers import ServerGroup, ServerProcess

AGENT = "RetryAgent"


DB_NAME = f"retry_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    # The server's default policy: what a task's own policy leaves out.
    env = {
        "EXPIRY_SWEEP_SECONDS": "0.2",
        "RETRY_INITIAL_INTERVAL_SECONDS": "0.4",
        "RETRY_BACKOFF_COEFFICIENT": "3",
    }
    return module_servers.start("retry", env, db_name=DB_NAME)


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AgentTasksClient]:
    async with AgentTasksClient(server.url, timeout=60) as c:
        yield c


@pytest.fixture
async def db(server: ServerProcess, mongo_uri: str) -> AsyncIterator[Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    yield mongo[DB_NAME]
    await mongo.close()


def agent() -> str:
    return f"{AGENT}-{uuid.uuid4().hex[:8]}"


async def failed_event(client: AgentTasksClient, task_id: str) -> dict[str, Any]:
    query = """query($id: ID!) { taskEvents(taskId: $id, types: [TASK_FAILED]) { edges { node {
      ... on TaskFailedEvent { status isFinal errorType retryDelaySeconds appliedDelaySeconds nextAttemptAt
      } } } } }"""
    edges = (await client.execute(query, {"id": task_id}))["taskEvents"]["edges"]
    return dict(edges[-1]["node"])


def test_the_delay_is_the_documented_one() -> None:
    policy = {"initial_interval": 1.0, "backoff_coefficient": 2.0, "maximum_interval": 5.0}
    assert [retry_policy.computed_delay(policy, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert retry_policy.computed_delay({"initial_interval": 2.0}, 30) == 200.0  # 0: 100 x initial
    assert retry_policy.computed_delay({"initial_interval": 0.0}, 3) == 0.0
    assert retry_policy.computed_delay({"initial_interval": 1.0, "backoff_coefficient": 100}, 10**6) == 100
    assert retry_policy.jittered(10.0, 0.2, 0.0) == 8.0 and retry_policy.jittered(10.0, 0.2, 1.0) == 12.0


async def test_no_claim_before_next_attempt_at_and_the_backoff_grows(
    client: AgentTasksClient, db: Any
) -> None:
    name = agent()
    policy = RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, maximum_attempts=4, jitter=0)
    created = await client.create_agent_task(name, retry_policy=policy)
    assert created.max_attempts == 4  # the alias
    late: ClaimedTask | None = None  # a claim that reached the server once the task was due
    for attempt, delay in ((1, 1.0), (2, 2.0)):
        claimed = late or await client.claim(name)
        assert claimed is not None and claimed.attempt == attempt
        failed_at = dt.datetime.now(dt.UTC)
        state = await claimed.fail("model timeout", error_type="Timeout")
        answered_at = dt.datetime.now(dt.UTC)
        assert state.status == "retrying" and state.next_attempt_at is not None
        due = state.next_attempt_at
        # `delay` after the server's failure time, which lies between the call and its answer (stored
        # with millisecond precision); how long the call took does not matter.
        ms = dt.timedelta(milliseconds=1)
        assert (
            failed_at + dt.timedelta(seconds=delay) - ms <= due <= answered_at + dt.timedelta(seconds=delay)
        )
        event = await failed_event(client, created.id)
        assert event["retryDelaySeconds"] == delay and event["appliedDelaySeconds"] == delay
        assert event["errorType"] == "Timeout" and event["isFinal"] is False
        assert event["nextAttemptAt"] is not None
        # Claims until the task is due: none of them starts it before (by the server's clock).
        early, late = await claims_before(client, db, name, due)
        assert early == []
        await asyncio.sleep(max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
    again = late or await client.claim(name)
    assert again is not None and again.attempt == 3


async def test_non_retryable_error_types_fail_for_good(client: AgentTasksClient) -> None:
    name = agent()
    policy = RetryPolicy(initial_interval=0.1, non_retryable_error_types=["InvalidPrompt", "AuthError"])
    task = await client.create_agent_task(name, retry_policy=policy, max_attempts=5)
    claimed = await client.claim(name)
    assert claimed is not None
    state = await claimed.fail("the prompt is malformed", error_type="InvalidPrompt")
    assert state.status == "failed" and state.next_attempt_at is None
    event = await failed_event(client, task.id)
    assert event["isFinal"] is True and event["retryDelaySeconds"] is None
    assert await client.claim(name) is None
    stored = await client.execute(
        "query($id: ID!) { agentTask(id: $id) { lastError { errorType } retryPolicy { nonRetryableErrorTypes"
        " maximumAttempts initialInterval backoffCoefficient } } }",
        {"id": task.id},
    )
    assert stored["agentTask"] == {
        "lastError": {"errorType": "InvalidPrompt"},
        "retryPolicy": {
            "nonRetryableErrorTypes": ["InvalidPrompt", "AuthError"],
            "maximumAttempts": 5,
            "initialInterval": 0.1,
            "backoffCoefficient": 3.0,  # the server's default (RETRY_BACKOFF_COEFFICIENT)
        },
    }


async def test_the_worker_s_next_retry_delay_wins(client: AgentTasksClient) -> None:
    name = agent()
    task = await client.create_agent_task(name, retry_policy=RetryPolicy(initial_interval=30, jitter=0.5))
    claimed = await client.claim(name)
    assert claimed is not None
    state = await claimed.fail("429 Too Many Requests", error_type="RateLimited", next_retry_delay=0.6)
    event = await failed_event(client, task.id)
    assert event["retryDelaySeconds"] == 30.0 and event["appliedDelaySeconds"] == 0.6
    assert state.next_attempt_at is not None
    assert await client.claim(name) is None
    await asyncio.sleep(0.8)
    assert await client.claim(name) is not None


async def test_the_server_default_and_jitter(client: AgentTasksClient) -> None:
    name = agent()
    await client.create_agent_task(name)  # no policy: RETRY_INITIAL_INTERVAL_SECONDS=0.4, coefficient 3
    claimed = await client.claim(name)
    assert claimed is not None
    await claimed.fail("boom")
    claimed = None
    await asyncio.sleep(0.5)
    claimed = await client.claim(name)
    assert claimed is not None
    state = await claimed.fail("boom again")
    event = await failed_event(client, state.id)
    assert event["retryDelaySeconds"] == pytest.approx(1.2)  # 0.4 x 3
    # Jitter spreads the applied delay within +-jitter of the computed one.
    jittery = agent()
    policy = RetryPolicy(initial_interval=10, jitter=0.5, maximum_attempts=0)
    applied = []
    for _ in range(6):
        task = await client.create_agent_task(jittery, retry_policy=policy)
        claimed = await client.claim(jittery)
        assert claimed is not None and claimed.id == task.id
        await claimed.fail("x")
        applied.append((await failed_event(client, task.id))["appliedDelaySeconds"])
    assert all(5.0 <= a <= 15.0 for a in applied) and len(set(applied)) > 1


async def test_unlimited_attempts_and_the_max_attempts_alias(client: AgentTasksClient) -> None:
    name = agent()
    task = await client.create_agent_task(
        name, retry_policy=RetryPolicy(initial_interval=0, maximum_attempts=0)
    )
    assert task.max_attempts == 0
    for attempt in range(1, 6):
        claimed = await client.claim(name)
        assert claimed is not None and claimed.attempt == attempt
        assert (await claimed.fail("again")).status == "retrying"
    with pytest.raises(ValidationFailed) as refused:
        await client.create_agent_task(name, max_attempts=2, retry_policy=RetryPolicy(maximum_attempts=3))
    assert refused.value.path == "input.retryPolicy.maximumAttempts"
    with pytest.raises(ValidationFailed) as refused:
        await client.create_agent_task(name, retry_policy=RetryPolicy(backoff_coefficient=0.5))
    assert refused.value.path == "input.retryPolicy.backoffCoefficient"
    # updateAgentTask sets a policy on an existing task.
    updated = await client.execute(
        "mutation($id: ID!) { updateAgentTask(id: $id, input: {retryPolicy: {initialInterval: 7}}) {"
        " ... on AgentTaskSuccess { state { retryPolicy { initialInterval maximumAttempts } } } } }",
        {"id": task.id},
    )
    assert updated["updateAgentTask"]["state"]["retryPolicy"] == {
        "initialInterval": 7.0,
        "maximumAttempts": 0,
    }


async def test_create_workflow_gives_its_subtree_one_policy(client: AgentTasksClient) -> None:
    name, root = agent(), f"wf-{uuid.uuid4().hex[:8]}"
    await client.create_workflow(
        {
            "id": root,
            "state": {"agentName": name, "retryPolicy": {"initialInterval": 2.5, "maximumAttempts": 6}},
            "subTasks": [
                {"id": f"{root}-a", "state": {"agentName": name}, "behaviorTasks": [{"id": f"{root}-a1"}]},
                {"id": f"{root}-b", "state": {"agentName": name, "retryPolicy": {"initialInterval": 1}}},
                {"id": f"{root}-c", "state": {"agentName": name, "maxAttempts": 2}},
            ],
        }
    )
    query = "query($id: ID!) { agentTask(id: $id) { retryPolicy { initialInterval maximumAttempts } } }"
    seen = {}
    for suffix in ("", "-a", "-a1", "-b", "-c"):
        policy = (await client.execute(query, {"id": root + suffix}))["agentTask"]["retryPolicy"]
        seen[suffix] = (policy["initialInterval"], policy["maximumAttempts"])
    assert seen == {"": (2.5, 6), "-a": (2.5, 6), "-a1": (2.5, 6), "-b": (1.0, 3), "-c": (2.5, 2)}


async def test_many_waiting_tasks_none_claimed_early_and_the_claim_reads_no_waiting_document(
    client: AgentTasksClient, db: Any
) -> None:
    """100 retrying tasks wait at the head of the queue: claims meanwhile hand out none of them, the one
    ready task behind them is claimed, and the claim query passes over the waiting ones on their index keys
    (MongoDB's profiler: documents examined stay a handful). They wait an hour, so however slow the machine
    nothing comes due during the test; then their time is moved to the past in MongoDB (the clock moving
    on, without waiting for it) and every one of them is claimed."""
    name = agent()
    policy = RetryPolicy(initial_interval=3600.0, jitter=0)
    ids = [
        (await client.create_agent_task(name, retry_policy=policy, priority="high")).id for _ in range(100)
    ]
    claims = [await client.claim(name) for _ in ids]
    for c in claims:  # one at a time: 100 transactions at once ran past MONGODB_TIMEOUT_SECONDS at load 12
        assert c is not None
        await c.fail("transient")
    ready = await client.create_agent_task(name, priority="low")
    await db.command("profile", 2)
    try:
        first = await client.claim(name)
    finally:
        await db.command("profile", 0)
    assert first is not None and first.id == ready.id
    finds = [
        p
        async for p in db["system.profile"].find(
            {"ns": f"{db.name}.agent_task_states", "op": "query", "command.filter.agent_name": name}
        )
    ]
    assert finds and all(f["docsExamined"] <= 8 for f in finds), [
        (f["docsExamined"], f["keysExamined"], f["planSummary"]) for f in finds
    ]
    states = await db.agent_task_states.find({"_id": {"$in": ids}}, {"next_attempt_at": 1}).to_list()
    due = min(s["next_attempt_at"] for s in states).replace(tzinfo=dt.UTC)
    early = 0
    for _ in range(20):
        if dt.datetime.now(dt.UTC) < due - dt.timedelta(milliseconds=150):
            early += (await client.claim(name)) is not None
    assert early == 0
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await db.agent_task_states.update_many({"_id": {"$in": ids}}, {"$set": {"next_attempt_at": past}})
    claimed = [await client.claim(name) for _ in range(100)]
    assert sorted(c.id for c in claimed if c is not None) == sorted(ids)
