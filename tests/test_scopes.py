"""Scopes (issue 13 part 2): one table (app/auth/scopes.py) applied to GraphQL queries, mutations and
subscriptions and to REST reads, writes and deletes; agent-bound keys. Every refusal is checked to have
written nothing (the whole database is compared before and after)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.api.access import root_fields
from app.api.schema import build_schema
from app.auth.scopes import GRAPHQL, REST
from app.domain import Scope
from app.rest.routes import OPERATIONS
from app.settings import Settings
from tests.support.auth import bearer
from tests.support.inprocess import in_process
from tests.support.lifecycle_helpers import snapshot as everything
from tests.support.servers import serve
from tests.support.wsclient import GraphQLWebSocket

R, W, A = Scope.READ, Scope.WRITE, Scope.ADMIN


@pytest.fixture
async def app_client(settings: Settings, db: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app requiring keys (AUTH_MODE=keys), with its sweeper stopped (nothing writes by itself)."""
    async with in_process(settings, sweeping=False, auth_mode="keys") as http:
        yield http


async def graphql(
    http: httpx.AsyncClient, query: str, headers: dict[str, str], accept: str = "application/json"
) -> httpx.Response:
    return await http.post("/graphql", json={"query": query}, headers={**headers, "Accept": accept})


CREATE = 'mutation { r: createAgentTask(input: {id: "t1", agentName: "A"}) { __typename } }'
DELETE = 'mutation { r: deleteAgentTask(id: "t1") { __typename } }'
READ = "{ agentTasks(first: 5) { edges { node { taskId } } } }"


async def snapshot(db: Any) -> dict[str, list[dict[str, Any]]]:
    """Every stored document but the keys' (whose `last_used_at` a request may move) and the rate limits'
    counters (every request, refused or not, spends from its budget)."""
    return {
        name: docs
        for name, docs in (await everything(db)).items()
        if name != "api_keys" and not name.startswith("rate_limit")
    }


def refused(body: dict[str, Any], code: str, scope: str) -> str:
    assert body["data"] is None, body
    [error] = body["errors"]
    assert error["extensions"] == {"code": code, "requiredScope": scope}, error
    return str(error["message"])


async def test_the_table_names_every_root_field_and_every_rest_operation() -> None:
    schema = build_schema(None, None, 10)._schema
    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        assert root is not None
        assert set(root.fields) == set(GRAPHQL[root.name]), root.name
    assert {op.name for op in OPERATIONS} == set(REST)


async def test_graphql_queries_need_read(app_client: httpx.AsyncClient, db: Any) -> None:
    writer = await bearer(db, W)
    message = refused((await graphql(app_client, READ, writer)).json(), "FORBIDDEN", "read")
    assert message.startswith("`agentTasks` needs the `read` scope; API key ") and message.endswith(
        "has: write"
    )
    reader = await bearer(db, R)
    assert (await graphql(app_client, READ, reader)).json() == {"data": {"agentTasks": {"edges": []}}}
    # Without credentials on a server that requires keys: authenticate (401 under graphql-response+json).
    anonymous = await graphql(app_client, READ, {}, accept="application/graphql-response+json")
    assert anonymous.status_code == 401
    assert "send `Authorization: Bearer" in refused(
        anonymous.json() | {"data": None}, "UNAUTHENTICATED", "read"
    )
    forbidden = await graphql(app_client, READ, writer, accept="application/graphql-response+json")
    assert forbidden.status_code == 403 and "data" not in forbidden.json()
    # Introspection needs no scope: GraphiQL loads the schema before a key is entered.
    intro = await graphql(app_client, "{ __schema { queryType { name } } }", {})
    assert intro.json() == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_graphql_mutations_need_write_and_deletes_admin(app_client: httpx.AsyncClient, db: Any) -> None:
    reader, writer, admin = await bearer(db, R), await bearer(db, R, W), await bearer(db, A)
    before = await snapshot(db)
    refused((await graphql(app_client, CREATE, reader)).json(), "FORBIDDEN", "write")
    assert await snapshot(db) == before

    created = (await graphql(app_client, CREATE, writer)).json()
    assert created == {"data": {"r": {"__typename": "AgentTaskSuccess"}}}
    before = await snapshot(db)
    refused((await graphql(app_client, DELETE, writer)).json(), "FORBIDDEN", "admin")
    # One refused root field refuses the whole document: the create beside it does not run either.
    both = 'mutation { a: createAgentTask(input: {id: "t2"}) { __typename } b: deleteAgentTask(id: "t1") { __typename } }'
    refused((await graphql(app_client, both, writer)).json(), "FORBIDDEN", "admin")
    # Hidden in a fragment, too.
    fragment = 'mutation { ...D } fragment D on Mutation { r: deleteAgentTask(id: "t1") { __typename } }'
    refused((await graphql(app_client, fragment, writer)).json(), "FORBIDDEN", "admin")
    assert await snapshot(db) == before
    deleted = (await graphql(app_client, DELETE, admin)).json()
    assert deleted == {"data": {"r": {"__typename": "DeleteSuccess"}}}
    assert await db.agent_task_states.count_documents({}) == 0


VIEWER = "query Me { viewer { kind scopes agents } }"


async def test_viewer_tells_any_caller_its_own_scopes(
    app_client: httpx.AsyncClient, client: httpx.AsyncClient, db: Any
) -> None:
    """`viewer` needs no scope (an anonymous caller of a keys server may ask), reads nothing stored and
    writes nothing; it answers the caller's kind, scopes (in the table's order) and agents."""
    before = await snapshot(db)
    anonymous = await graphql(app_client, VIEWER, {}, accept="application/graphql-response+json")
    assert anonymous.status_code == 200
    assert anonymous.json() == {"data": {"viewer": {"kind": "ANONYMOUS", "scopes": [], "agents": None}}}
    cases = [
        ((R,), None, ["READ"]),
        ((W, R), None, ["READ", "WRITE"]),
        ((A,), None, ["ADMIN"]),
        ((R, W), ["b", "a"], ["READ", "WRITE"]),
    ]
    for scopes, agents, named in cases:
        headers = await bearer(db, *scopes, agents=agents)
        answer = (await graphql(app_client, VIEWER, headers)).json()
        assert answer == {
            "data": {
                "viewer": {"kind": "KEY", "scopes": named, "agents": None if agents is None else ["a", "b"]}
            }
        }, scopes
    # Beside a field that needs a scope, the operation needs that scope.
    both = (await graphql(app_client, "{ viewer { kind } " + READ[1:], {})).json()
    refused(both, "UNAUTHENTICATED", "read")
    assert await snapshot(db) == before
    # An open server (loopback, AUTH_MODE auto): an anonymous caller with every scope.
    opened = (await graphql(client, VIEWER, {})).json()
    assert opened == {
        "data": {"viewer": {"kind": "ANONYMOUS", "scopes": [s.name for s in Scope], "agents": None}}
    }


async def test_rest_reads_writes_and_deletes(app_client: httpx.AsyncClient, db: Any) -> None:
    reader, writer, admin = await bearer(db, R), await bearer(db, W), await bearer(db, A, R)
    body = {"task_id": "s1", "agent_name": "A"}
    before = await snapshot(db)
    anonymous = await app_client.post("/agent-tasks", json=body)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    forbidden = await app_client.post("/agent-tasks", json=body, headers=reader)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == {
        "code": "forbidden",
        "message": forbidden.json()["error"]["message"],
        "required_scope": "write",
    }
    assert "POST /agent-tasks needs the `write` scope" in forbidden.json()["error"]["message"]
    assert await snapshot(db) == before

    assert (await app_client.post("/agent-tasks", json=body, headers=writer)).status_code == 201
    assert (await app_client.get("/agent-tasks/s1", headers=writer)).status_code == 403
    assert (await app_client.get("/agent-tasks/s1", headers=reader)).status_code == 200
    query = await app_client.post("/agent-tasks/query", json={}, headers=writer)
    assert query.status_code == 403 and query.json()["error"]["required_scope"] == "read"
    before = await snapshot(db)
    delete = await app_client.delete("/agent-tasks/s1", headers=writer)
    assert delete.status_code == 403 and delete.json()["error"]["required_scope"] == "admin"
    assert await snapshot(db) == before
    assert (await app_client.delete("/agent-tasks/s1", headers=admin)).status_code == 200
    assert await db.agent_task_states.count_documents({}) == 0


async def test_agent_bound_keys_act_only_for_their_agents(app_client: httpx.AsyncClient, db: Any) -> None:
    admin = await bearer(db, R, W, A)
    for task_id, agent in (("mine", "A"), ("theirs", "B"), ("nobody's", None)):
        name = "null" if agent is None else f'"{agent}"'
        create = f'mutation {{ r: createAgentTask(input: {{id: "{task_id}", agentName: {name}}}) {{ __typename }} }}'
        assert (await graphql(app_client, create, admin)).json()["data"]["r"][
            "__typename"
        ] == "AgentTaskSuccess"
    bound = await bearer(db, R, W, agents=["A"])

    async def mutate(field: str) -> dict[str, Any]:
        query = (
            f"mutation {{ r: {field} {{ __typename ... on Error {{ message }}"
            " ... on ForbiddenError { agentName code } } }"
        )
        return (await graphql(app_client, query, bound)).json()["data"]["r"]

    before = await snapshot(db)
    theirs = await mutate('startTask(id: "theirs")')
    assert theirs == {
        "__typename": "ForbiddenError",
        "message": "task 'theirs' belongs to agent 'B'; this caller (key "
        + theirs["message"].split("(key ")[1].split(")")[0]
        + ") may act only for: A",
        "agentName": "B",
        "code": "FORBIDDEN",
    }
    assert (await mutate('startTask(id: "nobody\'s")'))["agentName"] is None
    assert (await mutate('claimTask(agentName: "B")'))["__typename"] == "ForbiddenError"
    assert (await mutate('recordToolCall(taskId: "theirs", toolName: "x")'))["__typename"] == "ForbiddenError"
    other = await mutate('createAgentTask(input: {id: "new", agentName: "B"})')
    assert other["__typename"] == "ForbiddenError"
    rest = await app_client.post("/agent-tasks", json={"task_id": "n2", "agent_name": "B"}, headers=bound)
    assert rest.status_code == 403 and rest.json()["error"]["agent_name"] == "B"
    assert await snapshot(db) == before

    claimed = await mutate('claimTask(agentName: "A")')
    assert claimed["__typename"] == "TaskTransitionSuccess"
    assert (await db.agent_task_states.find_one({"_id": "mine"}))["status"] == "in_progress"
    done = await mutate('completeTask(id: "mine")')
    assert done["__typename"] == "TaskTransitionSuccess"
    # Reads are not restricted by agent.
    listed = (await graphql(app_client, READ, bound)).json()["data"]["agentTasks"]["edges"]
    assert len(listed) == 3


async def test_subscriptions_need_read(settings: Settings, db: Any) -> None:
    reader, writer = await bearer(db, R), await bearer(db, W)
    env = {"MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db, "AUTH_MODE": "keys"}
    subscription = "subscription { taskEvents { type } }"
    with serve(env) as server:
        for protocol in ("graphql-transport-ws", "graphql-ws"):
            ws = await GraphQLWebSocket.open(server.url, protocol=protocol, init=False)
            await ws.send({"type": "connection_init", "payload": writer})
            assert (await ws.receive())["type"] == "connection_ack"
            await ws.subscribe(subscription)
            message = await ws.receive()
            payload = message["payload"]
            errors = payload if isinstance(payload, list) else payload.get("errors")
            assert errors[0]["extensions"] == {"code": "FORBIDDEN", "requiredScope": "read"}, message
            await ws.close()

        ws = await GraphQLWebSocket.open(server.url, init=False)
        await ws.send({"type": "connection_init", "payload": reader})
        assert (await ws.receive())["type"] == "connection_ack"
        await ws.subscribe(subscription)
        async with httpx.AsyncClient(base_url=server.url, headers=await bearer(db, W)) as http:
            created = await http.post("/graphql", json={"query": CREATE})
            assert created.json()["data"]["r"]["__typename"] == "AgentTaskSuccess"
        assert (await ws.next())["taskEvents"]["type"] == "TASK_CREATED"
        await ws.close()

        # Server-sent events: the same check over HTTP.
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=10) as http,
            http.stream(
                "POST",
                "/graphql",
                json={"query": subscription},
                headers={**writer, "Accept": "text/event-stream"},
            ) as response,
        ):
            lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
        errors = [json.loads(line[5:]) for line in lines if line[5:].strip()]
        assert errors and errors[0]["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_root_fields_follow_fragments() -> None:
    from graphql import parse

    document = parse("query Q { a ...F ... on Query { b } } query Other { z } fragment F on Query { c }")
    assert list(root_fields(document, "Q")) == ["a", "c", "b"]
    assert list(root_fields(document, "Other")) == ["z"]


def test_the_documented_scope_table_is_the_code_table() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "docs" / "ACCESS.md").read_text(encoding="utf-8")
    rows = {
        m[1]: (m[2], m[3])
        for m in re.finditer(r"^\| `(read|write|admin|metrics)` \| (.*) \| (.*) \|$", readme, re.M)
    }
    assert set(rows) == {s.value for s in Scope}
    for scope in Scope:
        graphql_cell, rest_cell = rows[scope.value]
        listed = {
            (part.split(":")[0].strip(), name)
            for part in graphql_cell.split(";")
            for name in re.findall(r"`(\w+)`", part)
        }
        wanted = {
            (root, name) for root, fields in GRAPHQL.items() for name, s in fields.items() if s is scope
        }
        assert listed == wanted, scope
        methods = {op.name for op in OPERATIONS if f"`{op.method} {op.documented_path}`" in rest_cell}
        assert methods == {name for name, s in REST.items() if s is scope}, scope
