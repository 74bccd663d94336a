"""Retention (issue 23 part 6): the sweeper removes exactly the old finished workflows and standalone tasks
with their outputs, states and events, keeps live workflows (and their old events), runs once across
two server processes; `purgeTasks` counts first and then removes; `storage` reports each collection."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from app.server import create_app
from app.settings import Settings
from tests.conftest import GraphQLClient
from tests.support.servers import serve

HIERARCHY = ("meta_workflow_tasks", "sub_tasks", "behavior_tasks")
OUTPUTS = ("task_outputs", "sub_task_outputs", "behavior_task_outputs")
OLD = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)


def workflow(prefix: str) -> str:
    """A workflow of 1 meta task, 2 sub-tasks, 2 behavior tasks each, with outputs: ids `<prefix>-…`."""
    behaviors = lambda s: ", ".join(  # noqa: E731
        f'{{id: "{prefix}-{s}-b{n}", state: {{agentName: "A"}}, output: {{behaviorDataPtr: {{}}}}}}'
        for n in range(2)
    )
    subs = ", ".join(
        f'{{id: "{prefix}-s{n}", state: {{agentName: "A"}}, output: {{subTaskDataPtr: {{}}}},'
        f" behaviorTasks: [{behaviors(f's{n}')}]}}"
        for n in range(2)
    )
    return (
        f'createWorkflow(input: {{id: "{prefix}", state: {{agentName: "A"}}, output: {{taskDataPtr: {{}}}},'
        f" subTasks: [{subs}]}}) {{ __typename }}"
    )


async def create(gql: GraphQLClient, *fields: str) -> None:
    data = await gql.data("mutation { " + " ".join(f"f{n}: {f}" for n, f in enumerate(fields)) + " }")
    assert all(v["__typename"].endswith("Success") for v in data.values()), data


async def cancel(gql: GraphQLClient, task_id: str, scope: str = "SUBTREE") -> None:
    data = await gql.data(f'mutation {{ cancelTask(id: "{task_id}", scope: {scope}) {{ __typename }} }}')
    assert data["cancelTask"]["__typename"] == "TaskTransitionSuccess", data


async def age(db: Any, task_ids: list[str], workflow_id: str | None = None) -> None:
    """Make these tasks (and the workflow's events) look as if they last changed three days ago."""
    query: dict[str, Any] = {"$or": [{"_id": {"$in": task_ids}}]}
    if workflow_id is not None:
        query["$or"].append({"workflow_id": workflow_id})
    await db.agent_task_states.update_many(query, {"$set": {"updated_at": OLD}})


async def of_workflow(db: Any, workflow_id: str) -> dict[str, int]:
    """How many documents of each collection belong to `workflow_id` (ids start with it)."""
    prefix = {"$regex": f"^{re.escape(workflow_id)}(-|$)"}
    out = {name: await db[name].count_documents({"_id": prefix}) for name in (*HIERARCHY, *OUTPUTS)}
    out["agent_task_states"] = await db.agent_task_states.count_documents({"_id": prefix})
    out["task_events"] = await db.task_events.count_documents({"task_id": prefix})
    return out


FULL = {
    "meta_workflow_tasks": 1,
    "sub_tasks": 2,
    "behavior_tasks": 4,
    "task_outputs": 1,
    "sub_task_outputs": 2,
    "behavior_task_outputs": 4,
    "agent_task_states": 7,
}
GONE = dict.fromkeys((*FULL, "task_events"), 0)


@pytest.fixture
async def app_gql(settings: Settings, db: Any) -> AsyncIterator[tuple[GraphQLClient, Any]]:
    """The app in-process (retention sweeper off: the tests sweep by hand) and its AppState."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        yield GraphQLClient(http), app.state.agent_tasks


async def seed(gql: GraphQLClient, db: Any) -> None:
    """old: finished 3 days ago; recent: finished now; live: old but one behavior task still pending;
    sa-old / sa-live / parent (a finished standalone parent of a live child)."""
    await create(
        gql,
        workflow("old"),
        workflow("recent"),
        workflow("live"),
        'createAgentTask(input: {id: "sa-old", agentName: "A"}) { __typename }',
        'createAgentTask(input: {id: "sa-live", agentName: "A"}) { __typename }',
        'createAgentTask(input: {id: "parent", agentName: "A"}) { __typename }',
        'addSubtask(parentId: "parent", input: {id: "parent-child", agentName: "A"}) { __typename }',
    )
    for root in ("old", "recent", "sa-old"):
        await cancel(gql, root)
    await cancel(gql, "parent", "TASK")
    # The live workflow: its meta task and all but two tasks finished (live-s1 and live-s1-b1 pending),
    # and everything old.
    for task_id in ("live-s0", "live-s1-b0"):
        await cancel(gql, task_id)
    await cancel(gql, "live", "TASK")
    await age(db, ["sa-old", "sa-live", "parent", "parent-child"], "old")
    await age(db, [], "live")
    await db.agent_task_states.update_many({"_id": {"$in": ["old", "live"]}}, {"$set": {"updated_at": OLD}})


async def test_sweep_removes_exactly_the_old_finished_ones(
    app_gql: tuple[GraphQLClient, Any], db: Any
) -> None:
    gql, state = app_gql
    await seed(gql, db)
    before = {w: await of_workflow(db, w) for w in ("old", "recent", "live")}
    for counts in before.values():
        assert {k: v for k, v in counts.items() if k != "task_events"} == FULL
        assert counts["task_events"] > 0
    live_events = await db.task_events.count_documents({"workflow_id": "live"})
    standalone_events = await db.task_events.count_documents({"task_id": "sa-old"})

    report = await state.retention.sweep(window_seconds=86400)

    assert await of_workflow(db, "old") == GONE
    assert await of_workflow(db, "recent") == before["recent"]
    assert await of_workflow(db, "live") == before["live"]  # old, but a task in it is still pending
    assert await db.task_events.count_documents({"workflow_id": "live"}) == live_events
    assert await db.agent_task_states.count_documents({"_id": "sa-old"}) == 0
    assert await db.task_events.count_documents({"task_id": "sa-old"}) == 0
    for kept in ("sa-live", "parent", "parent-child"):  # pending / parent of a pending child
        assert await db.agent_task_states.count_documents({"_id": kept}) == 1
    assert report.purged == 2
    assert report.counts["agent_task_states"] == 8
    assert report.counts["task_events"] == before["old"]["task_events"] + standalone_events
    assert report.skipped == 2  # live (its meta state is old and cancelled) and parent

    # The child finishes: the parent goes on the next sweep but one (children first).
    await cancel(gql, "parent-child")
    await age(db, ["parent-child"])
    await state.retention.sweep(window_seconds=86400)
    await state.retention.sweep(window_seconds=86400)
    assert await db.agent_task_states.count_documents({"_id": {"$in": ["parent", "parent-child"]}}) == 0

    # A second sweep finds nothing more to do.
    again = await state.retention.sweep(window_seconds=86400)
    assert again.purged == 0


async def test_purge_dry_run_then_real(app_gql: tuple[GraphQLClient, Any], db: Any) -> None:
    gql, _ = app_gql
    await seed(gql, db)
    query = """mutation($f: JSON!, $dry: Boolean) { purgeTasks(filter: $f, dryRun: $dry) {
      __typename ... on PurgeTasksSuccess { dryRun matched purged skipped more collections { name documents } }
      ... on ValidationError { message field code } } }"""
    before = {w: await of_workflow(db, w) for w in ("old", "recent", "live")}
    selected = {"task_id": {"$in": ["old", "recent", "live"]}}

    dry = (await gql.data(query, {"f": selected}))["purgeTasks"]
    assert dry["dryRun"] is True
    assert (dry["matched"], dry["purged"], dry["skipped"], dry["more"]) == (3, 2, 1, False)
    counts = {c["name"]: c["documents"] for c in dry["collections"]}
    expected = {k: 2 * v for k, v in FULL.items()}
    expected["task_events"] = before["old"]["task_events"] + before["recent"]["task_events"]
    assert counts == expected
    assert {w: await of_workflow(db, w) for w in before} == before  # nothing removed

    real = (await gql.data(query, {"f": selected, "dry": False}))["purgeTasks"]
    assert real["dryRun"] is False
    assert {c["name"]: c["documents"] for c in real["collections"]} == expected
    assert await of_workflow(db, "old") == GONE
    assert await of_workflow(db, "recent") == GONE
    assert await of_workflow(db, "live") == before["live"]

    bad = (await gql.data(query, {"f": {"$where": "1"}}))["purgeTasks"]
    assert bad["__typename"] == "ValidationError"
    assert (bad["field"], bad["code"]) == ("filter", "BAD_FILTER")
    assert "$where" in bad["message"]


async def test_purge_is_capped(settings: Settings, db: Any) -> None:
    app = create_app(settings.model_copy(update={"purge_max_tasks": 2}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        gql = GraphQLClient(http)
        await create(
            gql,
            *(f'createAgentTask(input: {{id: "t{n}", agentName: "A"}}) {{ __typename }}' for n in range(3)),
        )
        for n in range(3):
            await cancel(gql, f"t{n}")
        body = await gql.data(
            "mutation { purgeTasks(filter: {}, dryRun: false) { ... on PurgeTasksSuccess { purged more } } }"
        )
        assert body["purgeTasks"] == {"purged": 2, "more": True}
        assert await db.agent_task_states.count_documents({}) == 1


async def test_storage_figures(app_gql: tuple[GraphQLClient, Any], db: Any) -> None:
    gql, _ = app_gql
    await create(gql, workflow("w"))
    data = await gql.data("{ storage { collections { name documents sizeBytes storageBytes indexBytes } } }")
    by_name = {c["name"]: c for c in data["storage"]["collections"]}
    states = by_name["agent_task_states"]
    assert states["documents"] == 7
    assert states["sizeBytes"] > 0 and states["storageBytes"] > 0 and states["indexBytes"] > 0
    assert by_name["task_events"]["documents"] > 0
    assert set(by_name) >= {*HIERARCHY, *OUTPUTS, "agent_task_states", "task_events"}


def test_two_processes_sweep_each_workflow_once(mongo_uri: str) -> None:
    """Two server processes with the sweeper on, every 0.1 s: 20 old finished workflows are each removed
    once, with no error logged."""
    db_name = f"ret_{uuid.uuid4().hex[:12]}"
    env = {
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": db_name,
        "RETENTION_DAYS": "1",
        "RETENTION_SWEEP_SECONDS": "0.1",
        "RETENTION_BATCH": "3",
    }
    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    try:
        with serve(env) as a, serve(env) as b:
            fields = [workflow(f"w{n}") for n in range(20)]
            response = httpx.post(
                f"{a.url}/graphql",
                json={"query": "mutation { " + " ".join(f"f{n}: {f}" for n, f in enumerate(fields)) + " }"},
                timeout=60,
            )
            assert "errors" not in response.json(), response.text
            for n in range(20):
                r = httpx.post(
                    f"{b.url}/graphql",
                    json={"query": f'mutation {{ cancelTask(id: "w{n}", scope: SUBTREE) {{ __typename }} }}'},
                    timeout=60,
                )
                assert r.json()["data"]["cancelTask"]["__typename"] == "TaskTransitionSuccess"
            db = mongo[db_name]
            assert db.task_events.count_documents({}) > 0
            # Now three days old: both sweepers go for them at once.
            db.agent_task_states.update_many({}, {"$set": {"updated_at": OLD}})
            deadline = time.monotonic() + 60
            while db.meta_workflow_tasks.count_documents({}) and time.monotonic() < deadline:
                time.sleep(0.1)
            for name in (*HIERARCHY, *OUTPUTS, "agent_task_states", "task_events"):
                assert db[name].count_documents({}) == 0, name
            # Each removal is one delete per document in the oplog; the lease says one process swept at
            # a time (both took turns, or one kept it).
            oplog = mongo.local["oplog.rs"]
            ns = f"{db_name}.meta_workflow_tasks"
            deletes = next(
                iter(
                    oplog.aggregate(
                        [
                            {"$match": {"o.applyOps.ns": ns}},  # removals are transactions
                            {"$unwind": "$o.applyOps"},
                            {"$match": {"o.applyOps.op": "d", "o.applyOps.ns": ns}},
                            {"$count": "n"},
                        ]
                    )
                )
            )["n"]
            assert deletes == 20
            lease = db.server_config.find_one({"_id": "retention"})
            assert lease is not None and lease["owner"]
            logs = "".join(a.output) + "".join(b.output)
        assert "Traceback" not in logs and "retention sweep failed" not in logs, logs
    finally:
        mongo.drop_database(db_name)
        mongo.close()


async def test_settings_refuse_two_windows(mongo_uri: str) -> None:
    with pytest.raises(ValueError, match="RETENTION_DAYS or RETENTION_SECONDS, not both"):
        Settings(_env_file=None, mongodb_uri=mongo_uri, retention_days=1, retention_seconds=60)
    await asyncio.sleep(0)


async def test_purge_filter_too_slow_is_refused_as_data(settings: Settings, db: Any) -> None:
    """The filter runs under FILTER_MAX_TIME_MS, as a list's does; past it the answer says so and
    nothing is removed."""
    await db.agent_task_states.insert_many(
        [
            {"_id": f"t{i}", "task_kind": "standalone", "status": "completed", "description": "a" * 5000}
            for i in range(200)
        ]
    )
    app = create_app(settings.model_copy(update={"filter_max_time_ms": 50}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        gql = GraphQLClient(http)
        slow = {"description": {"$regex": r"\w.*\W.*\w.*\W"}}  # quadratic on a run of word characters
        data = await gql.data(
            "mutation($f: JSON!) { purgeTasks(filter: $f, dryRun: false) {"
            " __typename ... on ValidationError { field code message } } }",
            {"f": slow},
        )
    answer = data["purgeTasks"]
    assert (answer["__typename"], answer["field"], answer["code"]) == (
        "ValidationError",
        "filter",
        "FILTER_TOO_SLOW",
    )
    assert "FILTER_MAX_TIME_MS" in answer["message"]
    assert await db.agent_task_states.count_documents({}) == 200
