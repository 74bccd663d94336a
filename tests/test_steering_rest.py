"""Concurrency limits, start rate limits, claim policies and claim queues over REST (issue 22 parts 2 to 5),
with a real mongod: each kind set, listed and cleared with the stored documents checked after, the same
answers as GraphQL, scope refusals (403/401 with their codes), bad input refused naming the parameter or
field and the limit with nothing stored changed, and the routes in the OpenAPI document."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.domain import Scope
from app.settings import Settings
from tests.conftest import GraphQLClient
from tests.support.auth import bearer
from tests.support.inprocess import in_process
from tests.support.lifecycle_helpers import keyed_task
from tests.support.lifecycle_helpers import snapshot as everything

R, W, A = Scope.READ, Scope.WRITE, Scope.ADMIN


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


async def stored(db: Any, collection: str) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in doc.items() if k != "updated_at"} async for doc in db[collection].find().sort("_id")
    ]


async def test_concurrency_limits_are_set_listed_and_cleared(
    client: httpx.AsyncClient, gql: GraphQLClient, db: Any
) -> None:
    answer = ok(await client.put("/concurrency-limits/workflow/wf-1", json={"max": 2}))
    assert answer == {"scope": "workflow", "key": "wf-1", "max": 2, "running": 0}
    # A key holding `/` (a model name), sent escaped; the scope in any case.
    answer = ok(await client.put("/concurrency-limits/KEY/openai%2Fgpt-4o", json={"max": 1}))
    assert answer == {"scope": "key", "key": "openai/gpt-4o", "max": 1, "running": 0}
    assert await stored(db, "concurrency_limits") == [
        {"_id": "key:openai/gpt-4o", "scope": "key", "key": "openai/gpt-4o", "max": 1},
        {"_id": "workflow:wf-1", "scope": "workflow", "key": "wf-1", "max": 2},
    ]
    # Changed at run time: the running count is the tasks in progress under it.
    await db.agent_task_states.insert_many(
        [keyed_task("t1", "in_progress", "wf-1", None), keyed_task("t2", "pending", "wf-1", None)]
    )
    answer = ok(await client.put("/concurrency-limits/workflow/wf-1", json={"max": 5}))
    assert answer == {"scope": "workflow", "key": "wf-1", "max": 5, "running": 1}
    listed = ok(await client.get("/concurrency-limits"))
    assert listed == {
        "items": [
            {"scope": "key", "key": "openai/gpt-4o", "max": 1, "running": 0},
            {"scope": "workflow", "key": "wf-1", "max": 5, "running": 1},
        ]
    }
    graphql = await gql.data("{ concurrencyLimits { scope key max running } }")
    assert [{**item, "scope": item["scope"].lower()} for item in graphql["concurrencyLimits"]] == listed[
        "items"
    ]

    assert ok(await client.delete("/concurrency-limits/workflow/wf-1")) == {"cleared": True}
    assert ok(await client.delete("/concurrency-limits/workflow/wf-1")) == {"cleared": False}
    assert [d["_id"] for d in await stored(db, "concurrency_limits")] == ["key:openai/gpt-4o"]


async def test_start_rate_limits_are_set_listed_and_cleared(client: httpx.AsyncClient, db: Any) -> None:
    before = dt.datetime.now(dt.UTC)
    answer = ok(await client.put("/start-rate-limits/agent/A", json={"max": 5, "per": "minute"}))
    next_window = dt.datetime.fromisoformat(answer.pop("next_window_at"))
    assert answer == {"scope": "agent", "key": "A", "max": 5, "per": "minute", "started": 0}
    assert next_window.second == 0 and before < next_window <= before + dt.timedelta(minutes=1, seconds=1)
    assert await stored(db, "start_rate_limits") == [
        {"_id": "agent:A", "scope": "agent", "key": "A", "max": 5, "per_seconds": 60}
    ]
    ok(await client.put("/start-rate-limits/key/gpu", json={"max": 100, "per": "hour"}))
    listed = ok(await client.get("/start-rate-limits"))["items"]
    assert [(i["scope"], i["key"], i["max"], i["per"], i["started"]) for i in listed] == [
        ("agent", "A", 5, "minute", 0),
        ("key", "gpu", 100, "hour", 0),
    ]
    assert ok(await client.delete("/start-rate-limits/agent/A")) == {"cleared": True}
    assert ok(await client.delete("/start-rate-limits/agent/A")) == {"cleared": False}
    assert [d["_id"] for d in await stored(db, "start_rate_limits")] == ["key:gpu"]


async def test_claim_policies_and_queues(client: httpx.AsyncClient, gql: GraphQLClient, db: Any) -> None:
    assert ok(await client.get("/claim-policies/A")) == {"agent_name": "A", "policy": "FIFO"}
    # Any character but the separator of stored ids, as over GraphQL: `/` and a newline are routed too.
    assert ok(await client.get("/claim-policies/a%2Fb%0Ac"))["agent_name"] == "a/b\nc"
    answer = ok(await client.put("/claim-policies/A", json={"policy": "FAIR_BY_WORKFLOW"}))
    assert answer == {"agent_name": "A", "policy": "FAIR_BY_WORKFLOW"}
    assert await stored(db, "claim_policies") == [{"_id": "A", "policy": "FAIR_BY_WORKFLOW"}]
    assert ok(await client.get("/claim-policies/A"))["policy"] == "FAIR_BY_WORKFLOW"
    # FIFO is the default: no document.
    assert ok(await client.put("/claim-policies/A", json={"policy": "FIFO"}))["policy"] == "FIFO"
    assert await stored(db, "claim_policies") == []

    await db.agent_task_states.insert_many(
        [
            keyed_task("w1-a", "in_progress", "w1", "gpu"),
            keyed_task("w1-b", "pending", "w1", "gpu"),
            keyed_task("w1-c", "pending", "w1", None),
            keyed_task("w2-a", "pending", "w2", "gpu"),
        ]
    )
    ok(await client.put("/concurrency-limits/workflow/w1", json={"max": 1}))
    queue = ok(await client.get("/claim-queues/A"))
    groups = sorted(queue.pop("groups"), key=lambda g: g["group"])
    assert queue == {
        "agent_name": "A",
        "policy": "FIFO",
        "ready": 3,
        "running": 1,
        "limit": None,
        "waiting_on_limits": 2,  # w1 is full
        "capped": False,
    }
    assert groups == [
        {"group": "w1", "ready": 2, "running": 1, "limit": 1},
        {"group": "w2", "ready": 1, "running": 0, "limit": None},
    ]
    graphql = await gql.data('{ claimQueue(agentName: "A") { ready running waitingOnLimits } }')
    assert graphql["claimQueue"] == {"ready": 3, "running": 1, "waitingOnLimits": 2}
    by_key = ok(await client.get("/claim-queues/A?by=key"))["groups"]
    assert sorted(by_key, key=lambda g: g["group"] or "") == [
        {"group": None, "ready": 1, "running": 0, "limit": None},
        {"group": "gpu", "ready": 2, "running": 1, "limit": None},
    ]


async def test_bad_input_is_refused_naming_it_and_changes_nothing(client: httpx.AsyncClient, db: Any) -> None:
    ok(await client.put("/concurrency-limits/agent/A", json={"max": 2}))
    ok(await client.put("/start-rate-limits/agent/A", json={"max": 2, "per": "second"}))
    before = await everything(db)
    long_key = "k" * 201

    error = refused(await client.put("/concurrency-limits/tenant/A", json={"max": 1}), 400, "bad_parameter")
    assert error["field"] == "scope" and "agent, workflow or key" in error["message"]
    error = refused(
        await client.put(f"/concurrency-limits/key/{long_key}", json={"max": 1}), 400, "bad_parameter"
    )
    assert error["field"] == "key" and error["message"] == "key must be at most 200 characters, got 201"
    error = refused(await client.delete(f"/start-rate-limits/key/{long_key}"), 400, "bad_parameter")
    assert error["field"] == "key"
    error = refused(await client.put("/concurrency-limits/key/a%1Fb", json={"max": 1}), 400, "bad_parameter")
    assert error["field"] == "key" and "control characters" in error["message"]
    error = refused(await client.put("/concurrency-limits/key/%20", json={"max": 1}), 400, "bad_parameter")
    assert error["message"] == "key must not be empty"
    error = refused(await client.get(f"/claim-queues/{long_key}"), 400, "bad_parameter")
    assert error["field"] == "agent_name"
    error = refused(await client.get("/claim-queues/A?by=tenant"), 400, "bad_parameter")
    assert error["field"] == "by"

    for body, field, words in [
        ({"max": 0}, "max", "greater than or equal to 1"),
        ({"max": 1_000_001}, "max", "less than or equal to 1000000"),
        ({"max": "3"}, "max", "valid integer"),
        ({"max": 2.5}, "max", "valid integer"),
        ({}, "max", "Field required"),
    ]:
        error = refused(await client.put("/concurrency-limits/agent/A", json=body), 422, "invalid")
        assert error["field"] == field and words in error["message"], error
    error = refused(
        await client.put("/start-rate-limits/agent/A", json={"max": 2, "per": "day"}), 422, "invalid"
    )
    assert error["field"] == "per"
    error = refused(
        await client.put("/concurrency-limits/agent/A", json={"max": 2, "x": 1}), 422, "unknown_field"
    )
    assert error["field"] == "x"
    error = refused(await client.put("/claim-policies/A", json={"policy": "RANDOM"}), 422, "invalid")
    assert error["field"] == "policy"
    refused(await client.put("/claim-policies/A"), 400, "bad_json")
    refused(
        await client.put(
            "/concurrency-limits/agent/A", content=b'{"max": 1}', headers={"Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    )
    assert await everything(db) == before


@pytest.fixture
async def two_limits_app(settings: Settings, db: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(settings, max_concurrency_limits=2) as http:
        yield http


async def test_the_number_of_limits_is_bounded(two_limits_app: httpx.AsyncClient, db: Any) -> None:
    for key in ("a", "b"):
        ok(await two_limits_app.put(f"/concurrency-limits/key/{key}", json={"max": 1}))
    error = refused(await two_limits_app.put("/concurrency-limits/key/c", json={"max": 1}), 422, "invalid")
    assert (
        error["field"] == "key" and "MAX_CONCURRENCY_LIMITS" in error["message"] and "2" in error["message"]
    )
    # Changing one that exists is no new limit.
    ok(await two_limits_app.put("/concurrency-limits/key/a", json={"max": 3}))
    assert [d["_id"] for d in await stored(db, "concurrency_limits")] == ["key:a", "key:b"]
    for key in ("a", "b"):
        ok(await two_limits_app.put(f"/start-rate-limits/key/{key}", json={"max": 1, "per": "second"}))
    error = refused(
        await two_limits_app.put("/start-rate-limits/key/c", json={"max": 1, "per": "second"}), 422, "invalid"
    )
    assert error["field"] == "key" and "2 start rate limits" in error["message"]
    ok(await two_limits_app.put("/start-rate-limits/key/a", json={"max": 5, "per": "hour"}))
    assert [d["_id"] for d in await stored(db, "start_rate_limits")] == ["key:a", "key:b"]


@pytest.fixture
async def keyed(settings: Settings, db: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app requiring keys (AUTH_MODE=keys)."""
    async with in_process(settings, auth_mode="keys") as http:
        yield http


async def test_writes_need_admin_and_reads_need_read(keyed: httpx.AsyncClient, db: Any) -> None:
    reader, writer, admin = await bearer(db, R), await bearer(db, R, W), await bearer(db, R, W, A)
    writes = [
        ("PUT", "/concurrency-limits/agent/A", {"max": 1}),
        ("DELETE", "/concurrency-limits/agent/A", None),
        ("PUT", "/start-rate-limits/agent/A", {"max": 1, "per": "second"}),
        ("DELETE", "/start-rate-limits/agent/A", None),
        ("PUT", "/claim-policies/A", {"policy": "FAIR_BY_KEY"}),
    ]
    reads = ["/concurrency-limits", "/start-rate-limits", "/claim-policies/A", "/claim-queues/A"]
    before = await everything(db)
    for method, path, body in writes:
        for headers in (reader, writer):
            error = refused(await keyed.request(method, path, json=body, headers=headers), 403, "forbidden")
            assert error["required_scope"] == "admin", error
            assert error["message"].startswith(f"{method} {path} needs the `admin` scope"), error
        error = refused(await keyed.request(method, path, json=body), 401, "unauthenticated")
        assert error["required_scope"] == "admin"
    for path in reads:
        refused(await keyed.get(path), 401, "unauthenticated")
        refused(await keyed.get(path, headers=await bearer(db, W)), 403, "forbidden")
    after = await everything(db)
    assert {k: v for k, v in after.items() if k != "api_keys"} == {
        k: v for k, v in before.items() if k != "api_keys"
    }
    for path in reads:
        ok(await keyed.get(path, headers=reader))
    for method, path, body in writes:
        ok(await keyed.request(method, path, json=body, headers=admin))
    # An admin key bound to agent A sets A's own limit, not B's nor a workflow's (test_agent_binding).
    bound = await bearer(db, R, W, A, agents=["A"])
    ok(await keyed.put("/concurrency-limits/agent/A", json={"max": 4}, headers=bound))
    error = refused(
        await keyed.put("/concurrency-limits/agent/B", json={"max": 4}, headers=bound), 403, "forbidden"
    )
    assert error["agent_name"] == "B"
    error = refused(
        await keyed.put("/concurrency-limits/workflow/w", json={"max": 4}, headers=bound), 403, "forbidden"
    )
    assert "agent_name" not in error and "(any agent's)" in error["message"]  # a workflow spans agents


async def test_the_openapi_document_lists_the_routes(client: httpx.AsyncClient) -> None:
    document = ok(await client.get("/openapi.json"))
    paths = document["paths"]
    assert set(paths["/concurrency-limits"]) == {"get"}
    assert set(paths["/concurrency-limits/{scope}/{key}"]) == {"put", "delete"}
    assert set(paths["/start-rate-limits"]) == {"get"}
    assert set(paths["/start-rate-limits/{scope}/{key}"]) == {"put", "delete"}
    assert set(paths["/claim-policies/{agent_name}"]) == {"get", "put"}
    assert set(paths["/claim-queues/{agent_name}"]) == {"get"}
    put = paths["/concurrency-limits/{scope}/{key}"]["put"]
    assert put["operationId"] == "setConcurrencyLimit"
    assert "`admin` scope" in put["description"]
    body = put["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert document["components"]["schemas"][body]["properties"]["max"]["maximum"] == 1_000_000
    scope = next(p for p in put["parameters"] if p["name"] == "scope")
    assert scope["schema"]["enum"] == ["agent", "workflow", "key"] and scope["required"] is True
    assert {"400", "401", "403", "422", "500"} <= set(put["responses"])
    queue = paths["/claim-queues/{agent_name}"]["get"]
    assert queue["operationId"] == "getClaimQueue" and "`read` scope" in queue["description"]
