"""Agent analytics (`agentStats`, `agentsStats`), parent and sub-tasks of standalone tasks (`parent`,
`subtasks`, `addSubtask`), over real HTTP on a real mongod.

The analytics data set is built so every number is exact: AgentA has 34 tasks — 20 completed taking
1..20 s (in shuffled order), 4 failed, one in_progress task past its `expiresAt` (so failed), 2 retrying,
2 cancelled, 3 pending, 1 awaiting_dependency, 1 in_progress — with chosen priorities, attempts, errors
and creation minutes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from app.demo.documents import T0
from app.domain import Status
from app.lifecycle.expiry import expire_overdue, present
from app.lifecycle.transitions import Lifecycle
from app.store.analytics import agent_stats_pipeline, agents_stats_pipeline
from tests.conftest import CommandLog, GraphQLClient, read_query
from tests.support.lifecycle_helpers import snapshot, task

EXPIRES = dt.datetime(2020, 1, 1, 0, 0, 0, 250_000, tzinfo=dt.UTC)


def _err(message: str) -> dict[str, Any]:
    return {"timestamp": T0, "message": message, "details": None}


def agent_a() -> list[dict[str, Any]]:
    """AgentA's 34 tasks (see the module docstring); `minute` is created_at - T0."""
    docs = []
    for k in range(1, 21):
        # 7 is coprime with 20, so the times are 1..20 in shuffled order: the pipeline must sort them.
        docs.append(
            task(
                f"c{k:02}",
                "completed",
                minute=k,
                execution_time_seconds=float((k * 7) % 20 + 1),
                attempts=2 if k <= 4 else 3 if k == 5 else 4 if k in (6, 7) else 1,
                priority="high" if k <= 10 else "medium",
            )
        )
    docs += [
        # A failed task reporting an execution time: only completed tasks' times count.
        task(
            "f1",
            "failed",
            minute=30,
            attempts=3,
            priority="urgent",
            last_error=_err("timeout"),
            execution_time_seconds=999.0,
        ),
        task("f2", "failed", minute=25, attempts=3, priority="low", last_error=_err("timeout")),
        task("f3", "failed", minute=35, attempts=3, priority="low", last_error=_err("rate limited")),
        task("f4", "failed", minute=40, attempts=3, priority="low", last_error=_err("timeout")),
        task("r1", "retrying", minute=41, attempts=2, last_error=_err("rate limited")),
        # Overdue but not swept yet: read as failed, with the sweeper's error message.
        task("e1", "in_progress", minute=42, attempts=1, expires_at=EXPIRES),
        task("r2", "retrying", minute=43, attempts=1, last_error=_err("auth expired")),
        task("k1", "cancelled", minute=44, attempts=1, last_error=_err("disk full")),
        task("p2", "pending", minute=45),
        task("p3", "pending", minute=45),  # same created_at as p2: the id breaks the tie
        task("k2", "cancelled", minute=46, attempts=0, last_error=_err("zzz")),
        task("p1", "pending", minute=50),
        task("w1", "awaiting_dependency", minute=55),
        task("i1", "in_progress", minute=56, attempts=2, last_error=_err("network reset")),
    ]
    return docs


OTHERS = [
    task("b1", "completed", agent="AgentB", minute=0, execution_time_seconds=5.0),
    task("n1", "pending", agent="", minute=0),  # no agent: in no agent's statistics
]

STATS = read_query("AgentStats.graphql")
ALL_STATS = """
query All($since: DateTime, $first: Int) {
  agentsStats(since: $since, first: $first) {
    agentName total byStatus { status count } byPriority { priority count }
    averageExecutionTimeSeconds p95ExecutionTimeSeconds successRate
    tasksRetried averageAttemptsPerTask maxAttempts topErrors { message count }
    pendingTasks { id name priority createdAt parentTaskId }
    failedTasks { id name attempts createdAt lastError { message timestamp } }
  }
}
"""


def by_status(**counts: int) -> list[dict[str, Any]]:
    # The one status order of the whole API (lifecycle order), the same as WorkflowProgress.counts.
    order = [status.name for status in Status]  # the domain's one order (paused included)
    return [{"status": s, "count": counts.get(s.lower(), 0)} for s in order]


def by_priority(**counts: int) -> list[dict[str, Any]]:
    return [{"priority": p, "count": counts.get(p.lower(), 0)} for p in ("LOW", "MEDIUM", "HIGH", "URGENT")]


def untimed(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without the expired task's error timestamp (the time it was read, or swept)."""
    for failed in answer["failedTasks"]:
        if failed["id"] == "e1":
            failed["lastError"].pop("timestamp")
    return answer


async def stats(gql: GraphQLClient, agent: str, **variables: Any) -> dict[str, Any]:
    return (await gql.data(STATS, {"agentName": agent, **variables}))["agentStats"]


@pytest.fixture
async def data_set(db: Any) -> None:
    await db.agent_task_states.insert_many([*agent_a(), *OTHERS])


async def test_agent_stats_pins_every_number(gql: GraphQLClient, data_set: None) -> None:
    s = await stats(gql, "AgentA")
    expired_message = present(task("e1", "in_progress", expires_at=EXPIRES))["last_error"]["message"]
    assert expired_message == "task expired at 2020-01-01T00:00:00.250000+00:00"
    assert {k: v for k, v in s.items() if k not in ("pendingTasks", "failedTasks")} == {
        "agentName": "AgentA",
        "total": 34,
        "byStatus": by_status(
            pending=3, in_progress=1, awaiting_dependency=1, completed=20, failed=5, retrying=2, cancelled=2
        ),
        "byPriority": by_priority(low=3, medium=20, high=10, urgent=1),
        "averageExecutionTimeSeconds": 10.5,  # mean of 1..20
        "p95ExecutionTimeSeconds": 19.0,  # nearest rank: the ceil(0.95 × 20) = 19th smallest
        "successRate": 0.8,  # 20 / (20 + 5)
        # attempts > 1: c01-c07, f1-f4, r1, i1
        "tasksRetried": 13,
        "averageAttemptsPerTask": 1.5,  # 51 attempts / 34 tasks
        "maxAttempts": 4,
        # 3 × timeout, 2 × rate limited, then the five single messages by message: the first three.
        "topErrors": [
            {"message": "timeout", "count": 3},
            {"message": "rate limited", "count": 2},
            {"message": "auth expired", "count": 1},
            {"message": "disk full", "count": 1},
            {"message": "network reset", "count": 1},
        ],
    }
    assert [t["id"] for t in s["pendingTasks"]] == ["p2", "p3", "p1"]  # oldest first, ties by id
    assert s["pendingTasks"][0] == {
        "id": "p2",
        "name": "p2",
        "priority": "MEDIUM",
        "createdAt": "2026-11-20T14:45:00+00:00",
        "parentTaskId": None,
    }
    assert [t["id"] for t in s["failedTasks"]] == ["f2", "f1", "f3", "f4", "e1"]
    assert s["failedTasks"][-1]["lastError"]["message"] == expired_message


async def test_numbers_are_the_same_once_the_sweeper_has_expired_the_task(
    gql: GraphQLClient, db: Any, data_set: None
) -> None:
    before = await stats(gql, "AgentA")
    assert await expire_overdue(Lifecycle(db)) == ["e1"]
    assert (await db.agent_task_states.find_one({"_id": "e1"}))["status"] == "failed"
    assert untimed(await stats(gql, "AgentA")) == untimed(before)


async def test_since_filters_on_created_at(gql: GraphQLClient, data_set: None) -> None:
    s = await stats(gql, "AgentA", since="2026-11-20T14:43:00Z")
    # r2, k1, p2, p3, k2, p1, w1, i1: nothing finished, so no times and no success rate.
    assert s["total"] == 8
    assert s["byStatus"] == by_status(
        pending=3, in_progress=1, awaiting_dependency=1, retrying=1, cancelled=2
    )
    assert s["byPriority"] == by_priority(medium=8)
    assert (s["averageExecutionTimeSeconds"], s["p95ExecutionTimeSeconds"], s["successRate"]) == (None,) * 3
    assert (s["tasksRetried"], s["averageAttemptsPerTask"], s["maxAttempts"]) == (1, 0.5, 2)
    assert s["topErrors"] == [
        {"message": m, "count": 1} for m in ("auth expired", "disk full", "network reset", "zzz")
    ]
    assert [t["id"] for t in s["pendingTasks"]] == ["p2", "p3", "p1"]
    assert s["failedTasks"] == []
    # A timestamp without an offset is UTC; a bound equal to created_at includes the task.
    assert (await stats(gql, "AgentA", since="2026-11-20T14:56:00"))["total"] == 1


async def test_unknown_agent_gets_zeros_and_nulls(gql: GraphQLClient, data_set: None) -> None:
    assert await stats(gql, "Nobody") == {
        "agentName": "Nobody",
        "total": 0,
        "byStatus": by_status(),
        "byPriority": by_priority(),
        "averageExecutionTimeSeconds": None,
        "p95ExecutionTimeSeconds": None,
        "successRate": None,
        "tasksRetried": 0,
        "averageAttemptsPerTask": None,
        "maxAttempts": None,
        "topErrors": [],
        "pendingTasks": [],
        "failedTasks": [],
    }


async def test_task_lists_take_their_size(gql: GraphQLClient, data_set: None) -> None:
    s = await stats(gql, "AgentA", pendingFirst=2, failedFirst=0)
    assert [t["id"] for t in s["pendingTasks"]] == ["p2", "p3"]
    assert s["failedTasks"] == []
    assert s["total"] == 34  # the lists' size changes nothing else
    error = await gql.error(STATS, {"agentName": "AgentA", "pendingFirst": 101})
    assert error["extensions"]["code"] == "PAGE_SIZE_OUT_OF_RANGE" and "pendingFirst" in error["message"]
    error = await gql.error(STATS, {"agentName": "AgentA", "failedFirst": -1})
    assert error["extensions"]["code"] == "PAGE_SIZE_OUT_OF_RANGE" and "failedFirst" in error["message"]


async def test_each_call_is_one_aggregate_and_nothing_else(
    gql: GraphQLClient, command_log: CommandLog, data_set: None
) -> None:
    command_log.clear()
    await stats(gql, "AgentA", since="2026-11-20T14:00:00Z")
    assert command_log.reads() == [("aggregate", "agent_task_states")]
    command_log.clear()
    await gql.data(ALL_STATS)
    assert command_log.reads() == [("aggregate", "agent_task_states")]


async def test_agents_stats_lists_every_agent_by_name_with_the_same_numbers(
    gql: GraphQLClient, data_set: None
) -> None:
    everyone = (await gql.data(ALL_STATS))["agentsStats"]
    assert [s["agentName"] for s in everyone] == ["AgentA", "AgentB"]  # the agentless task is left out
    assert untimed(everyone[0]) == untimed(await stats(gql, "AgentA"))
    agent_b = everyone[1]
    assert (agent_b["total"], agent_b["successRate"], agent_b["p95ExecutionTimeSeconds"]) == (1, 1.0, 5.0)
    assert agent_b["byStatus"] == by_status(completed=1)
    # `first` takes the first agents by name; `since` leaves out agents with no task in the period.
    assert [s["agentName"] for s in (await gql.data(ALL_STATS, {"first": 1}))["agentsStats"]] == ["AgentA"]
    assert (await gql.data(ALL_STATS, {"first": 0}))["agentsStats"] == []
    recent = (await gql.data(ALL_STATS, {"since": "2026-11-20T14:43:00Z"}))["agentsStats"]
    assert [(s["agentName"], s["total"]) for s in recent] == [("AgentA", 8)]
    error = await gql.error(ALL_STATS, {"first": 101})
    assert error["extensions"]["code"] == "PAGE_SIZE_OUT_OF_RANGE"


async def test_documents_of_other_programs_are_normalised(gql: GraphQLClient, db: Any) -> None:
    """Seed-shaped documents: capitalised statuses and priorities, ISO-string dates, string attempts."""
    await db.agent_task_states.insert_many(
        [
            {
                "_id": "x1",
                "agent_name": "Foreign",
                "status": "Completed",
                "priority": "High",
                "attempts": "2",
                "execution_time_seconds": 7,
                "created_at": "2026-11-20T15:00:00Z",
            },
            {
                "_id": "x2",
                "agent_name": "Foreign",
                "status": "In Progress",
                "created_at": "2026-11-20T13:00:00Z",
            },
            {"_id": "x3", "agent_name": "Foreign", "created_at": "2026-11-20T16:00:00+02:00"},  # 14:00 UTC
        ]
    )
    s = await stats(gql, "Foreign")
    assert s["byStatus"] == by_status(completed=1, in_progress=1, pending=1)
    assert s["byPriority"] == by_priority(high=1, medium=2)
    assert (s["tasksRetried"], s["maxAttempts"], s["averageExecutionTimeSeconds"]) == (1, 2, 7.0)
    assert [t["id"] for t in s["pendingTasks"]] == ["x3"]
    s = await stats(gql, "Foreign", since="2026-11-20T14:00:00Z")
    assert (s["total"], s["byStatus"]) == (2, by_status(completed=1, pending=1))


def _plan_stages(explained: Any, out: set[str]) -> set[str]:
    if isinstance(explained, dict):
        if "stage" in explained and isinstance(explained["stage"], str):
            out.add(explained["stage"])
        for key, value in explained.items():
            if key != "rejectedPlans":
                _plan_stages(value, out)
    elif isinstance(explained, list):
        for value in explained:
            _plan_stages(value, out)
    return out


async def test_the_aggregations_use_indexes(gql: GraphQLClient, db: Any, data_set: None) -> None:
    now = dt.datetime.now(dt.UTC)
    for pipeline in (
        agent_stats_pipeline("AgentA", since=T0, now=now, pending_first=20, failed_first=20),
        agent_stats_pipeline("AgentA", since=None, now=now, pending_first=20, failed_first=20),
        agents_stats_pipeline(since=T0, now=now, first=20, pending_first=20, failed_first=20),
    ):
        explained = await db.command(
            "explain", {"aggregate": "agent_task_states", "pipeline": pipeline, "cursor": {}}
        )
        stages = _plan_stages(explained, set())
        assert "IXSCAN" in stages and "COLLSCAN" not in stages, stages


# ---------------------------------------------------------------------------------- parents and sub-tasks

TREE = """
query Tree($filter: JSON!) {
  agentTasks(filter: $filter, first: 50) {
    edges { node { id parent { id } subtasks { id parent { id } subtasks { id parentTaskId } } } }
  }
}
"""


def family(parents: int, children: int) -> list[dict[str, Any]]:
    """`parents` roots with `children` children each, and one grandchild under every child."""
    docs = []
    for p in range(parents):
        docs.append(task(f"P{p}", "pending", minute=0))
        for k in range(children):
            # Created newest first, so the answer's order (oldest first) is not insertion order.
            docs.append(task(f"P{p}c{k}", "pending", minute=children - k, parent_task_id=f"P{p}"))
            docs.append(task(f"P{p}c{k}g", "pending", minute=10, parent_task_id=f"P{p}c{k}"))
    return docs


async def tree(gql: GraphQLClient, ids: list[str]) -> list[dict[str, Any]]:
    answer = await gql.data(TREE, {"filter": {"task_id": {"$in": ids}}})
    return [e["node"] for e in answer["agentTasks"]["edges"]]


async def test_subtasks_cost_a_constant_number_of_finds(
    gql: GraphQLClient, db: Any, command_log: CommandLog
) -> None:
    reads = {}
    for label, size in (("small", (1, 1)), ("large", (3, 4))):
        await db.agent_task_states.delete_many({})
        await db.agent_task_states.insert_many(family(*size))
        command_log.clear()
        roots = await tree(gql, [f"P{p}" for p in range(size[0])])
        reads[label] = command_log.reads()
        assert len(roots) == size[0]
        for root in roots:
            assert root["parent"] is None
            # oldest first: the last-created child id comes first
            assert [c["id"] for c in root["subtasks"]] == [
                f"{root['id']}c{k}" for k in reversed(range(size[1]))
            ]
            for child in root["subtasks"]:
                assert child["parent"] == {"id": root["id"]}
                assert child["subtasks"] == [{"id": f"{child['id']}g", "parentTaskId": child["id"]}]
    assert reads["small"] == reads["large"]
    # The list page, the children (one batch), their parents by id (one batch), the grandchildren.
    assert reads["large"] == [("find", "agent_task_states")] * 4


ADD = """
mutation Add($parent: ID!, $input: CreateAgentTaskInput!, $key: String) {
  r: addSubtask(parentId: $parent, input: $input, idempotencyKey: $key) {
    __typename
    ... on Error { message }
    ... on NotFoundError { id }
    ... on ValidationError { field }
    ... on AgentTaskSuccess { state { id agentName status parentTaskId parent { id } } events { type taskId } }
  }
}
"""


async def test_add_subtask_creates_a_child_under_its_parent(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("parent", "in_progress"))
    r = (
        await gql.data(
            ADD, {"parent": "parent", "input": {"id": "child", "agentName": "Helper"}, "key": "k1"}
        )
    )["r"]
    assert r == {
        "__typename": "AgentTaskSuccess",
        "state": {
            "id": "child",
            "agentName": "Helper",
            "status": "PENDING",
            "parentTaskId": "parent",
            "parent": {"id": "parent"},
        },
        "events": [{"type": "TASK_CREATED", "taskId": "child"}],
    }
    stored = await db.agent_task_states.find_one({"_id": "child"})
    assert (stored["parent_task_id"], stored["task_kind"], stored["status"]) == (
        "parent",
        "standalone",
        "pending",
    )
    assert await db.task_events.count_documents({"type": "TASK_CREATED", "task_id": "child"}) == 1
    # A retried request with the same key answers the same and writes nothing more.
    again = (
        await gql.data(
            ADD, {"parent": "parent", "input": {"id": "child", "agentName": "Helper"}, "key": "k1"}
        )
    )["r"]
    assert again == r
    assert await db.task_events.count_documents({"type": "TASK_CREATED", "task_id": "child"}) == 1
    # An input naming the same parent is fine; a generated id is a uuid.
    r = (await gql.data(ADD, {"parent": "parent", "input": {"parentTaskId": "parent"}}))["r"]
    assert r["__typename"] == "AgentTaskSuccess" and len(r["state"]["id"]) == 36
    subtasks = (await gql.data('{ agentTask(id: "parent") { subtasks { id } } }'))["agentTask"]["subtasks"]
    assert sorted(s["id"] for s in subtasks) == sorted(["child", r["state"]["id"]])


async def test_add_subtask_refusals_change_nothing(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_many([task("parent", "pending"), task("other", "pending")])
    before = await snapshot(db)
    r = (await gql.data(ADD, {"parent": "nope", "input": {"id": "child"}}))["r"]
    assert r["__typename"] == "NotFoundError" and r["id"] == "nope" and "nope" in r["message"]
    r = (await gql.data(ADD, {"parent": "parent", "input": {"id": "child", "parentTaskId": "other"}}))["r"]
    assert r["__typename"] == "ValidationError" and r["field"] == "input.parentTaskId"
    assert await snapshot(db) == before
