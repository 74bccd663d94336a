"""The demo loaded as `make run` and `agent-tasks demo` load it: its workflow with a history of events,
stamped in commit order by the running server's event hub, consistent with the states it left behind,
and never added twice."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from typing import Any

import httpx
from pymongo import MongoClient

from app.demo.workflow import DEMO_WORKFLOW_ID, demo_documents, demo_events
from app.settings import Settings
from tests.conftest import ROOT, GraphQLClient, read_query
from tests.support.app import demo_server
from tests.support.servers import serve

TASK_EVENTS = read_query("TaskEvents.graphql")


async def workflow_events(gql: GraphQLClient) -> dict[str, Any]:
    variables = {"workflowId": DEMO_WORKFLOW_ID, "first": 100}
    return (await gql.data(TASK_EVENTS, variables))["taskEvents"]


def _iso(value: dt.datetime) -> str:
    return value.isoformat()


async def test_the_demo_server_shows_the_workflow_s_history_in_order_and_once(
    settings: Settings, db: Any
) -> None:
    expected = [e for e in demo_events() if e["workflow_id"] == DEMO_WORKFLOW_ID]
    async with demo_server(settings) as gql:
        page = await workflow_events(gql)
    nodes = [edge["node"] for edge in page["edges"]]
    assert page["totalCount"] == len(expected) == len(nodes) and not page["pageInfo"]["hasNextPage"]
    # The order the history was written in, which is its commit order (stamped by the hub).
    assert [(n["type"], n["taskId"], n["timestamp"]) for n in nodes] == [
        (e["type"], e["task_id"], _iso(e["timestamp"])) for e in expected
    ]
    assert [n["id"] for n in nodes] == sorted(n["id"] for n in nodes)
    assert [n["timestamp"] for n in nodes] == sorted(n["timestamp"] for n in nodes)
    types = {n["type"] for n in nodes}
    assert types >= {
        "TASK_CREATED", "STATUS_CHANGED", "TASK_PROGRESS", "TASK_COMPLETED", "TASK_FAILED",
        "TOOL_CALL", "TOOL_RESULT", "MEMORY_OPERATION",
    }  # fmt: skip

    # Every demo task was created, and its last status event names the status its state has now.
    states = {s["_id"]: s for s in demo_documents()["agent_task_states"]}
    last_status: dict[str, str] = {}
    for n in nodes:
        if n["type"] == "TASK_CREATED":
            last_status[n["taskId"]] = n["status"].lower()
        elif n["type"] == "STATUS_CHANGED":
            last_status[n["taskId"]] = n["toStatus"].lower()
    in_workflow = {i for i, s in states.items() if s["workflow_id"] == DEMO_WORKFLOW_ID}
    assert last_status == {i: states[i]["status"] for i in in_workflow}
    failed = next(n for n in nodes if n["type"] == "TASK_FAILED")
    assert failed["taskId"] == "beh_select_voice" and failed["error"] == "Voice catalogue timed out"
    assert failed["isFinal"] is False
    progress = [n for n in nodes if n["type"] == "TASK_PROGRESS" and n["taskId"] == "beh_write_script"]
    assert progress[-1]["progress"] == 0.4 and progress[-1]["details"] == "Querying LLM for script text"
    call, result = (
        n for n in nodes if n["type"] in ("TOOL_CALL", "TOOL_RESULT") and n["taskId"] == "beh_select_voice"
    )
    assert call["correlationId"] == result["correlationId"] and result["toolStatus"] == "ERROR"

    # `make run` again: the history is already there, nothing is added.
    async with demo_server(settings) as gql:
        again = await workflow_events(gql)
    assert again == page
    assert await db.task_events.count_documents({}) == len(demo_events())


def test_serve_with_load_demo_stamps_the_history_before_it_listens(settings: Settings) -> None:
    """LOAD_DEMO, the setting `--demo` sets, on the real `agent-tasks serve`: the command line loads the
    demo into the server's resources (the server never imports it), before the server listens."""
    env = {"MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db, "LOAD_DEMO": "true"}
    expected = [e for e in demo_events() if e["workflow_id"] == DEMO_WORKFLOW_ID]
    try:
        with serve(env) as server:
            # The first request after /healthz answered: the whole history, stamped, in its order.
            answer = httpx.post(
                f"{server.url}/graphql",
                json={"query": TASK_EVENTS, "variables": {"workflowId": DEMO_WORKFLOW_ID, "first": 100}},
            )
            page = answer.json()["data"]["taskEvents"]
            assert page["totalCount"] == len(expected)
            assert [(e["node"]["type"], e["node"]["taskId"]) for e in page["edges"]] == [
                (e["type"], e["task_id"]) for e in expected
            ]
            assert server.stop() == 0
    finally:
        with MongoClient(settings.mongodb_uri) as mongo:
            mongo.drop_database(settings.mongodb_db)


def _cli_demo(settings: Settings, *args: str) -> None:
    env = {**os.environ, "MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_agent_tasks_demo_stamps_its_history_before_exiting_and_reset_puts_it_back(
    settings: Settings,
) -> None:
    with MongoClient(settings.mongodb_uri) as mongo:
        events = mongo[settings.mongodb_db].task_events
        try:
            _cli_demo(settings)
            first = list(events.find().sort("seq", 1))
            assert len(first) == len(demo_events())
            assert all(e["seq"] is not None for e in first)  # stamped: visible to readers at once
            assert [e["type"] for e in first] == [e["type"] for e in demo_events()]

            _cli_demo(settings)  # again: nothing added
            assert events.count_documents({}) == len(first)

            events.insert_one({"type": "TOOL_CALL", "task_id": "beh_write_script", "seq": None})
            _cli_demo(settings, "--reset")  # the demo's history again, in place of what was there
            after = list(events.find().sort("seq", 1))
            assert [e["type"] for e in after] == [e["type"] for e in demo_events()]
            assert all(e["seq"] is not None for e in after)
            assert {e["_id"] for e in after}.isdisjoint(e["_id"] for e in first)
        finally:
            mongo.drop_database(settings.mongodb_db)
