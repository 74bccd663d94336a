"""Leases, heartbeats and fencing over HTTP with a real mongod: claims and starts take a lease, heartbeats
extend it, a lapsed lease goes back to retrying (once, with LEASE_EXPIRED, even with two server processes
sweeping), and a stale attempt is refused as `LeaseLostError` without writing anything."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from app.domain import utcnow
from app.lifecycle.expiry import lapse_overdue
from app.lifecycle.transitions import Lifecycle
from app.rest.openapi import openapi_document
from app.settings import Settings
from app.store.indexes import ensure_indexes
from tests.conftest import GraphQLClient
from tests.support.app import serving
from tests.support.lifecycle_helpers import snapshot, task
from tests.support.polling import until
from tests.support.servers import serve

RESULT = """
  __typename
  ... on Error { message }
  ... on ValidationError { field }
  ... on TransitionError { currentStatus }
  ... on LeaseLostError { currentAttempt currentHolder leaseStatus: currentStatus }
  ... on TaskTransitionSuccess {
    state { id status attempts version progressPercentage currentStep leaseHolder leaseExpiresAt
            lastHeartbeatAt startedAt lastError { message } }
    events { __typename type }
  }
"""


#: ClaimTaskResult holds neither TransitionError nor LeaseLostError: a claim starts a task it picked.
CLAIM_RESULT = RESULT.replace("... on TransitionError { currentStatus }", "").replace(
    "... on LeaseLostError { currentAttempt currentHolder leaseStatus: currentStatus }", ""
)


def call(name: str, args: str) -> str:
    return f"mutation {{ r: {name}({args}) {{ {CLAIM_RESULT if name == 'claimTask' else RESULT} }} }}"


def when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def run(gql: GraphQLClient, name: str, args: str) -> dict[str, Any]:
    return (await gql.data(call(name, args)))["r"]


async def stored(db: Any, task_id: str = "t1") -> dict[str, Any]:
    return await db.agent_task_states.find_one({"_id": task_id})


async def event_types(db: Any, task_id: str = "t1") -> list[str]:
    return [e["type"] async for e in db.task_events.find({"task_id": task_id}).sort("_id", 1)]


@pytest.fixture
async def quiet_gql(settings: Settings, db: Any) -> AsyncIterator[GraphQLClient]:
    """The app with its sweeper stopped: a lapsed lease stays as stored until a test sweeps."""
    async with serving(settings, sweep_seconds=None) as gql:
        yield gql


@pytest.fixture
async def lifecycle(db: Any) -> Lifecycle:
    await ensure_indexes(db)
    return Lifecycle(db)


# --- taking a lease --------------------------------------------------------------------------------------


async def test_claim_takes_a_lease_for_the_worker(quiet_gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_many([task("t1", "pending"), task("t2", "pending", minute=1)])
    r = await run(quiet_gql, "claimTask", 'agentName: "AgentA", leaseSeconds: 30, workerId: "worker-7"')
    assert r["__typename"] == "TaskTransitionSuccess"
    state = r["state"]
    assert (state["id"], state["status"], state["attempts"]) == ("t1", "IN_PROGRESS", 1)
    assert state["leaseHolder"] == "worker-7" and state["lastHeartbeatAt"] is None
    assert when(state["leaseExpiresAt"]) - when(state["startedAt"]) == dt.timedelta(seconds=30)
    doc = await stored(db)
    assert doc["lease_holder"] == "worker-7" and doc["last_heartbeat_at"] is None
    assert doc["lease_expires_at"] - doc["started_at"] == dt.timedelta(seconds=30)

    # Without leaseSeconds and workerId: the setting's default, held by the agent.
    r = await run(quiet_gql, "claimTask", 'agentName: "AgentA"')
    assert r["state"]["id"] == "t2" and r["state"]["leaseHolder"] == "AgentA"
    assert when(r["state"]["leaseExpiresAt"]) - when(r["state"]["startedAt"]) == dt.timedelta(seconds=60)


async def test_start_takes_a_lease_too(quiet_gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "retrying", attempts=1))
    r = await run(quiet_gql, "startTask", 'id: "t1", leaseSeconds: 5, workerId: "w"')
    assert r["state"]["attempts"] == 2 and r["state"]["leaseHolder"] == "w"
    assert when(r["state"]["leaseExpiresAt"]) - when(r["state"]["startedAt"]) == dt.timedelta(seconds=5)


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        ("leaseSeconds: 0", "leaseSeconds", "lease_seconds must be at least 1, got 0"),
        ("leaseSeconds: 3601", "leaseSeconds", "lease_seconds must be at most 3600, got 3601"),
        ('workerId: ""', "workerId", "worker_id must not be empty"),
    ],
)
async def test_lease_bounds_are_refused_as_data(
    quiet_gql: GraphQLClient, db: Any, args: str, field: str, message: str
) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending"))
    before = await snapshot(db)
    for name, target in (("claimTask", 'agentName: "AgentA"'), ("startTask", 'id: "t1"')):
        r = await run(quiet_gql, name, f"{target}, {args}")
        assert r == {"__typename": "ValidationError", "message": message, "field": field}
    r = await run(quiet_gql, "heartbeatTask", 'id: "t1", leaseSeconds: 0')
    assert r["__typename"] == "ValidationError" and r["field"] == "leaseSeconds"
    assert await snapshot(db) == before


async def test_claim_picks_up_retrying_tasks(quiet_gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending"))
    first = await run(quiet_gql, "claimTask", 'agentName: "AgentA"')
    failed = await run(quiet_gql, "failTask", 'id: "t1", error: "flaky", attempt: 1')
    assert failed["state"]["status"] == "RETRYING" and failed["state"]["leaseHolder"] is None
    again = await run(quiet_gql, "claimTask", 'agentName: "AgentA"')
    assert (first["state"]["attempts"], again["state"]["attempts"]) == (1, 2)
    assert again["state"]["status"] == "IN_PROGRESS"
    # No attempts left: a retrying task is not handed out (its max_attempts was lowered meanwhile).
    await run(quiet_gql, "failTask", 'id: "t1", error: "flaky", attempt: 2')
    await db.agent_task_states.update_one({"_id": "t1"}, {"$set": {"max_attempts": 2}})
    nothing = await quiet_gql.data('mutation { r: claimTask(agentName: "AgentA") { __typename } }')
    assert nothing["r"]["__typename"] == "NothingToClaim"


# --- heartbeats ------------------------------------------------------------------------------------------


async def test_heartbeat_extends_the_lease_and_writes_no_event(quiet_gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending"))
    await run(quiet_gql, "claimTask", 'agentName: "AgentA", leaseSeconds: 5, workerId: "w1"')
    events_before = await event_types(db)
    r = await run(quiet_gql, "heartbeatTask", 'id: "t1", attempt: 1, leaseSeconds: 120')
    assert r["__typename"] == "TaskTransitionSuccess" and r["events"] == []
    state = r["state"]
    assert state["leaseHolder"] == "w1" and state["version"] == 3
    assert when(state["leaseExpiresAt"]) - when(state["lastHeartbeatAt"]) == dt.timedelta(seconds=120)
    doc = await stored(db)
    assert doc["lease_expires_at"] - doc["last_heartbeat_at"] == dt.timedelta(seconds=120)
    assert await event_types(db) == events_before

    # The default extension is the setting's; without `attempt` the holder names itself (fencing by
    # default: an untokened heartbeat from anyone else is refused, see the tests at the end).
    r = await run(quiet_gql, "heartbeatTask", 'id: "t1", workerId: "w1"')
    assert when(r["state"]["leaseExpiresAt"]) - when(r["state"]["lastHeartbeatAt"]) == dt.timedelta(
        seconds=60
    )


async def test_heartbeat_with_progress_writes_task_progress(quiet_gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending"))
    await run(quiet_gql, "claimTask", 'agentName: "AgentA"')
    r = await run(quiet_gql, "heartbeatTask", 'id: "t1", attempt: 1, percentage: 40, currentStep: "drafting"')
    assert [e["type"] for e in r["events"]] == ["TASK_PROGRESS"]
    assert r["state"]["progressPercentage"] == 40 and r["state"]["currentStep"] == "drafting"
    assert r["state"]["lastHeartbeatAt"] is not None
    event = await db.task_events.find_one({"task_id": "t1", "type": "TASK_PROGRESS"})
    assert event["payload"] == {
        "task_id": "t1",
        "status": "in_progress",
        "progress": 0.4,
        "details": "drafting",
    }


async def test_heartbeat_is_refused_unless_in_progress(quiet_gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending"))
    before = await snapshot(db)
    r = await run(quiet_gql, "heartbeatTask", 'id: "t1"')
    assert r == {
        "__typename": "TransitionError",
        "message": "cannot heartbeat a task that is pending",
        "currentStatus": "PENDING",
    }
    assert await snapshot(db) == before


# --- fencing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("completeTask", ""),
        ("reportProgress", ", percentage: 50"),
        ("heartbeatTask", ""),
        ("heartbeatTask", ", percentage: 50"),
        ("failTask", ', error: "late"'),
    ],
)
async def test_a_stale_attempt_is_refused_and_changes_nothing(
    quiet_gql: GraphQLClient, db: Any, name: str, args: str
) -> None:
    lease = utcnow() + dt.timedelta(minutes=5)
    await db.agent_task_states.insert_one(
        task("t1", "in_progress", attempts=2, lease_holder="B", lease_expires_at=lease)
    )
    before = await snapshot(db)
    r = await run(quiet_gql, name, f'id: "t1", attempt: 1{args}')
    assert r == {
        "__typename": "LeaseLostError",
        "message": "attempt 1 no longer holds task 't1': it is in_progress under attempt 2, leased to B",
        "currentAttempt": 2,
        "currentHolder": "B",
        "leaseStatus": "IN_PROGRESS",
    }
    assert await snapshot(db) == before
    # The current attempt's token is accepted.
    assert (await run(quiet_gql, name, f'id: "t1", attempt: 2{args}'))[
        "__typename"
    ] == "TaskTransitionSuccess"


async def test_a_token_of_a_finished_attempt_is_refused(quiet_gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("t1", "completed", attempts=1))
    before = await snapshot(db)
    r = await run(quiet_gql, "completeTask", 'id: "t1", attempt: 1')
    assert r["__typename"] == "LeaseLostError"
    assert (r["currentAttempt"], r["currentHolder"], r["leaseStatus"]) == (1, None, "COMPLETED")
    assert await snapshot(db) == before
    # Without a token, today's answer.
    assert (await run(quiet_gql, "completeTask", 'id: "t1"'))["__typename"] == "TransitionError"


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("completeTask", "attempt: 1, result: {done: true}"),
        ("completeTask", ""),
        ("reportProgress", "attempt: 1, percentage: 50"),
        ("heartbeatTask", "attempt: 1"),
        ("failTask", 'attempt: 1, error: "late"'),
    ],
)
async def test_a_lapsed_lease_is_refused_before_the_sweep(
    quiet_gql: GraphQLClient, db: Any, name: str, args: str
) -> None:
    lapsed_at = (utcnow() - dt.timedelta(seconds=2)).replace(microsecond=0)
    await db.agent_task_states.insert_one(
        task("t1", "in_progress", attempts=1, lease_holder="A", lease_expires_at=lapsed_at)
    )
    before = await snapshot(db)
    r = await run(quiet_gql, name, f'id: "t1" {", " + args if args else ""}')
    assert r == {
        "__typename": "LeaseLostError",
        "message": f"the lease of task 't1' held by A expired at {lapsed_at.isoformat()} (attempt 1);"
        " the next sweep returns it to retrying",
        "currentAttempt": 1,
        "currentHolder": None,
        "leaseStatus": "IN_PROGRESS",
    }
    assert await snapshot(db) == before


async def test_agent_a_loses_its_lapsed_lease_to_agent_b(settings: Settings, db: Any) -> None:
    """Issue 10's story: A claims, its lease lapses and is swept, B claims; A's completion is refused and
    B's succeeds; the events tell it in order."""
    await db.agent_task_states.insert_one(task("t1", "pending"))
    async with serving(settings, sweep_seconds=0.1) as gql:
        a = await run(gql, "claimTask", 'agentName: "AgentA", leaseSeconds: 1, workerId: "A"')
        assert (a["state"]["attempts"], a["state"]["leaseHolder"]) == (1, "A")
        lapsed_at = when(a["state"]["leaseExpiresAt"])

        async def swept() -> bool:
            return (await stored(db))["status"] == "retrying"

        await until(swept, within=30)
        doc = await stored(db)
        message = f"lease held by A expired at {lapsed_at.isoformat()} (attempt 1)"
        assert doc["last_error"]["message"] == message
        assert (doc["lease_holder"], doc["lease_expires_at"], doc["last_heartbeat_at"]) == (None, None, None)

        b = await run(gql, "claimTask", 'agentName: "AgentA", leaseSeconds: 300, workerId: "B"')
        assert (b["state"]["id"], b["state"]["attempts"], b["state"]["leaseHolder"]) == ("t1", 2, "B")

        before = await snapshot(db)
        late = await run(gql, "completeTask", 'id: "t1", attempt: 1, result: {by: "A"}')
        assert late == {
            "__typename": "LeaseLostError",
            "message": "attempt 1 no longer holds task 't1': it is in_progress under attempt 2, leased to B",
            "currentAttempt": 2,
            "currentHolder": "B",
            "leaseStatus": "IN_PROGRESS",
        }
        assert await snapshot(db) == before

        done = await run(gql, "completeTask", 'id: "t1", attempt: 2, result: {by: "B"}')
        assert done["__typename"] == "TaskTransitionSuccess" and done["state"]["status"] == "COMPLETED"
        assert done["state"]["leaseHolder"] is None and done["state"]["leaseExpiresAt"] is None

        assert await event_types(db) == [
            "STATUS_CHANGED",  # pending → in_progress (A)
            "STATUS_CHANGED",  # in_progress → retrying
            "LEASE_EXPIRED",
            "TASK_TIMED_OUT",  # kind HEARTBEAT: the lease is the heartbeat timeout
            "STATUS_CHANGED",  # retrying → in_progress (B)
            "STATUS_CHANGED",  # in_progress → completed
            "TASK_COMPLETED",
        ]
        completed = await db.task_events.find_one({"task_id": "t1", "type": "TASK_COMPLETED"})
        assert completed["payload"]["result"] == {"by": "B"}

        # The API's view of the lapse: one LeaseExpiredEvent (once the hub has stamped it).
        query = """{ taskEvents(taskId: "t1", types: [LEASE_EXPIRED]) { edges { node {
                      __typename type agentId ... on LeaseExpiredEvent { holder attempt leaseExpiresAt status }
                   } } } }"""

        async def stamped() -> bool:
            return len((await gql.data(query))["taskEvents"]["edges"]) == 1

        await until(stamped, within=30)
        node = (await gql.data(query))["taskEvents"]["edges"][0]["node"]
        assert node == {
            "__typename": "LeaseExpiredEvent",
            "type": "LEASE_EXPIRED",
            "agentId": "AgentA",
            "holder": "A",
            "attempt": 1,
            "leaseExpiresAt": node["leaseExpiresAt"],
            "status": "RETRYING",
        }
        assert when(node["leaseExpiresAt"]) == lapsed_at


# --- the sweep -------------------------------------------------------------------------------------------


async def test_a_lapse_with_the_attempts_used_up_fails_the_task(db: Any, lifecycle: Lifecycle) -> None:
    now = utcnow()
    lapsed_at = now - dt.timedelta(seconds=1)
    await db.agent_task_states.insert_many(
        [
            task("last", "in_progress", attempts=3, lease_holder="w", lease_expires_at=lapsed_at),
            task("more", "in_progress", attempts=1, lease_holder="w", lease_expires_at=lapsed_at),
            task(
                "held",
                "in_progress",
                attempts=1,
                lease_holder="w",
                lease_expires_at=now + dt.timedelta(hours=1),
            ),
            task("unleased", "in_progress", attempts=1),
            task("done", "completed", attempts=1),
        ]
    )
    assert sorted(await lapse_overdue(lifecycle, now)) == ["last", "more"]
    last, more = await stored(db, "last"), await stored(db, "more")
    assert (last["status"], more["status"]) == ("failed", "retrying")
    assert last["attempts"] == 3 and more["attempts"] == 1  # the attempt was counted when it started
    event = await db.task_events.find_one({"task_id": "last", "type": "LEASE_EXPIRED"})
    assert event["payload"] == {
        "task_id": "last",
        "holder": "w",
        "attempt": 3,
        "lease_expires_at": lapsed_at.isoformat(),
        "status": "failed",
    }
    assert await event_types(db, "last") == ["STATUS_CHANGED", "LEASE_EXPIRED", "TASK_TIMED_OUT"]
    for untouched in ("held", "unleased", "done"):
        assert (await stored(db, untouched))["version"] == 1
    assert await lapse_overdue(lifecycle, now) == []  # nothing left to do


async def test_a_heartbeat_before_the_sweep_keeps_the_task(db: Any, lifecycle: Lifecycle) -> None:
    """The sweep read a lapsed lease; by its write, a heartbeat had moved it on: nothing is lapsed."""
    now = utcnow()
    await db.agent_task_states.insert_one(
        task(
            "t1", "in_progress", attempts=1, lease_holder="w", lease_expires_at=now + dt.timedelta(seconds=30)
        )
    )
    # As of a minute from now the lease has run out, but it was extended meanwhile: the guard holds.
    later = now + dt.timedelta(minutes=1)
    await db.agent_task_states.update_one(
        {"_id": "t1"}, {"$set": {"lease_expires_at": later + dt.timedelta(seconds=30)}}
    )
    assert await lapse_overdue(lifecycle, later) == []
    assert (await stored(db))["status"] == "in_progress"


async def test_concurrent_sweeps_lapse_each_lease_once(db: Any, lifecycle: Lifecycle) -> None:
    past = utcnow() - dt.timedelta(seconds=1)
    ids = [f"t{i}" for i in range(8)]
    await db.agent_task_states.insert_many(
        [task(i, "in_progress", attempts=1, lease_holder="w", lease_expires_at=past) for i in ids]
    )
    first, second = await asyncio.gather(lapse_overdue(lifecycle), lapse_overdue(Lifecycle(db)))
    assert sorted(first + second) == ids
    for task_id in ids:
        assert await event_types(db, task_id) == ["STATUS_CHANGED", "LEASE_EXPIRED", "TASK_TIMED_OUT"]


async def test_two_server_processes_lapse_each_lease_exactly_once(settings: Settings, db: Any) -> None:
    """Two `agent-tasks serve` processes sweep one database every 0.1 s. Tasks claimed through both run
    out of lease together (moved into the past here, so a slow claim loop cannot let one lapse early),
    are claimed again and run out again: one LEASE_EXPIRED and one status change per lapse."""
    env = {
        "MONGODB_URI": settings.mongodb_uri or "",
        "MONGODB_DB": settings.mongodb_db,
        "EXPIRY_SWEEP_SECONDS": "0.1",
    }
    ids = [f"t{i:02d}" for i in range(12)]
    await db.agent_task_states.insert_many([task(i, "pending", max_attempts=2) for i in ids])
    claim = (
        'mutation { r: claimTask(agentName: "AgentA", leaseSeconds: 3600) {'
        " __typename ... on TaskTransitionSuccess { state { id attempts } } } }"
    )

    async def statuses() -> set[str]:
        return {d["status"] async for d in db.agent_task_states.find()}

    with ExitStack() as stack:
        # Started from a thread: a server takes a second or two to come up.
        servers = [await asyncio.to_thread(stack.enter_context, serve(env)) for _ in range(2)]
        async with httpx.AsyncClient(timeout=30) as http:
            for attempt, target in ((1, "retrying"), (2, "failed")):
                claimed = set()
                for n in range(len(ids)):
                    answer = await http.post(f"{servers[n % 2].url}/graphql", json={"query": claim})
                    state = answer.json()["data"]["r"]["state"]
                    assert state["attempts"] == attempt, answer.text
                    claimed.add(state["id"])
                assert claimed == set(ids)
                await db.agent_task_states.update_many(
                    {}, {"$set": {"lease_expires_at": utcnow() - dt.timedelta(seconds=1)}}
                )

                async def settled(target: str = target) -> bool:
                    return await statuses() == {target}

                await until(settled, within=60)
    # Both processes swept all along; each lapse was handled once, with one status change.
    for task_id in ids:
        # (Ids made by two processes do not sort by time: the events are sorted by attempt.)
        lapses = db.task_events.find({"task_id": task_id, "type": "LEASE_EXPIRED"})
        assert sorted([(e["payload"]["attempt"], e["payload"]["status"]) async for e in lapses]) == [
            (1, "retrying"),
            (2, "failed"),
        ]
        moved = {"task_id": task_id, "type": "STATUS_CHANGED", "payload.from_status": "in_progress"}
        assert await db.task_events.count_documents(moved) == 2


# --- REST ------------------------------------------------------------------------------------------------


async def test_rest_reads_show_the_lease_and_bodies_may_not_write_it(
    client: httpx.AsyncClient, settings: Settings, db: Any
) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending"))
    gql = GraphQLClient(client)
    claimed = await run(gql, "claimTask", 'agentName: "AgentA", leaseSeconds: 45, workerId: "w9"')
    await run(gql, "heartbeatTask", 'id: "t1", attempt: 1')
    doc = await stored(db)
    body = (await client.get("/agent-tasks/t1")).json()
    assert body["lease_holder"] == "w9" == claimed["state"]["leaseHolder"]
    assert when(body["lease_expires_at"]) == doc["lease_expires_at"]
    assert when(body["last_heartbeat_at"]) == doc["last_heartbeat_at"]
    listed = (await client.post("/agent-tasks/query", json={"lease_holder": "w9"})).json()
    assert [item["task_id"] for item in listed["items"]] == ["t1"]

    for field in ("lease_holder", "lease_expires_at", "last_heartbeat_at"):
        refused = await client.patch("/agent-tasks/t1", json={field: None})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_field"
    assert await stored(db) == doc

    schemas = openapi_document(settings)["components"]["schemas"]
    assert {"lease_holder", "lease_expires_at", "last_heartbeat_at"} <= schemas["AgentTask"][
        "properties"
    ].keys()
    for body_model in ("AgentTaskCreate", "AgentTaskUpdate"):
        assert "lease_holder" not in schemas[body_model]["properties"]


# --- fencing by default: a write without its token must come from the lease holder -----------------------


async def test_a_write_without_a_token_from_another_worker_is_refused(
    quiet_gql: GraphQLClient, db: Any
) -> None:
    """Worker w1's lease lapses, w2 claims the task again; w1, which forgot its token, cannot write into
    w2's attempt: not without a token, not naming itself, not with its own stale token."""
    await db.agent_task_states.insert_one(task("t1", "pending"))
    r = await run(quiet_gql, "claimTask", 'agentName: "AgentA", leaseSeconds: 60, workerId: "w1"')
    assert r["state"]["leaseHolder"] == "w1"
    # The lease runs out and the sweep hands the task back; w2 claims it.
    await db.agent_task_states.update_one(
        {"_id": "t1"}, {"$set": {"lease_expires_at": utcnow() - dt.timedelta(seconds=1)}}
    )
    app_lifecycle = Lifecycle(db)
    assert await lapse_overdue(app_lifecycle) == ["t1"]
    r = await run(quiet_gql, "claimTask", 'agentName: "AgentA", leaseSeconds: 60, workerId: "w2"')
    assert (r["state"]["leaseHolder"], r["state"]["attempts"]) == ("w2", 2)
    before = await snapshot(db)
    refusals = {
        "": "task 't1' is leased to w2 (attempt 2); a caller without a workerId (agent 'AgentA') is not the"
        " lease holder: pass the attempt token the claim answered, or the holder's workerId",
        ', workerId: "w1"': "task 't1' is leased to w2 (attempt 2); worker 'w1' is not the lease holder:"
        " pass the attempt token the claim answered, or the holder's workerId",
        ', workerId: "w1", attempt: 2': "task 't1' is leased to w2 (attempt 2); worker 'w1' is not the lease"
        " holder: pass the attempt token the claim answered, or the holder's workerId",
        ", attempt: 1": "attempt 1 no longer holds task 't1': it is in_progress under attempt 2, leased to w2",
    }
    for name, args in (
        ("completeTask", ""),
        ("reportProgress", ", percentage: 50"),
        ("heartbeatTask", ""),
        ("failTask", ', error: "late"'),
    ):
        for who, message in refusals.items():
            r = await run(quiet_gql, name, f'id: "t1"{args}{who}')
            assert r == {
                "__typename": "LeaseLostError",
                "message": message,
                "currentAttempt": 2,
                "currentHolder": "w2",
                "leaseStatus": "IN_PROGRESS",
            }, (name, who)
    assert await snapshot(db) == before
    # The holder may write by naming itself, with or without its token.
    r = await run(quiet_gql, "reportProgress", 'id: "t1", percentage: 40, workerId: "w2"')
    assert (r["__typename"], r["state"]["progressPercentage"]) == ("TaskTransitionSuccess", 40)
    r = await run(quiet_gql, "completeTask", 'id: "t1", workerId: "w2", attempt: 2')
    assert (r["__typename"], r["state"]["status"]) == ("TaskTransitionSuccess", "COMPLETED")


async def test_a_claim_without_a_worker_id_keeps_writes_without_a_token_working(
    quiet_gql: GraphQLClient, db: Any
) -> None:
    """The lease holder defaults to the agent, and so does the caller: the simplest client still works."""
    await db.agent_task_states.insert_one(task("t1", "pending"))
    r = await run(quiet_gql, "claimTask", 'agentName: "AgentA"')
    assert r["state"]["leaseHolder"] == "AgentA"
    r = await run(quiet_gql, "heartbeatTask", 'id: "t1", percentage: 10')
    assert r["__typename"] == "TaskTransitionSuccess"
    r = await run(quiet_gql, "completeTask", 'id: "t1"')
    assert (r["__typename"], r["state"]["status"]) == ("TaskTransitionSuccess", "COMPLETED")
    assert (await stored(db))["status"] == "completed"


async def test_require_lease_holder_false_keeps_the_old_rule(settings: Settings, db: Any) -> None:
    """The one setting that restores token-only fencing: an untokened write from anyone is accepted, a
    stale token and a wrong workerId are still refused."""
    await db.agent_task_states.insert_one(task("t1", "pending"))
    loose = settings.model_copy(update={"require_lease_holder": False})
    async with serving(loose, sweep_seconds=None) as gql:
        await run(gql, "claimTask", 'agentName: "AgentA", workerId: "w2"')
        r = await run(gql, "reportProgress", 'id: "t1", percentage: 30, workerId: "w1"')
        assert (r["__typename"], r["currentHolder"]) == ("LeaseLostError", "w2")
        r = await run(gql, "reportProgress", 'id: "t1", percentage: 30')
        assert (r["__typename"], r["state"]["progressPercentage"]) == ("TaskTransitionSuccess", 30)
    stored_state = await stored(db)
    assert (stored_state["progress_percentage"], stored_state["lease_holder"]) == (30, "w2")
