"""Seed 002's REST API over real HTTP: every curl example of the seed (as httpx requests, and once with curl
against a real server process), 404s, 400/422 for bad JSON, filters and bodies, 409 where a rule refuses,
cascade deletes, nested creates, moves, pagination with signed cursors, If-Match on agent tasks, the
OpenAPI document against the router, and a schemathesis run that must find no 5xx."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from starlette.routing import Route

from app.demo.workflow import load_demo
from app.rest.entities import ENTITIES
from app.rest.routes import ROUTES
from app.server import create_app
from app.settings import Settings
from tests.support.rest import (
    REST_PREFIXES,
    SETUP_REQUESTS,
    checking_answers,
    declared_codes,
    error_of,
    setup_seed_data,
    template_regex,
)
from tests.support.servers import serve

ROOT = Path(__file__).resolve().parent.parent
SEED_FILE_GLOB = "002_*.txt"

# The seed's curl examples, verbatim and in the seed's order (a test checks them against the seed file).
SEED_CURLS = r"""
curl -X GET http://localhost:8000/meta-tasks/<task_id>
curl -X DELETE http://localhost:8000/meta-tasks/<task_id>
curl -X POST http://localhost:8000/meta-tasks/query \
     -H "Content-Type: application/json" \
     -d '{"meta_workflow_id": "mw1"}'
curl -X GET http://localhost:8000/sub-tasks/<sub_task_id>
curl -X DELETE http://localhost:8000/sub-tasks/<sub_task_id>
curl -X POST http://localhost:8000/sub-tasks/query \
     -H "Content-Type: application/json" \
     -d '{"task_id": "meta123"}'
curl -X GET http://localhost:8000/behavior-tasks/<behavior_task_id>
curl -X DELETE http://localhost:8000/behavior-tasks/<behavior_task_id>
curl -X POST http://localhost:8000/behavior-tasks/query \
     -H "Content-Type: application/json" \
     -d '{"sub_task_id": "sub123"}'
curl -X GET http://localhost:8000/task-outputs/<task_id>
curl -X DELETE http://localhost:8000/task-outputs/<task_id>
curl -X POST http://localhost:8000/task-outputs/query \
     -H "Content-Type: application/json" \
     -d '{"task_id": "meta123"}'
curl -X GET http://localhost:8000/sub-task-outputs/<sub_task_id>
curl -X DELETE http://localhost:8000/sub-task-outputs/<sub_task_id>
curl -X POST http://localhost:8000/sub-task-outputs/query \
     -H "Content-Type: application/json" \
     -d '{"is_finalized_step": true}'
curl -X GET http://localhost:8000/behavior-task-outputs/<behavior_task_id>
curl -X DELETE http://localhost:8000/behavior-task-outputs/<behavior_task_id>
curl -X POST http://localhost:8000/behavior-task-outputs/query \
     -H "Content-Type: application/json" \
     -d '{"processor_subject_ids": {"$in": ["agent1"]}}'
"""
SEED_BASE_URL = "http://localhost:8000"


def seed_commands() -> list[str]:
    """Each curl example as one line (the seed continues lines with a backslash)."""
    text = SEED_CURLS.replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.strip().splitlines()]


# What the seed's `<…>` placeholders stand for, per entity: documents that the examples can read and delete
# without disturbing the documents the filters of the later examples must find.
PLACEHOLDER_IDS = {
    "meta-tasks": "meta_del",
    "sub-tasks": "sub_del",
    "behavior-tasks": "beh_del",
    "task-outputs": "meta_out",
    "sub-task-outputs": "sub_out",
    "behavior-task-outputs": "beh_out",
}


def _ids(body: dict[str, Any], field: str) -> list[str]:
    return [item[field] for item in body["items"]]


def _is(field: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body.get(field) == value


# For each seed example, in order: what its answer must satisfy.
SEED_EXPECTATIONS: list[Callable[[dict[str, Any]], bool]] = [
    lambda b: b["task_id"] == "meta_del" and b["meta_workflow_id"] == "mw1" and b["sub_task_ids"] == [],
    _is("deleted_ids", ["meta_del"]),
    lambda b: _ids(b, "task_id") == ["meta123"] and b["total"] == 1 and b["next_cursor"] is None,
    lambda b: b["sub_task_id"] == "sub_del" and b["task_id"] == "meta123",
    _is("deleted_ids", ["sub_del"]),
    lambda b: _ids(b, "sub_task_id") == ["sub123", "sub_out"],
    lambda b: b["behavior_task_id"] == "beh_del" and b["sub_task_id"] == "sub123",
    _is("deleted_ids", ["beh_del"]),
    lambda b: _ids(b, "behavior_task_id") == ["beh_a", "beh_b", "beh_out"],
    lambda b: b["task_id"] == "meta_out" and b["task_data_ptr"] == {} and b["finalized_sub_task_ids"] == [],
    _is("deleted_ids", ["meta_out"]),
    lambda b: _ids(b, "task_id") == ["meta123"] and b["items"][0]["task_data_ptr"] == {"episode": 1},
    lambda b: b["sub_task_id"] == "sub_out" and b["output_framedb_ptr"] == {"frame": "f1"},
    _is("deleted_ids", ["sub_out"]),
    lambda b: _ids(b, "sub_task_id") == ["sub123"],
    lambda b: b["behavior_task_id"] == "beh_out" and b["processor_subject_ids"] == ["agent1"],
    _is("deleted_ids", ["beh_out"]),
    lambda b: (
        _ids(b, "behavior_task_id") == ["beh_a"] and b["items"][0]["processor_subject_ids"][0] == "agent1"
    ),
]


def resolve(command: str, base_url: str) -> list[str]:
    """The curl command's arguments, aimed at `base_url`, with each `<…>` placeholder given its id."""
    args = shlex.split(command)
    url_index = next(i for i, a in enumerate(args) if a.startswith(SEED_BASE_URL))
    url = args[url_index].replace(SEED_BASE_URL, base_url, 1)
    entity = url.removeprefix(base_url).split("/")[1]
    args[url_index] = re.sub(r"<[a-z_]+>", PLACEHOLDER_IDS[entity], url)
    return args


def as_request(args: list[str]) -> tuple[str, str, str | None]:
    """(method, URL, body) of curl arguments of the seed's form: -X METHOD URL [-H …] [-d BODY]."""
    method = args[args.index("-X") + 1]
    url = next(a for a in args if a.startswith("http"))
    body = args[args.index("-d") + 1] if "-d" in args else None
    return method, url, body


# --- every answer is declared -------------------------------------------------------------------------


@pytest.fixture
def client(client: httpx.AsyncClient, settings: Settings) -> httpx.AsyncClient:
    """The app's client (conftest), checking every answer any test of this module gets against the
    OpenAPI document the server serves: a refusal it does not declare fails the test."""
    return checking_answers(client, settings)


# --- the seed's examples ---------------------------------------------------------------------------------


def test_the_examples_are_the_seeds_verbatim() -> None:
    seeds = sorted((ROOT.parent / "shared" / "seeds").glob(SEED_FILE_GLOB))
    if not seeds:
        pytest.skip("the seed file is not beside this checkout")
    text = " ".join(seeds[0].read_text(encoding="utf-8").replace("\\\n", " ").split())
    commands = seed_commands()
    assert len(commands) == text.count("curl -X") == len(SEED_EXPECTATIONS) == 18
    for command in commands:
        assert command in text, command


async def test_every_seed_example_over_http(client: httpx.AsyncClient) -> None:
    await setup_seed_data(client)
    for command, expect in zip(seed_commands(), SEED_EXPECTATIONS, strict=True):
        method, url, body = as_request(resolve(command, "http://localhost"))
        headers = {"Content-Type": "application/json"} if body is not None else {}
        response = await client.request(method, url, content=body, headers=headers)
        assert response.status_code == 200, (command, response.text)
        assert response.headers["content-type"] == "application/json"
        assert expect(response.json()), (command, response.json())


async def test_deleting_through_the_seed_routes_keeps_the_hierarchy_consistent(
    client: httpx.AsyncClient, db: Any
) -> None:
    await setup_seed_data(client)
    for command in seed_commands():
        method, url, body = as_request(resolve(command, "http://localhost"))
        assert (await client.request(method, url, content=body)).status_code == 200
    parent = await db.meta_workflow_tasks.find_one({"_id": "meta123"})
    assert parent["sub_task_ids"] == ["sub123", "sub_out"]  # sub_del was pulled from its parent's list
    assert (await db.sub_tasks.find_one({"_id": "sub123"}))["behavior_task_ids"] == [
        "beh_a",
        "beh_b",
        "beh_out",
    ]
    assert await db.agent_task_states.find_one({"_id": "sub_del"}) is None  # its state went with it
    assert await db.behavior_tasks.find_one({"_id": "beh_out"}) is not None  # only its output was deleted
    assert await db.meta_workflow_tasks.find_one({"_id": "meta_del"}) is None


def test_the_seed_curl_examples_verbatim_against_a_real_server(settings: Settings) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    env = {"MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db}
    try:
        with serve(env) as server:
            for method, path, body in SETUP_REQUESTS:
                response = httpx.request(method, server.url + path, json=body, timeout=30)
                assert response.status_code == 201, response.text
            for command, expect in zip(seed_commands(), SEED_EXPECTATIONS, strict=True):
                args = resolve(command, server.url)
                done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
                assert done.returncode == 0, (command, done.stderr)
                answer = json.loads(done.stdout)
                assert "error" not in answer and expect(answer), (command, answer)
            server.stop()
    finally:
        with MongoClient(settings.mongodb_uri) as mongo:
            mongo.drop_database(settings.mongodb_db)


async def test_demo_data_reads_in_the_seeds_shape(client: httpx.AsyncClient, db: Any) -> None:
    await load_demo(db)
    meta = (await client.get("/meta-tasks/meta_podcast_ai_ethics")).json()
    assert meta["task_id"] == "meta_podcast_ai_ethics" and "_id" not in meta
    assert meta["sub_task_ids"] == ["sub_snippet", "sub_script", "sub_voice"]
    assert set(meta) == {
        "task_id", "meta_workflow_id", "dsl_workflow_id", "sub_task_ids", "meta_workflow_graph",
        "personality_workflow_id", "personality_type", "is_finalized",
    }  # fmt: skip
    found = await client.post(
        "/behavior-task-outputs/query", json={"processor_subject_ids": {"$in": ["SnippetCraftAgent"]}}
    )
    assert _ids(found.json(), "behavior_task_id") == [
        "beh_draft_snippet",
        "beh_research_topic",
        "beh_review_snippet",
    ]
    state = (await client.get("/agent-tasks/beh_select_voice")).json()
    assert state["status"] == "retrying" and state["last_error"]["message"] == "Voice catalogue timed out"
    assert isinstance(state["created_at"], str) and state["created_at"].endswith("+00:00")
    assert "priority_rank" not in state and state["task_kind"] == "behavior_task"
    in_progress = await client.post(
        "/agent-tasks/query?sort=-created_at",
        json={"status": "in_progress", "created_at": {"$gte": "2000-01-01"}},
    )
    items = in_progress.json()["items"]
    assert {i["task_id"] for i in items} >= {"sub_script", "beh_write_script"}
    assert all(i["status"] == "in_progress" for i in items)
    assert [i["created_at"] for i in items] == sorted((i["created_at"] for i in items), reverse=True)


async def test_documents_written_by_other_programs_get_the_seeds_defaults(
    client: httpx.AsyncClient, db: Any
) -> None:
    await db.sub_tasks.insert_one({"_id": "foreign", "task_id": "elsewhere"})
    body = (await client.get("/sub-tasks/foreign")).json()
    assert body == {
        "sub_task_id": "foreign",
        "task_id": "elsewhere",
        "personality_workflow_id": "",
        "personality_type": "",
        "behavior_workflow_id": "",
        "behavior_task_ids": [],
        "behavior_dag_data": {},
        "prev_sub_task_id": None,
        "is_finalized": False,
    }


# --- errors ---------------------------------------------------------------------------------------------


async def test_unknown_ids_are_404_with_a_json_error(client: httpx.AsyncClient) -> None:
    for entity in ENTITIES:
        for method, suffix, body in (("GET", "", None), ("DELETE", "", None), ("PATCH", "", {})):
            response = await client.request(method, f"/{entity.path}/nope{suffix}", json=body)
            error = error_of(response, 404, "not_found")
            assert "nope" in error["message"], (entity.path, method, error)
    for path in ("meta-tasks", "sub-tasks", "behavior-tasks"):
        error_of(await client.post(f"/{path}/nope/finalize"), 404, "not_found")
    error_of(await client.post("/sub-tasks", json={"task_id": "nope"}), 404, "not_found")
    error_of(await client.post("/task-outputs", json={"task_id": "nope"}), 404, "not_found")


async def test_query_refuses_where_and_other_bad_filters_with_400(client: httpx.AsyncClient) -> None:
    where = error_of(
        await client.post("/meta-tasks/query", json={"$where": "sleep(1000) || true"}), 400, "bad_filter"
    )
    assert "$where" in where["message"] and "not allowed" in where["message"]
    nested = await client.post(
        "/behavior-task-outputs/query", json={"$or": [{"processor_subject_ids": {"$function": {}}}]}
    )
    assert "$function" in error_of(nested, 400, "bad_filter")["message"]
    unknown = error_of(await client.post("/sub-tasks/query", json={"colour": "red"}), 400, "bad_filter")
    assert "colour" in unknown["message"]
    typed = error_of(
        await client.post("/sub-task-outputs/query", json={"is_finalized_step": "yes"}), 400, "bad_filter"
    )
    assert "is_finalized_step" in typed["message"]
    bad_json = error_of(
        await client.post(
            "/meta-tasks/query",
            content=b'{"meta_workflow_id": ',
            headers={"content-type": "application/json"},
        ),
        400,
        "bad_json",
    )
    assert "not valid JSON" in bad_json["message"]
    error_of(await client.post("/meta-tasks/query", content=b"[1, 2]"), 400, "bad_filter")
    error_of(await client.post("/meta-tasks/query", content=b'{"a": NaN}'), 400, "bad_json")
    # An empty body is no filter at all.
    assert (await client.post("/meta-tasks/query")).json() == {"items": [], "next_cursor": None, "total": 0}


async def test_bodies_with_unknown_or_server_owned_fields_are_422(client: httpx.AsyncClient, db: Any) -> None:
    unknown = error_of(
        await client.post("/meta-tasks", json={"meta_workflow_id": "mw", "colour": "red"}),
        422,
        "unknown_field",
    )
    assert unknown["field"] == "colour" and "colour" in unknown["message"]
    assert "meta_workflow_id" in unknown["message"]  # the allowed fields are listed
    nested = error_of(
        await client.post("/meta-tasks", json={"sub_tasks": [{"behavior_tasks": [{"bogus": 1}]}]}),
        422,
        "unknown_field",
    )
    assert nested["field"] == "sub_tasks[0].behavior_tasks[0].bogus"
    for read_only in ({"sub_task_ids": ["x"]}, {"is_finalized": True}, {"_id": "x"}):
        error_of(await client.post("/meta-tasks", json=read_only), 422, "unknown_field")
    wrong_type = error_of(await client.post("/meta-tasks", json={"meta_workflow_id": 7}), 422, "invalid")
    assert wrong_type["field"] == "meta_workflow_id"
    priority = error_of(
        await client.post("/meta-tasks", json={"state": {"priority": "asap"}}), 422, "invalid"
    )
    assert priority["field"] == "state.priority"
    error_of(await client.post("/meta-tasks", json=["not", "an", "object"]), 422, "invalid")
    error_of(await client.post("/meta-tasks"), 400, "bad_json")
    error_of(await client.post("/meta-tasks", content=b"{oops"), 400, "bad_json")
    error_of(await client.post("/meta-tasks", json={"meta_workflow_graph": {"n": 2**70}}), 400, "bad_json")
    assert await db.meta_workflow_tasks.count_documents({}) == 0  # nothing was written

    assert (await client.post("/meta-tasks", json={"task_id": "m1"})).status_code == 201
    error_of(await client.patch("/meta-tasks/m1", json={"task_id": "m2"}), 422, "unknown_field")
    error_of(await client.patch("/meta-tasks/m1", json={"sub_task_ids": []}), 422, "unknown_field")
    error_of(await client.patch("/meta-tasks/m1", json={}), 422, "invalid")  # nothing to update
    error_of(await client.post("/meta-tasks", json={"task_id": "m1"}), 409, "conflict")  # id taken
    error_of(
        await client.post("/task-outputs", json={"task_id": "m1", "finalized_sub_task_ids": []}),
        422,
        "unknown_field",
    )


async def test_an_oversized_body_is_refused_without_reading_it_all(client: httpx.AsyncClient) -> None:
    """A chunked body has no Content-Length: the cap must stop reading at the limit, not after buffering
    everything the client cares to send."""
    offered = 0

    async def chunks() -> Any:
        nonlocal offered
        for _ in range(64):  # 16 MiB on offer
            offered += 256 * 1024
            yield b" " * (256 * 1024)

    for path in ("/meta-tasks/query", "/meta-tasks"):
        offered = 0
        response = await client.post(path, content=chunks())
        assert "content-length" not in response.request.headers
        error_of(response, 413, "payload_too_large")
        assert offered <= 2 * 1024 * 1024, offered  # stopped just past 1 MiB


async def test_refusals_of_bodies_and_keys_on_every_route_are_declared(client: httpx.AsyncClient) -> None:
    """Refusals no other test makes on every route: a NUL in a key, a body too large, an Idempotency-Key
    reused for another operation. This module's `client` checks each answer against the document."""
    nul_key = b'{"a\\u0000b": 1}'
    too_large = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'
    for entity in ENTITIES:
        for method, path in (
            ("POST", f"/{entity.path}"),
            ("PATCH", f"/{entity.path}/x"),
            ("POST", f"/{entity.path}/query"),
        ):
            error = error_of(await client.request(method, path, content=nul_key), 400, "bad_json")
            assert "NUL" in error["message"], error
            error_of(await client.request(method, path, content=too_large), 413, "payload_too_large")

    key = {"Idempotency-Key": "used-once"}
    assert (await client.post("/meta-tasks", json={"task_id": "m1"}, headers=key)).status_code == 201
    for method, path, body in (
        ("POST", "/meta-tasks/m1/finalize", None),
        ("PATCH", "/meta-tasks/m1", {"personality_type": "x"}),
        ("POST", "/sub-tasks", {"task_id": "m1"}),
        ("POST", "/agent-tasks", {"task_id": "a1"}),
        ("PATCH", "/agent-tasks/m1", {"name": "n"}),
    ):
        reused = error_of(await client.request(method, path, json=body, headers=key), 422, "invalid")
        assert reused["field"] == "Idempotency-Key" and "already used" in reused["message"], reused
    long_key = {"Idempotency-Key": "k" * 201}
    error_of(await client.post("/behavior-tasks/x/finalize", headers=long_key), 422, "invalid")


# --- writes ---------------------------------------------------------------------------------------------


async def test_create_with_nested_state_output_and_children(client: httpx.AsyncClient, db: Any) -> None:
    response = await client.post(
        "/meta-tasks",
        json={
            "task_id": "wf",
            "meta_workflow_id": "mw9",
            "meta_workflow_graph": {"nodes": ["s1", "s2"]},
            "state": {"agent_name": "Orchestrator", "priority": "high", "expires_at": "2999-01-01T00:00:00Z"},
            "output": {"task_data_ptr": {"episode": 9}},
            "sub_tasks": [
                {
                    "sub_task_id": "s1",
                    "task_id": "wf",  # the seed's parent field may be repeated when nested
                    "state": {"agent_name": "A"},
                    "output": {"processor_subject_ids": ["A"]},
                    "behavior_tasks": [{"behavior_task_id": "b1", "action_type": "research"}],
                },
                {"sub_task_id": "s2", "state": {"agent_name": "B", "dependencies": [{"task_id": "s1"}]}},
            ],
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/meta-tasks/wf"
    created = response.json()
    assert (
        created["task_id"] == "wf"
        and created["sub_task_ids"] == ["s1", "s2"]
        and created["is_finalized"] is False
    )
    assert (await client.get(response.headers["location"])).json() == created

    assert (await db.sub_tasks.find_one({"_id": "s2"}))["prev_sub_task_id"] == "s1"
    assert (await db.behavior_tasks.find_one({"_id": "b1"}))["sub_task_id"] == "s1"
    assert (await db.task_outputs.find_one({"_id": "wf"}))["task_data_ptr"] == {"episode": 9}
    assert (await db.sub_task_outputs.find_one({"_id": "s1"}))["processor_subject_ids"] == ["A"]
    state = (await client.get("/agent-tasks/wf")).json()
    assert state["priority"] == "high" and state["expires_at"].startswith("2999-01-01T00:00:00")
    assert (await client.get("/agent-tasks/s2")).json()["status"] == "awaiting_dependency"

    mismatch = await client.post(
        "/meta-tasks", json={"task_id": "wf2", "sub_tasks": [{"sub_task_id": "s9", "task_id": "other"}]}
    )
    assert error_of(mismatch, 422, "invalid")["field"] == "body.sub_tasks[0].task_id"
    generated = (await client.post("/sub-tasks", json={"task_id": "wf"})).json()
    assert re.fullmatch(r"[0-9a-f-]{36}", generated["sub_task_id"])
    assert (await db.meta_workflow_tasks.find_one({"_id": "wf"}))["sub_task_ids"][-1] == generated[
        "sub_task_id"
    ]


async def test_delete_with_children_is_409_and_cascade_removes_the_subtree(
    client: httpx.AsyncClient, db: Any
) -> None:
    await setup_seed_data(client)
    refused = error_of(await client.delete("/meta-tasks/meta123"), 409, "conflict")
    assert "cascade" in refused["message"]
    error_of(await client.delete("/sub-tasks/sub123?cascade=false"), 409, "conflict")
    error_of(await client.delete("/sub-tasks/sub123?cascade=maybe"), 400, "bad_parameter")
    assert await db.behavior_tasks.count_documents({}) == 4

    deleted = await client.delete("/meta-tasks/meta123", params={"cascade": "true"})
    assert deleted.status_code == 200, deleted.text
    ids = set(deleted.json()["deleted_ids"])
    assert ids == {"meta123", "sub123", "sub_del", "sub_out", "beh_a", "beh_b", "beh_del", "beh_out"}
    for collection in ("meta_workflow_tasks", "sub_tasks", "behavior_tasks", "agent_task_states"):
        assert await db[collection].count_documents({"_id": {"$in": sorted(ids)}}) == 0, collection
    for collection in ("task_outputs", "sub_task_outputs", "behavior_task_outputs"):
        assert await db[collection].count_documents({"_id": {"$in": sorted(ids)}}) == 0, collection
    error_of(await client.get("/meta-tasks/meta123"), 404, "not_found")


async def test_finalized_tasks_refuse_changes_with_409(client: httpx.AsyncClient, db: Any) -> None:
    await setup_seed_data(client)
    finalized = await client.post("/sub-tasks/sub_del/finalize")
    assert finalized.status_code == 200 and finalized.json()["is_finalized"] is True
    assert "sub_del" in (await client.get("/task-outputs/meta123")).json()["finalized_sub_task_ids"]
    again = error_of(await client.post("/sub-tasks/sub_del/finalize"), 409, "refused")
    assert "already finalized" in again["message"]
    error_of(await client.patch("/sub-tasks/sub_del", json={"personality_type": "x"}), 409, "refused")
    error_of(await client.delete("/sub-tasks/sub_del"), 409, "refused")
    error_of(await client.post("/behavior-tasks", json={"sub_task_id": "sub_del"}), 409, "refused")
    error_of(await client.post("/sub-task-outputs", json={"sub_task_id": "sub_del"}), 409, "refused")
    assert (await db.sub_tasks.find_one({"_id": "sub_del"}))["personality_type"] == "researcher"


async def test_patch_moves_a_child_between_parents(client: httpx.AsyncClient, db: Any) -> None:
    await setup_seed_data(client)
    moved = await client.patch(
        "/behavior-tasks/beh_b", json={"sub_task_id": "sub_del", "action_sub_type": "v2"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["sub_task_id"] == "sub_del" and moved.json()["action_sub_type"] == "v2"
    assert (await db.sub_tasks.find_one({"_id": "sub123"}))["behavior_task_ids"] == [
        "beh_a",
        "beh_del",
        "beh_out",
    ]
    assert (await db.sub_tasks.find_one({"_id": "sub_del"}))["behavior_task_ids"] == ["beh_b"]
    assert (await db.behavior_tasks.find_one({"_id": "beh_b"}))["sub_task_id"] == "sub_del"

    await client.post("/meta-tasks", json={"task_id": "meta2"})
    assert (await client.patch("/sub-tasks/sub_del", json={"task_id": "meta2"})).status_code == 200
    assert "sub_del" not in (await db.meta_workflow_tasks.find_one({"_id": "meta123"}))["sub_task_ids"]
    assert (await db.meta_workflow_tasks.find_one({"_id": "meta2"}))["sub_task_ids"] == ["sub_del"]
    assert (await db.agent_task_states.find_one({"_id": "beh_b"}))["workflow_id"] == "meta2"

    error_of(await client.patch("/sub-tasks/sub_del", json={"task_id": None}), 422, "invalid")
    error_of(await client.patch("/sub-tasks/sub_del", json={"task_id": "nowhere"}), 404, "not_found")


async def test_outputs_create_update_delete(client: httpx.AsyncClient, db: Any) -> None:
    await setup_seed_data(client)
    created = await client.post(
        "/behavior-task-outputs", json={"behavior_task_id": "beh_del", "processor_subject_ids": ["agent7"]}
    )
    assert created.status_code == 201 and created.headers["location"] == "/behavior-task-outputs/beh_del"
    assert created.json()["processor_subjects_graph"] == {}  # the seed's default
    error_of(  # it exists already: a conflict, as for any taken id
        await client.post("/behavior-task-outputs", json={"behavior_task_id": "beh_del"}), 409, "conflict"
    )
    patched = await client.patch("/behavior-task-outputs/beh_del", json={"is_finalized_step": True})
    assert (
        patched.json()["processor_subject_ids"] == ["agent7"] and patched.json()["is_finalized_step"] is True
    )
    error_of(
        await client.patch("/sub-task-outputs/sub_del", json={"is_finalized_step": True}), 404, "not_found"
    )
    error_of(await client.post("/behavior-task-outputs", json={"processor_subject_ids": []}), 422, "invalid")
    assert (await client.delete("/behavior-task-outputs/beh_del")).json() == {"deleted_ids": ["beh_del"]}
    assert await db.behavior_tasks.find_one({"_id": "beh_del"}) is not None


async def test_agent_task_patch_with_if_match(client: httpx.AsyncClient, db: Any) -> None:
    created = await client.post(
        "/agent-tasks", json={"task_id": "snippet", "agent_name": "SnippetCraftAgent", "priority": "low"}
    )
    assert created.status_code == 201, created.text
    assert created.headers["etag"] == '"1"' and created.json()["version"] == 1
    assert created.json()["status"] == "pending" and created.json()["task_kind"] == "standalone"

    ok = await client.patch("/agent-tasks/snippet", json={"priority": "urgent"}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200, ok.text
    assert ok.json()["priority"] == "urgent" and ok.headers["etag"] == '"2"'
    stale = error_of(
        await client.patch("/agent-tasks/snippet", json={"priority": "high"}, headers={"If-Match": '"1"'}),
        409,
        "conflict",
    )
    assert stale["current_version"] == 2
    error_of(
        await client.patch("/agent-tasks/snippet", json={"priority": "high", "expected_version": 1}),
        409,
        "conflict",
    )
    assert (
        await client.patch("/agent-tasks/snippet", json={"name": "n", "expected_version": 2})
    ).status_code == 200
    error_of(
        await client.patch("/agent-tasks/snippet", json={"name": "m"}, headers={"If-Match": "soon"}),
        400,
        "bad_parameter",
    )
    error_of(await client.patch("/agent-tasks/snippet", json={"status": "completed"}), 422, "unknown_field")
    assert (await db.agent_task_states.find_one({"_id": "snippet"}))["priority"] == "urgent"

    # A hierarchy task's state is read and edited here too, but deleted with its task.
    await client.post("/meta-tasks", json={"task_id": "m1", "state": {"agent_name": "A"}})
    assert (await client.patch("/agent-tasks/m1", json={"agent_name": "B"})).json()["agent_name"] == "B"
    error_of(await client.delete("/agent-tasks/m1"), 409, "conflict")
    assert (await client.delete("/agent-tasks/snippet")).json() == {"deleted_ids": ["snippet"]}


async def test_idempotency_key_replays_the_first_answer(client: httpx.AsyncClient, db: Any) -> None:
    headers = {"Idempotency-Key": "create-once"}
    first = await client.post("/meta-tasks", json={"meta_workflow_id": "mw"}, headers=headers)
    second = await client.post("/meta-tasks", json={"meta_workflow_id": "mw"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["task_id"] == second.json()["task_id"]
    assert await db.meta_workflow_tasks.count_documents({}) == 1


# --- pages ----------------------------------------------------------------------------------------------


async def test_query_pages_with_signed_cursors_and_a_cap(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await client.post("/meta-tasks", json={"task_id": "m", "sub_tasks": [{"sub_task_id": "s"}]})
    for n in range(7):
        assert (
            await client.post("/behavior-tasks", json={"behavior_task_id": f"b{n}", "sub_task_id": "s"})
        ).status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", **({"after": cursor} if cursor else {})}
        page = (await client.post("/behavior-tasks/query", params=params, json={"sub_task_id": "s"})).json()
        assert page["total"] == 7 and len(page["items"]) <= 3
        seen += _ids(page, "behavior_task_id")
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"b{n}" for n in range(7)] and pages == 3

    descending = (await client.post("/behavior-tasks/query?sort=-behavior_task_id&limit=2")).json()
    assert _ids(descending, "behavior_task_id") == ["b6", "b5"]
    # A cursor belongs to its order, and only this server's cursors are accepted.
    error_of(
        await client.post("/behavior-tasks/query", params={"after": descending["next_cursor"]}),
        400,
        "bad_cursor",
    )
    error_of(await client.post("/behavior-tasks/query", params={"after": "forged"}), 400, "bad_cursor")
    too_big = await client.post("/behavior-tasks/query", params={"limit": settings.max_page_size + 1})
    assert str(settings.max_page_size) in error_of(too_big, 400, "page_size_out_of_range")["message"]
    error_of(await client.post("/behavior-tasks/query", params={"limit": "0"}), 400, "page_size_out_of_range")
    error_of(await client.post("/behavior-tasks/query", params={"limit": "ten"}), 400, "bad_parameter")
    error_of(await client.post("/behavior-tasks/query", params={"sort": "colour"}), 400, "bad_parameter")
    full = (await client.post("/behavior-tasks/query", params={"limit": settings.max_page_size})).json()
    assert full["total"] == 7 and full["next_cursor"] is None


async def test_the_default_page_size_comes_from_the_settings(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for n in range(settings.default_page_size + 1):
        assert (await client.post("/agent-tasks", json={"task_id": f"t{n:02d}"})).status_code == 201
    page = (await client.post("/agent-tasks/query")).json()
    assert len(page["items"]) == settings.default_page_size and page["next_cursor"] is not None
    assert page["total"] == settings.default_page_size + 1


# --- the OpenAPI document -------------------------------------------------------------------------------


def _app_rest_routes(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    prefixes = REST_PREFIXES
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and (route.path.startswith(prefixes) or route.path == "/openapi.json")
        for method in (route.methods or set()) - {"HEAD"}
    }


async def test_openapi_lists_exactly_the_routes_of_the_app(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == _app_rest_routes(settings)
    # (then POST /agent-tasks/{id}/cancel, /pause and /resume, and the four bulk actions)
    # and the steering routes: three for each kind of limit, two for claim policies, one claim queue)
    assert len(documented) == 7 * 5 + 3 + 1 + 1 + 2 + 4 + 3 + 3 + 2 + 1

    schemas = document["components"]["schemas"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', response.text))
    assert refs <= set(schemas), refs - set(schemas)
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path == "/openapi.json":
                continue
            assert "500" in operation["responses"], (method, path)
            for status, answer in operation["responses"].items():
                schema = answer["content"]["application/json"]["schema"]
                if status.startswith(("4", "5")):
                    assert schema["allOf"][0] == {"$ref": "#/components/schemas/ErrorResponse"}
                    assert declared_codes(answer)  # each error answer names the codes it can carry
    # The schemas come from the collection specs: every seed field is there, and bodies refuse others.
    assert set(schemas["SubTaskOutput"]["properties"]) == {
        "sub_task_id", "output_framedb_ptr", "processor_subject_ids", "processor_subjects_graph",
        "is_finalized_step", "sub_task_data_ptr", "prev_sub_task_id",
    }  # fmt: skip
    assert schemas["MetaTaskCreate"]["additionalProperties"] is False
    limit = next(
        p for p in document["paths"]["/meta-tasks/query"]["post"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"]["maximum"] == settings.max_page_size


async def test_the_openapi_document_is_valid_openapi_3_1(client: httpx.AsyncClient) -> None:
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate

    document = (await client.get("/openapi.json")).json()
    validate(document, cls=OpenAPIV31SpecValidator)  # raises, naming the first problem
    # A default must be a value of its field's type: `default: null` only where null is allowed.
    schemas = document["components"]["schemas"]
    for name in ("SubTaskUpdate", "BehaviorTaskUpdate", "TaskStateInput", "AgentTaskUpdate"):
        for field, schema in schemas[name]["properties"].items():
            if schema.get("default", "absent") is None:
                assert {"type": "null"} in schema.get("anyOf", []), (name, field, schema)


def _fuzz(operation: Any, examples: int) -> list[str]:
    """Run `examples` generated requests against one operation; the 5xx answers found."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    # Answers must match the document. Not "every schema-valid request is accepted": some refusals
    # depend on the data (an unknown dependency id, an id already taken) and no schema can express them.
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    failures: list[str] = []

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: Any) -> None:
        response = case.call()
        if response.status_code >= 500:
            failures.append(f"{operation.label}: {response.status_code} {response.text[:300]}")
            return
        case.validate_response(response, checks=checks)

    run()
    return failures


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors(settings: Settings) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis.python import asgi

    # schemathesis calls the app as Starlette's test client does, with `Host: testserver`.
    app = create_app(settings.model_copy(update={"trusted_hosts": [*settings.trusted_hosts, "testserver"]}))
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        # Every route of the table is driven (schemathesis leaves out the document itself).
        assert {op.label for op in operations} >= {f"{r.operation.method} {r.path}" for r in ROUTES}
        examples = int(os.environ.get("REST_FUZZ_EXAMPLES", "25"))  # per route; raise it for a longer hunt
        failures = [failure for operation in operations for failure in _fuzz(operation, examples)]
        assert not failures, failures
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan ran in schemathesis's own event loop
        with MongoClient(settings.mongodb_uri) as mongo:
            mongo.drop_database(settings.mongodb_db)


async def test_unknown_routes_and_methods_answer_json_errors(client: httpx.AsyncClient) -> None:
    missing = error_of(await client.get("/no-such-thing"), 404, "not_found")
    assert missing["message"] == "GET /no-such-thing: Not Found"
    wrong = error_of(await client.put("/meta-tasks/x"), 405, "method_not_allowed")
    assert "PUT /meta-tasks/x" in wrong["message"]


_PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _concrete(template: str) -> str:
    return re.sub(r"\{\w+\}", "x", template)


async def test_405_answers_allow_every_method_the_path_serves(client: httpx.AsyncClient) -> None:
    """For every path of the route table: the methods that do not answer 405 are exactly the ones each
    405 lists in `Allow`, and they are the methods of every route whose template matches the path."""
    templates = {route.path for route in ROUTES} | {"/openapi.json"}
    table = [(r.path, r.operation.method) for r in ROUTES] + [("/openapi.json", "GET")]
    for template in sorted(templates):
        path = _concrete(template)
        expected = {method for other, method in table if template_regex(other).fullmatch(path)}
        if "GET" in expected:
            expected.add("HEAD")
        served: set[str] = set()
        allows: set[str] = set()
        for method in _PROBED_METHODS:
            response = await client.request(method, path)
            if response.status_code == 405:
                allows.add(response.headers["allow"])
                if method != "HEAD":
                    assert response.json()["error"]["code"] == "method_not_allowed"
            else:
                served.add(method)
        assert served == expected, (path, served)
        assert len(allows) == 1, (path, allows)  # every 405 of a path says the same
        assert set(allows.pop().split(", ")) == expected, path
    # e.g. a task's own path: read, change, delete.
    allow = (await client.put("/meta-tasks/x")).headers["allow"]
    assert allow == "GET, HEAD, PATCH, DELETE"


async def test_if_match_on_a_task_level_patch_is_refused_not_ignored(
    client: httpx.AsyncClient, db: Any
) -> None:
    assert (await client.post("/meta-tasks", json={"task_id": "m1"})).status_code == 201
    before = await db.meta_workflow_tasks.find_one({"_id": "m1"})
    answer = await client.patch("/meta-tasks/m1", json={"personality_type": "x"}, headers={"If-Match": '"1"'})
    error_of(answer, 400, "bad_parameter")
    assert await db.meta_workflow_tasks.find_one({"_id": "m1"}) == before


async def test_service_refusals_name_fields_in_the_body_s_own_terms(client: httpx.AsyncClient) -> None:
    answer = await client.post("/agent-tasks", json={"task_id": "a1", "dependencies": [{"task_id": "ghost"}]})
    error = error_of(answer, 422, "invalid")
    assert error["field"] == "dependencies" and "unknown task 'ghost'" in error["message"]
