"""Rules no path may bypass (issue 11, finding 5): finalization protects a parent's child list and
finalized descendants from REST and GraphQL deletes; an idempotency key reused with a different request
is refused; ids refuse control characters. Every REST answer is checked against the OpenAPI document
(`checking_answers`)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import GraphQLClient
from tests.support.rest import checking_answers, error_of, setup_seed_data

COLLECTIONS = ("meta_workflow_tasks", "sub_tasks", "behavior_tasks", "agent_task_states", "task_outputs")


@pytest.fixture
def client(client: httpx.AsyncClient, settings: Settings) -> httpx.AsyncClient:
    """The app's client, every answer checked against the OpenAPI document."""
    return checking_answers(client, settings)


async def snapshot(db: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: await db[name].find({}).sort("_id").to_list() for name in COLLECTIONS}


async def test_a_finalized_sub_task_keeps_its_children(client: httpx.AsyncClient, db: Any) -> None:
    await setup_seed_data(client)
    assert (await client.post("/sub-tasks/sub123/finalize")).status_code == 200
    before = await snapshot(db)
    refused = error_of(await client.delete("/behavior-tasks/beh_a"), 409, "refused")
    assert refused["message"] == "cannot remove children from sub-task 'sub123': it is finalized"
    cascade = error_of(await client.delete("/meta-tasks/meta123?cascade=true"), 409, "refused")
    assert cascade["message"] == (
        "cannot delete meta workflow task 'meta123': its sub-task 'sub123' is finalized"
        " (a cascade never removes a finalized task)"
    )
    assert await snapshot(db) == before


async def test_graphql_deletes_keep_finalized_tasks(
    client: httpx.AsyncClient, gql: GraphQLClient, db: Any
) -> None:
    await setup_seed_data(client)
    assert (await client.post("/behavior-tasks/beh_b/finalize")).status_code == 200
    before = await snapshot(db)
    for mutation in (
        'deleteMetaWorkflowTask(id: "meta123", cascade: true)',
        'deleteSubTask(id: "sub123", cascade: true)',
    ):
        data = await gql.data(f"mutation {{ r: {mutation} {{ __typename ... on Error {{ message }} }} }}")
        assert data["r"]["__typename"] == "TransitionError", data
        assert "behavior task 'beh_b' is finalized" in data["r"]["message"]
    assert await snapshot(db) == before


async def test_an_idempotency_key_reused_with_another_request_is_refused(
    client: httpx.AsyncClient, gql: GraphQLClient, db: Any
) -> None:
    key = {"Idempotency-Key": "k-1"}
    first = await client.post("/meta-tasks", json={"task_id": "m1", "meta_workflow_id": "w"}, headers=key)
    assert first.status_code == 201
    replay = await client.post("/meta-tasks", json={"task_id": "m1", "meta_workflow_id": "w"}, headers=key)
    assert replay.status_code == 201 and replay.json() == first.json()
    other = await client.post("/meta-tasks", json={"task_id": "m2", "meta_workflow_id": "w"}, headers=key)
    error = error_of(other, 422, "idempotency_key_reused")
    assert error["field"] == "Idempotency-Key" and "different arguments" in error["message"]
    assert await db.meta_workflow_tasks.count_documents({}) == 1

    create = 'mutation($n: String) {{ r: createAgentTask(input: {{id: "{id}", name: $n}}, idempotencyKey: "g-1") {{ __typename ... on ValidationError {{ code field }} }} }}'
    assert (await gql.data(create.format(id="a1"), {"n": "x"}))["r"]["__typename"] == "AgentTaskSuccess"
    assert (await gql.data(create.format(id="a1"), {"n": "x"}))["r"]["__typename"] == "AgentTaskSuccess"
    reused = (await gql.data(create.format(id="a1"), {"n": "y"}))["r"]
    assert reused == {
        "__typename": "ValidationError",
        "code": "IDEMPOTENCY_KEY_REUSED",
        "field": "idempotencyKey",
    }
    assert (await db.agent_task_states.find_one({"_id": "a1"}))["name"] == "x"


@pytest.mark.parametrize("bad", ["a\x00b", "a\x1fb", "a\x85b", "a\u202eb", "a\u2066b"])
async def test_ids_refuse_control_characters(
    client: httpx.AsyncClient, gql: GraphQLClient, db: Any, bad: str
) -> None:
    error = error_of(await client.post("/meta-tasks", json={"task_id": bad}), 422, "invalid")
    assert "control characters" in error["message"]
    data = await gql.data(
        "mutation($id: ID) { r: createAgentTask(input: {id: $id}) { __typename ... on ValidationError { field } } }",
        {"id": bad},
    )
    assert data["r"] == {"__typename": "ValidationError", "field": "input.id"}
    assert await db.meta_workflow_tasks.count_documents({}) == 0
    assert await db.agent_task_states.count_documents({}) == 0


async def test_expires_at_is_an_iso_timestamp_in_the_future(
    client: httpx.AsyncClient, gql: GraphQLClient, db: Any
) -> None:
    for value, words in (
        (0, "ISO 8601"),
        ("2030-01-01T00:00:00", "timezone"),
        ("2001-01-01T00:00:00Z", "future"),
    ):
        body = {"task_id": "m1", "state": {"expires_at": value}}
        error = error_of(await client.post("/meta-tasks", json=body), 422, "invalid")
        assert words in error["message"] or words == "timezone", error
        assert error["field"].endswith("expires_at"), error
    data = await gql.data(
        'mutation { r: createAgentTask(input: {id: "t1", expiresAt: "2001-01-01T00:00:00Z"}) {'
        " __typename ... on ValidationError { field message } } }"
    )
    assert data["r"]["__typename"] == "ValidationError" and data["r"]["field"] == "input.expiresAt", data
    assert "not in the future" in data["r"]["message"]
    assert await db.meta_workflow_tasks.count_documents({}) == 0
    assert await db.agent_task_states.count_documents({}) == 0


async def test_free_form_payloads_are_capped(gql: GraphQLClient, db: Any) -> None:
    await gql.data('mutation { createAgentTask(input: {id: "t1", agentName: "a"}) { __typename } }')
    await gql.data('mutation { startTask(id: "t1") { __typename } }')
    big = {"blob": "x" * (300 * 1024)}
    complete = 'mutation($r: JSON) { r: completeTask(id: "t1", result: $r) { __typename ... on ValidationError { field message } } }'
    data = await gql.data(complete, {"r": big})
    assert data["r"]["__typename"] == "ValidationError" and data["r"]["field"] == "result", data
    assert "more than MAX_PAYLOAD_BYTES (262144)" in data["r"]["message"]
    assert (await db.agent_task_states.find_one({"_id": "t1"}))["status"] == "in_progress"
    data = await gql.data(complete, {"r": {"ok": True}})
    assert data["r"]["__typename"] == "TaskTransitionSuccess"


async def test_a_workflow_with_too_many_tasks_is_refused_before_writing(
    client: httpx.AsyncClient, gql: GraphQLClient, db: Any
) -> None:
    subs = [
        {"sub_task_id": f"s{i}", "behavior_tasks": [{"behavior_task_id": f"b{i}_{j}"} for j in range(100)]}
        for i in range(10)
    ]
    error = error_of(
        await client.post("/meta-tasks", json={"task_id": "big", "sub_tasks": subs}), 422, "invalid"
    )
    assert error["message"] == (
        "a workflow of 1011 tasks is more than MAX_WORKFLOW_TASKS (1000) in one request; create it in parts"
    )
    assert await db.meta_workflow_tasks.count_documents({}) == 0
    workflow = {
        "id": "big",
        "subTasks": [
            {"id": f"s{i}", "behaviorTasks": [{"id": f"b{i}_{j}"} for j in range(100)]} for i in range(10)
        ],
    }
    data = await gql.data(
        "mutation($w: CreateMetaWorkflowTaskInput!) { r: createWorkflow(input: $w) {"
        " __typename ... on ValidationError { field message } } }",
        {"w": workflow},
    )
    assert data["r"]["__typename"] == "ValidationError", data
    assert "MAX_WORKFLOW_TASKS (1000)" in data["r"]["message"] and data["r"]["field"] == "input"
    assert await db.meta_workflow_tasks.count_documents({}) == 0
