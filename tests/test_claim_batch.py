"""claimTasks: a batch of claims in one transaction — claim order across priorities, a lease per task, the
events of each, the bounds of `max`, idempotency, concurrent batches, dependents released by a start, a
concurrency limit, and the MongoDB commands a batch costs against single claims."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
import zlib
from typing import Any

import httpx

from app.lifecycle.transitions import partitioned_batch, spread_batch
from tests.conftest import CommandLog, GraphQLClient
from tests.support.lifecycle_helpers import snapshot, task

CLAIM_MANY = """mutation($agent: String!, $max: Int!, $key: String, $worker: String) {
  r: claimTasks(agentName: $agent, max: $max, idempotencyKey: $key, workerId: $worker, leaseSeconds: 600) {
    __typename
    ... on Error { message }
    ... on ValidationError { field code }
    ... on ClaimTasksSuccess {
      reason
      claimed {
        state { id status attempts priority leaseHolder version startedAt leaseExpiresAt updatedAt }
        events { type taskId }
      }
    }
  }
}"""

CLAIM_ONE = """mutation($agent: String!) { r: claimTask(agentName: $agent, leaseSeconds: 600) {
  __typename ... on TaskTransitionSuccess { state { id } } } }"""

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def seed(db: Any, count: int, agent: str = "AgentA", prefix: str = "", **kw: Any) -> list[str]:
    """`count` pending tasks, priorities cycling LOW..URGENT, each a second younger than the one before."""
    priorities = ["low", "medium", "high", "urgent"]
    docs = [
        task(
            f"{prefix}{agent}-{n:03}",
            "pending",
            agent,
            priority=priorities[n % 4],
            created_at=T0 + dt.timedelta(seconds=n),
            **kw,
        )
        for n in range(count)
    ]
    await db.agent_task_states.insert_many(docs)
    return [d["_id"] for d in docs]


async def claim_many(gql: GraphQLClient, agent: str, max_: int, **kw: Any) -> dict[str, Any]:
    return (await gql.data(CLAIM_MANY, {"agent": agent, "max": max_, **kw}))["r"]


def without_refresh(commands: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The commands but the steering's periodic look at which limits, policies and rates exist (at most
    once per CONCURRENCY_LIMITS_REFRESH_SECONDS, whatever the claims: on a loaded machine one can fall
    between two claims of a test)."""
    refresh = {"concurrency_limits", "claim_policies", "start_rate_limits"}
    return [command for command in commands if not (command[0] == "find" and command[1] in refresh)]


def claim_order(docs: list[dict[str, Any]]) -> list[str]:
    rank = {"urgent": 0, "high": 1, "medium": 2, "low": 3}
    return [d["_id"] for d in sorted(docs, key=lambda d: (rank[d["priority"]], d["created_at"]))]


async def test_a_batch_takes_the_head_of_the_queue_in_claim_order_each_under_its_lease(
    gql: GraphQLClient, db: Any
) -> None:
    await seed(db, 12)
    expected = claim_order([d async for d in db.agent_task_states.find()])
    r = await claim_many(gql, "AgentA", 5, worker="w-1")
    assert r["__typename"] == "ClaimTasksSuccess" and r["reason"] is None
    ids = [c["state"]["id"] for c in r["claimed"]]
    assert ids == expected[:5]  # the three URGENT ones by age, then the two oldest HIGH
    for claimed in r["claimed"]:
        assert claimed["state"]["status"] == "IN_PROGRESS" and claimed["state"]["attempts"] == 1
        assert claimed["state"]["leaseHolder"] == "w-1"
        assert [(e["type"], e["taskId"]) for e in claimed["events"]] == [
            ("STATUS_CHANGED", claimed["state"]["id"])
        ]
    stored = {d["_id"]: d async for d in db.agent_task_states.find()}
    for task_id in expected:
        doc = stored[task_id]
        if task_id in ids:
            assert doc["status"] == "in_progress" and doc["lease_holder"] == "w-1" and doc["attempts"] == 1
            lease = doc["lease_expires_at"].replace(tzinfo=dt.UTC) - doc["started_at"].replace(tzinfo=dt.UTC)
            assert lease == dt.timedelta(seconds=600)
        else:
            assert doc["status"] == "pending" and doc.get("attempts", 0) == 0
    # The answered states are the stored ones (the batch computes them from one update: same milliseconds).
    for claimed in r["claimed"]:
        fields = "id status attempts priority leaseHolder version startedAt leaseExpiresAt updatedAt"
        read = await gql.data(f'{{ agentTask(id: "{claimed["state"]["id"]}") {{ {fields} }} }}')
        assert read["agentTask"] == claimed["state"]
    events = [e async for e in db.task_events.find({"type": "STATUS_CHANGED"}).sort("_id", 1)]
    assert sorted(e["task_id"] for e in events) == sorted(ids)
    assert all(e["payload"]["to_status"] == "in_progress" for e in events)

    # The rest, and then the queue is dry: fewer than asked, then none with the reason.
    r = await claim_many(gql, "AgentA", 10)
    assert [c["state"]["id"] for c in r["claimed"]] == expected[5:]
    r = await claim_many(gql, "AgentA", 10)
    assert r["claimed"] == [] and "no pending task" in r["reason"]


async def test_max_out_of_bounds_is_refused_naming_the_limit_and_changes_nothing(
    gql: GraphQLClient, db: Any
) -> None:
    await seed(db, 3)
    before = await snapshot(db)
    for bad in (0, -1, 101):
        r = await claim_many(gql, "AgentA", bad)
        assert r["__typename"] == "ValidationError" and r["field"] == "max"
        assert r["message"] == f"max must be between 1 and MAX_CLAIM_BATCH (100), got {bad}"
    r = (
        await gql.data(
            'mutation { r: claimTasks(agentName: "", max: 2) { __typename ... on ValidationError { field } } }'
        )
    )["r"]
    assert r == {"__typename": "ValidationError", "field": "agentName"}
    assert await snapshot(db) == before


async def test_an_idempotency_key_replays_the_batch_and_claims_nothing_more(
    gql: GraphQLClient, db: Any
) -> None:
    await seed(db, 6)
    first = await claim_many(gql, "AgentA", 4, key="batch-1")
    again = await claim_many(gql, "AgentA", 4, key="batch-1")
    assert again == first and len(first["claimed"]) == 4
    pending = await db.agent_task_states.count_documents({"status": "pending"})
    assert pending == 2
    assert await db.task_events.count_documents({"type": "STATUS_CHANGED"}) == 4
    reused = await claim_many(gql, "AgentA", 2, key="batch-1")
    assert reused["__typename"] == "ValidationError" and "different arguments" in reused["message"]
    # A key whose call found nothing keeps nothing: the same key claims once there is work.
    await claim_many(gql, "AgentA", 10)
    assert (await claim_many(gql, "AgentA", 3, key="batch-2"))["claimed"] == []
    later = await seed(db, 2, prefix="later-")
    r = await claim_many(gql, "AgentA", 3, key="batch-2")
    assert sorted(c["state"]["id"] for c in r["claimed"]) == sorted(later)


async def test_concurrent_batches_and_single_claims_hand_out_every_task_once(
    gql: GraphQLClient, db: Any
) -> None:
    ids = await seed(db, 120)

    async def batch_claimer() -> list[str]:
        got: list[str] = []
        while True:
            r = await claim_many(gql, "AgentA", 7)
            if not r["claimed"]:
                return got
            got += [c["state"]["id"] for c in r["claimed"]]

    async def single_claimer() -> list[str]:
        got: list[str] = []
        while True:
            r = (await gql.data(CLAIM_ONE, {"agent": "AgentA"}))["r"]
            if r["__typename"] != "TaskTransitionSuccess":
                return got
            got.append(r["state"]["id"])

    results = await asyncio.gather(
        *(batch_claimer() for _ in range(6)), *(single_claimer() for _ in range(2))
    )
    claimed = [task_id for got in results for task_id in got]
    assert len(claimed) == len(set(claimed)) == 120 and set(claimed) == set(ids)
    assert await db.agent_task_states.count_documents({"status": "in_progress", "attempts": 1}) == 120
    assert await db.task_events.count_documents({"type": "STATUS_CHANGED"}) == 120


async def test_a_dependent_waiting_for_a_start_is_released_with_the_batch(
    gql: GraphQLClient, db: Any
) -> None:
    await db.agent_task_states.insert_many(
        [
            task("a", "pending", created_at=T0),
            task("b", "pending", created_at=T0 + dt.timedelta(seconds=1)),
            task(
                "watcher",
                "awaiting_dependency",
                "AgentB",
                dependencies=[{"task_id": "b", "status_expected": "in_progress"}],
            ),
        ]
    )
    r = await claim_many(gql, "AgentA", 5)
    by_id = {c["state"]["id"]: c for c in r["claimed"]}
    assert list(by_id) == ["a", "b"]
    assert [(e["type"], e["taskId"]) for e in by_id["a"]["events"]] == [("STATUS_CHANGED", "a")]
    assert [(e["type"], e["taskId"]) for e in by_id["b"]["events"]] == [
        ("STATUS_CHANGED", "b"),
        ("STATUS_CHANGED", "watcher"),
    ]
    assert (await db.agent_task_states.find_one({"_id": "watcher"}))["status"] == "pending"


async def test_under_a_concurrency_limit_a_batch_stops_at_the_limit(gql: GraphQLClient, db: Any) -> None:
    await seed(db, 8)
    limit = await gql.data(
        'mutation { setConcurrencyLimit(scope: AGENT, key: "AgentA", max: 3) { __typename } }'
    )
    assert limit["setConcurrencyLimit"]["__typename"] == "SetConcurrencyLimitSuccess"
    r = await claim_many(gql, "AgentA", 6)
    assert len(r["claimed"]) == 3
    assert await db.agent_task_states.count_documents({"status": "in_progress"}) == 3
    r = await claim_many(gql, "AgentA", 6)
    assert r["claimed"] == [] and "limit" in r["reason"]


async def test_a_batch_costs_one_query_one_update_one_insert_and_one_commit(
    gql: GraphQLClient, db: Any, command_log: CommandLog
) -> None:
    await seed(db, 30)
    await claim_many(gql, "AgentA", 1)  # the steering's first look at the limits, and the client's warm-up
    command_log.clear()
    await claim_many(gql, "AgentA", 10)
    batch = without_refresh(command_log.commands)
    assert batch == [
        ("find", "agent_task_states"),  # the head of the queue
        ("update", "agent_task_states"),  # a compare-and-set on each task's version, all in one command
        ("insert", "task_events"),  # every event of the batch
        ("find", "agent_task_states"),  # dependents waiting for any of them
    ], batch  # and one commitTransaction (to `admin`: not in this database's log)
    command_log.clear()
    for _ in range(10):
        await gql.data(CLAIM_ONE, {"agent": "AgentA"})
    single = [
        ("find", "agent_task_states"),
        ("findAndModify", "agent_task_states"),
        ("insert", "task_events"),
        ("find", "agent_task_states"),
    ]
    assert without_refresh(command_log.commands) == single * 10  # and ten commits


def test_a_spread_batch_never_passes_a_priority_level_over() -> None:
    levels = [3] * 4 + [2] * 5 + [1] * 30
    candidates = [{"_id": f"t{n}", "priority_rank": rank} for n, rank in enumerate(levels)]
    for _ in range(50):
        picks = spread_batch(candidates, 10)
        ids = [p["_id"] for p in picks]
        assert len(picks) == 10 and len(set(ids)) == 10
        assert ids[:9] == [f"t{n}" for n in range(9)]  # both upper levels whole, in order
        assert picks[9]["priority_rank"] == 1
    seen = {spread_batch(candidates, 10)[9]["_id"] for _ in range(200)}
    assert len(seen) > 5  # the last level is sampled, not its head
    assert spread_batch(candidates[:3], 10) == candidates[:3]


async def test_batches_from_two_server_processes_hand_out_every_task_once(mongo_uri: str) -> None:
    from pymongo import AsyncMongoClient

    from tests.support.servers import serve

    name = f"two_{uuid.uuid4().hex[:12]}"
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": name}
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    db = mongo[name]
    try:
        with serve(env) as one, serve(env) as two:
            ids = await seed(db, 300)

            async def claimer(url: str) -> list[str]:
                got: list[str] = []
                async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                    while True:
                        answer = await http.post(
                            "/graphql",
                            json={"query": CLAIM_MANY, "variables": {"agent": "AgentA", "max": 10}},
                        )
                        r = answer.json()["data"]["r"]
                        assert r["__typename"] == "ClaimTasksSuccess", r
                        if not r["claimed"]:
                            return got
                        got += [c["state"]["id"] for c in r["claimed"]]

            results = await asyncio.gather(*(claimer(server.url) for server in [one, two] * 4))
        claimed = [task_id for got in results for task_id in got]
        assert len(claimed) == len(set(claimed)) == 300 and set(claimed) == set(ids)
        started = await db.task_events.aggregate(
            [{"$match": {"type": "STATUS_CHANGED"}}, {"$group": {"_id": "$task_id", "n": {"$sum": 1}}}]
        )
        assert sorted([(doc["_id"], doc["n"]) async for doc in started]) == sorted((i, 1) for i in ids)
    finally:
        await mongo.drop_database(name)
        await mongo.close()


def test_a_partitioned_batch_takes_its_share_and_never_goes_below_a_level_left_to_another() -> None:
    def share_of(state: dict[str, Any]) -> int:
        return zlib.crc32(str(state["_id"]).encode()) % 2

    top = [{"_id": f"u{n}", "priority_rank": 3} for n in range(12)]
    low = [{"_id": f"l{n}", "priority_rank": 1} for n in range(40)]
    for place in (0, 1):
        picks = partitioned_batch(top + low, 10, (place, 2))
        # The top level holds the other share's tasks too: only this share's of it, nothing lower.
        assert picks == [s for s in top if share_of(s) == place]
    mine = [s for s in low if share_of(s) == 0]
    assert partitioned_batch(low, 5, (0, 2)) == mine[:5]
    alone = partitioned_batch(top, 10, (0, 1))  # one process: a sample of the level (`spread_batch`)
    assert len(alone) == 10 and all(s in top for s in alone)
    only_theirs = [s for s in top if share_of(s) == 1]
    assert len(partitioned_batch(only_theirs, 3, (0, 2))) == 3  # none of its own: a sample of the level
