"""Lifecycle mutations over HTTP: every allowed and forbidden transition, what is stored afterwards, the
events written in the same transaction, compare-and-set, dependency release, idempotency and races."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.conftest import GraphQLClient
from tests.support.lifecycle_helpers import mutation, snapshot, task


async def test_start_progress_complete_round_trip(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending"))
    r = (await gql.data(mutation("startTask", 'id: "t1"')))["r"]
    assert r["__typename"] == "TaskTransitionSuccess"
    assert (
        r["state"]["status"] == "IN_PROGRESS" and r["state"]["attempts"] == 1 and r["state"]["version"] == 2
    )
    assert r["event"] == {
        "__typename": "StatusChangedEvent",
        "type": "STATUS_CHANGED",
        "taskId": "t1",
        "workflowId": None,
        "agentId": "AgentA",
    }

    r = (await gql.data(mutation("reportProgress", 'id: "t1", percentage: 42, currentStep: "Querying LLM"')))[
        "r"
    ]
    assert r["state"]["progressPercentage"] == 42 and r["state"]["currentStep"] == "Querying LLM"
    assert r["event"]["type"] == "TASK_PROGRESS"

    r = (
        await gql.data(
            mutation("completeTask", 'id: "t1", result: {snippet: "s1"}, executionTimeSeconds: 12.5')
        )
    )["r"]
    assert r["state"]["status"] == "COMPLETED" and r["state"]["executionTimeSeconds"] == 12.5
    assert [e["type"] for e in r["events"]] == ["STATUS_CHANGED", "TASK_COMPLETED"]

    stored = await db.agent_task_states.find_one({"_id": "t1"})
    assert stored["status"] == "completed" and stored["progress_percentage"] == 100 and stored["version"] == 4
    assert stored["completed_at"] is not None and stored["execution_time_seconds"] == 12.5
    events = [e async for e in db.task_events.find({"task_id": "t1"}).sort("_id", 1)]
    assert [e["type"] for e in events] == [
        "STATUS_CHANGED",
        "TASK_PROGRESS",
        "STATUS_CHANGED",
        "TASK_COMPLETED",
    ]
    assert events[1]["payload"] == {
        "task_id": "t1",
        "status": "in_progress",
        "progress": 0.42,
        "details": "Querying LLM",
    }
    assert events[3]["payload"] == {"task_id": "t1", "status": "completed", "result": {"snippet": "s1"}}
    assert all(e["agent_id"] == "AgentA" and e["timestamp"] is not None for e in events)


async def test_fail_retries_until_max_attempts_then_fails(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending", max_attempts=2))
    await gql.data(mutation("startTask", 'id: "t1"'))
    r = (await gql.data(mutation("failTask", 'id: "t1", error: "LLM timeout", details: "504"')))["r"]
    assert r["state"]["status"] == "RETRYING" and r["state"]["lastError"] == {
        "message": "LLM timeout",
        "details": "504",
    }
    await gql.data(mutation("startTask", 'id: "t1"'))
    r = (await gql.data(mutation("failTask", 'id: "t1", error: "LLM timeout again"')))["r"]
    assert r["state"]["status"] == "FAILED" and r["state"]["attempts"] == 2
    failed = await db.task_events.find_one({"task_id": "t1", "type": "TASK_FAILED"}, sort=[("_id", -1)])
    assert failed["payload"]["is_final"] is True and failed["payload"]["error"] == "LLM timeout again"
    r = (await gql.data(mutation("retryTask", 'id: "t1"')))["r"]
    assert r["state"]["status"] == "RETRYING"
    assert (await db.agent_task_states.find_one({"_id": "t1"}))[
        "max_attempts"
    ] == 3  # one more attempt granted


async def test_final_failure_and_cancel(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_many([task("t1", "in_progress", attempts=1), task("t2", "pending")])
    r = (await gql.data(mutation("failTask", 'id: "t1", error: "bad input", isFinal: true')))["r"]
    assert r["state"]["status"] == "FAILED"
    r = (await gql.data(mutation("cancelTask", 'id: "t2", reason: "user aborted"')))["r"]
    assert r["state"]["status"] == "CANCELLED" and r["state"]["currentStep"] == "cancelled: user aborted"


@pytest.mark.parametrize(
    ("status", "name", "args"),
    [
        ("completed", "startTask", ""),
        ("in_progress", "startTask", ""),
        ("awaiting_dependency", "startTask", ""),
        ("pending", "reportProgress", "percentage: 10"),
        ("pending", "completeTask", ""),
        ("failed", "completeTask", ""),
        ("completed", "failTask", 'error: "x"'),
        ("in_progress", "retryTask", ""),
        ("completed", "cancelTask", ""),
    ],
)
async def test_forbidden_transitions_are_errors_as_data_and_change_nothing(
    gql: GraphQLClient, db: Any, status: str, name: str, args: str
) -> None:
    await db.agent_task_states.insert_one(task("t1", status))
    before = await snapshot(db)
    r = (await gql.data(mutation(name, f'id: "t1" {args}')))["r"]
    assert r["__typename"] == "TransitionError"
    assert r["currentStatus"] == status.upper()
    assert status in r["message"]
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    ("name", "args", "field", "text"),
    [
        ("reportProgress", "percentage: 140", "percentage", "between 0 and 100"),
        ("reportProgress", "percentage: -1", "percentage", "between 0 and 100"),
        ("completeTask", "executionTimeSeconds: -3", "executionTimeSeconds", "negative"),
        ("failTask", 'error: ""', "error", "error"),
    ],
)
async def test_bad_arguments_are_validation_errors_and_change_nothing(
    gql: GraphQLClient, db: Any, name: str, args: str, field: str, text: str
) -> None:
    await db.agent_task_states.insert_one(task("t1", "in_progress", attempts=1))
    before = await snapshot(db)
    r = (await gql.data(mutation(name, f'id: "t1", {args}')))["r"]
    assert r["__typename"] == "ValidationError" and r["field"] == field and text in r["message"]
    assert await snapshot(db) == before


async def test_unknown_id_is_not_found(gql: GraphQLClient, db: Any) -> None:
    r = (await gql.data(mutation("startTask", 'id: "ghost"')))["r"]
    assert r == {"__typename": "NotFoundError", "message": "no task with id 'ghost'", "id": "ghost"}
    assert await db.task_events.count_documents({}) == 0


async def test_expected_version_is_compare_and_set(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending"))  # version 1
    before = await snapshot(db)
    r = (await gql.data(mutation("startTask", 'id: "t1", expectedVersion: 7')))["r"]
    assert r["__typename"] == "ConflictError" and r["currentVersion"] == 1
    assert await snapshot(db) == before
    r = (await gql.data(mutation("startTask", 'id: "t1", expectedVersion: 1')))["r"]
    assert r["state"]["version"] == 2


async def test_foreign_document_without_version_updates(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(
        {"_id": "f1", "agent_name": "X", "status": "Pending", "attempts": 0}
    )
    r = (await gql.data(mutation("startTask", 'id: "f1", expectedVersion: 0')))["r"]
    assert r["state"]["status"] == "IN_PROGRESS" and r["state"]["version"] == 1
    assert (await db.agent_task_states.find_one({"_id": "f1"}))["version"] == 1


async def test_completing_a_dependency_releases_its_dependents(gql: GraphQLClient, db: Any) -> None:
    dep = [{"task_id": "a", "status_expected": "completed"}]
    await db.agent_task_states.insert_many(
        [
            task("a", "in_progress", attempts=1),
            task("b", "awaiting_dependency", dependencies=dep),
            task(
                "c",
                "awaiting_dependency",
                dependencies=[*dep, {"task_id": "x", "status_expected": "completed"}],
            ),
            task("x", "pending"),
        ]
    )
    r = (await gql.data(mutation("startTask", 'id: "b"')))["r"]
    assert r["__typename"] == "TransitionError" and "dependencies are not met" in r["message"]

    r = (await gql.data(mutation("completeTask", 'id: "a"')))["r"]
    assert [(e["type"], e["taskId"]) for e in r["events"]] == [
        ("STATUS_CHANGED", "a"),
        ("TASK_COMPLETED", "a"),
        ("STATUS_CHANGED", "b"),  # b released in the same transaction; c still waits for x
    ]
    assert (await db.agent_task_states.find_one({"_id": "b"}))["status"] == "pending"
    assert (await db.agent_task_states.find_one({"_id": "c"}))["status"] == "awaiting_dependency"
    released = await db.task_events.find_one({"task_id": "b"})
    assert released["payload"] == {
        "task_id": "b",
        "from_status": "awaiting_dependency",
        "to_status": "pending",
    }


async def test_idempotency_key_returns_the_first_answer_and_applies_once(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "in_progress", attempts=1))
    args = 'id: "t1", percentage: 30, idempotencyKey: "req-1"'
    first = (await gql.data(mutation("reportProgress", args)))["r"]
    second = (await gql.data(mutation("reportProgress", args)))["r"]
    assert first == second and first["state"]["version"] == 2
    assert await db.task_events.count_documents({"task_id": "t1"}) == 1
    # the same key for another operation is refused
    r = (await gql.data(mutation("completeTask", 'id: "t1", idempotencyKey: "req-1"')))["r"]
    assert r["__typename"] == "ValidationError" and r["field"] == "idempotencyKey"


async def test_twenty_concurrent_completions_one_wins(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "in_progress", attempts=1))
    results = await asyncio.gather(*(gql.data(mutation("completeTask", 'id: "t1"')) for _ in range(20)))
    kinds = [r["r"]["__typename"] for r in results]
    assert kinds.count("TaskTransitionSuccess") == 1
    assert kinds.count("TransitionError") == 19
    assert await db.task_events.count_documents({"task_id": "t1", "type": "TASK_COMPLETED"}) == 1
    assert (await db.agent_task_states.find_one({"_id": "t1"}))["version"] == 2


CLAIM = """mutation($agent: String!) { r: claimTask(agentName: $agent) {
  __typename ... on TaskTransitionSuccess { state { id status attempts } } ... on NothingToClaim { message } } }"""


async def test_claim_hands_out_most_urgent_then_oldest(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_many(
        [
            task("old_low", "pending", priority="low", minute=0),
            task("new_urgent", "pending", priority="urgent", minute=10),
            task("old_urgent", "pending", priority="urgent", minute=5),
            task("blocked", "awaiting_dependency", priority="urgent", minute=0),
            task("other_agent", "pending", agent="AgentB", priority="urgent"),
        ]
    )
    order = [(await gql.data(CLAIM, {"agent": "AgentA"}))["r"] for _ in range(4)]
    assert [r.get("state", {}).get("id") for r in order[:3]] == ["old_urgent", "new_urgent", "old_low"]
    assert all(r["state"]["status"] == "IN_PROGRESS" and r["state"]["attempts"] == 1 for r in order[:3])
    assert order[3]["__typename"] == "NothingToClaim"


async def aborted_transactions(db: Any) -> int:
    return (await db.client.admin.command("serverStatus"))["transactions"]["totalAborted"]


async def test_twenty_concurrent_claimers_over_ten_tasks(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_many([task(f"t{i}", "pending", minute=i) for i in range(10)])
    aborted = await aborted_transactions(db)
    results = await asyncio.gather(*(gql.data(CLAIM, {"agent": "AgentA"}) for _ in range(20)))
    claimed = [r["r"]["state"]["id"] for r in results if r["r"]["__typename"] == "TaskTransitionSuccess"]
    assert sorted(claimed) == sorted(f"t{i}" for i in range(10))  # each task exactly once
    assert sum(r["r"]["__typename"] == "NothingToClaim" for r in results) == 10
    assert await db.task_events.count_documents({"type": "STATUS_CHANGED"}) == 10
    # Claimers in one process skip each other's candidates: none raced for the same task and retried.
    assert await aborted_transactions(db) == aborted


async def test_claim_reads_expiry_dates_written_as_strings(gql: GraphQLClient, db: Any) -> None:
    """Another program stored `expires_at` as ISO strings: a past one is never handed out, a future one is."""
    await db.agent_task_states.insert_many(
        [
            {
                "_id": "stale",
                "agent_name": "AgentA",
                "status": "pending",
                "priority_rank": 3,
                "expires_at": "2000-01-01T00:00:00Z",
            },
            {
                "_id": "fresh",
                "agent_name": "AgentA",
                "status": "pending",
                "priority_rank": 1,
                "expires_at": "2999-01-01T00:00:00Z",
            },
        ]
    )
    first = (await gql.data(CLAIM, {"agent": "AgentA"}))["r"]
    assert first["state"]["id"] == "fresh"
    assert (await gql.data(CLAIM, {"agent": "AgentA"}))["r"]["__typename"] == "NothingToClaim"


async def test_claim_reads_past_stale_images_of_recent_claims(db: Any) -> None:
    """A claimer whose snapshot predates recent claims still sees those tasks pending. The candidate query
    leaves room for only a few of them (`CLAIM_STALE_SLACK`), so when more come back it reads further
    instead of handing out nothing; a lingering task claimable again (a later version) is not skipped."""
    from app.lifecycle.transitions import CLAIM_STALE_SLACK, Lifecycle
    from app.store.indexes import ensure_indexes

    await ensure_indexes(db)
    lifecycle = Lifecycle(db)
    stale = CLAIM_STALE_SLACK * 3
    await db.agent_task_states.insert_many(
        [task(f"t{i:02}", "pending", priority="urgent", minute=i) for i in range(stale + 1)]
    )
    # As just after this process claimed t00…: their commits are not in the snapshot the query reads.
    for i in range(stale):
        lifecycle._claiming[f"t{i:02}"] = time.monotonic() + 60
        lifecycle._claimed_version[f"t{i:02}"] = 1
    applied = await lifecycle.claim("AgentA")
    assert applied is not None and applied.state["_id"] == f"t{stale:02}"
    assert (await db.agent_task_states.find_one({"_id": f"t{stale:02}"}))["status"] == "in_progress"
    # t03 failed since and is claimable again, at a later version than the claim this process made.
    await db.agent_task_states.update_one({"_id": "t03"}, {"$set": {"version": 3, "status": "retrying"}})
    again = await lifecycle.claim("AgentA")
    assert again is not None and again.state["_id"] == "t03"
    assert (await db.agent_task_states.find_one({"_id": "t03"}))["status"] == "in_progress"


async def test_two_processes_claiming_spread_after_a_collision(db: Any) -> None:
    """Two processes (two Lifecycles, each with its own in-process bookkeeping) with 8 claimers each
    over one agent's queue: every task is handed out exactly once, and a collision between them (a
    retried claim) puts the process that lost it into spreading its first attempts."""
    from app.lifecycle.transitions import Lifecycle
    from app.store.indexes import ensure_indexes

    await ensure_indexes(db)
    processes = [Lifecycle(db), Lifecycle(db)]
    await db.agent_task_states.insert_many([task(f"t{i:03}", "pending", minute=i) for i in range(96)])
    aborted = await aborted_transactions(db)

    async def claimer(lifecycle: Lifecycle) -> list[str]:
        got: list[str] = []
        while (applied := await lifecycle.claim("AgentA")) is not None:
            got.append(applied.state["_id"])
        return got

    results = await asyncio.gather(*(claimer(processes[i % 2]) for i in range(16)))
    claimed = [t for got in results for t in got]
    assert sorted(claimed) == [f"t{i:03}" for i in range(96)]  # each task exactly once
    assert await db.agent_task_states.count_documents({"status": "in_progress", "attempts": 1}) == 96
    collisions = await aborted_transactions(db) - aborted
    contended = [p for p in processes if p._contended_until > 0]
    # Sixteen claimers on the head of one queue from two processes collide; whoever lost spreads.
    assert collisions > 0 and contended, (collisions, [p._contended_until for p in processes])


async def test_a_contended_process_spreads_within_the_top_priority_only(db: Any) -> None:
    """Spreading (after a collision with another process) picks at random among the oldest candidates
    of the most urgent priority present: age order loosens within that window, priority order never."""
    import random

    from app.lifecycle.transitions import Lifecycle
    from app.store.indexes import ensure_indexes

    await ensure_indexes(db)
    lifecycle = Lifecycle(db, claim_spread=4)
    await db.agent_task_states.insert_many(
        [task(f"u{i}", "pending", priority="urgent", minute=i) for i in range(6)]
        + [task(f"l{i}", "pending", priority="low", minute=i) for i in range(6)]
    )
    random.seed(7)
    lifecycle._contended_until = time.monotonic() + 60
    order = []
    for _ in range(12):
        applied = await lifecycle.claim("AgentA")
        assert applied is not None
        order.append(applied.state["_id"])
    assert sorted(order[:6]) == [f"u{i}" for i in range(6)]  # every urgent task before any low one
    assert sorted(order[6:]) == [f"l{i}" for i in range(6)]
    assert order != [*(f"u{i}" for i in range(6)), *(f"l{i}" for i in range(6))]  # spread, not strict
    assert await lifecycle.claim("AgentA") is None


async def test_a_claim_reads_a_few_candidates_on_the_claim_index(gql: GraphQLClient, db: Any) -> None:
    """However long the queue, a claim reads a handful of index keys and documents: the claim index yields
    them in claim order (MongoDB's profiler says what the query examined and which plan it used)."""
    from app.store.collections import CLAIM_INDEX

    await db.agent_task_states.insert_many(
        [
            task(f"q{i:03}", "pending", priority=("low", "medium", "high", "urgent")[i % 4], minute=i)
            for i in range(400)
        ]
    )
    await db.command("profile", 2)
    try:
        r = (await gql.data(CLAIM, {"agent": "AgentA"}))["r"]
    finally:
        await db.command("profile", 0)
    assert r["state"]["id"] == "q003"  # the oldest urgent one
    finds = [
        p
        async for p in db["system.profile"].find(
            {"ns": f"{db.name}.agent_task_states", "op": "query", "command.filter.agent_name": "AgentA"}
        )
    ]
    assert len(finds) == 1, finds
    claim_scan = "IXSCAN { " + ", ".join(f"{k}: {d}" for k, d in CLAIM_INDEX.keys) + " }"
    assert finds[0]["planSummary"] == f"{claim_scan}, {claim_scan}"  # one scan per claimable status, merged
    assert finds[0]["docsExamined"] <= 8 and finds[0]["keysExamined"] <= 8, finds[0]


async def test_start_up_drops_the_retired_claim_index(db: Any) -> None:
    """The claim index before it ended with `_id` costs every write and serves nothing: start-up drops it
    where an earlier version created it, and creates the current one."""
    from app.store.collections import AGENT_TASK_STATES, CLAIM_INDEX
    from app.store.indexes import ensure_indexes

    retired = AGENT_TASK_STATES.retired_indexes[0]
    await db.agent_task_states.create_index(
        [("agent_name", 1), ("status", 1), ("priority_rank", -1), ("created_at", 1)], name=retired
    )
    await ensure_indexes(db)
    names = set(await db.agent_task_states.index_information())
    assert retired not in names and CLAIM_INDEX.name in names
    await ensure_indexes(db)  # and again, as every later start does
    assert set(await db.agent_task_states.index_information()) == names
