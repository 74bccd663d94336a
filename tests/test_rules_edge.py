"""Rules no path may bypass (issue 11, finding 5): finalization protects a parent's child list and
finalized descendants from REST and GraphQL deletes; an idempotency key reused with a different request
is refused; ids refuse control characters. Every REST answer is checked against the OpenAPI document
(the `client` fixture of test_rest)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import GraphQLClient
from tests.test_rest import client, error_of, setup_seed_data  # noqa: F401 - `client` is a fixture

COLLECTIONS = ("meta_workflow_tasks", "sub_tasks", "behavior_tasks", "agent_task_states", "task_outputs")


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

    create = 'mutation($n: String) {{ r: createAgentTask(input: {{id: "{id}", name: $n}}, idempotencyKey: "g-1") {{ __typename ... on ValidationError {{ code field }} }} }}'  # noqa: E501
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
