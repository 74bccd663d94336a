"""Standard clients, unmodified: graphql-core's full introspection query, the `gql` client fetching the
schema from a real server, and `gql`'s WebSocket transport speaking the legacy `graphql-ws` protocol
(subscriptions-transport-ws) for queries, mutations and subscriptions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from gql import Client, GraphQLRequest
from gql import gql as document
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport
from graphql import (
    GraphQLError,
    build_client_schema,
    build_schema,
    find_breaking_changes,
    find_dangerous_changes,
    get_introspection_query,
    lexicographic_sort_schema,
    parse_value,
    print_schema,
)
from pymongo import AsyncMongoClient

from tests.conftest import GraphQLClient
from tests.support.lifecycle_helpers import task
from tests.support.servers import ServerGroup, ServerProcess

SDL = Path(__file__).resolve().parent.parent / "schema" / "schema.graphql"

#: Everything graphql-core's introspection query can ask for (what codegen tools and IDEs send).
FULL_INTROSPECTION = get_introspection_query(
    descriptions=True,
    specified_by_url=True,
    directive_is_repeatable=True,
    schema_description=True,
    input_value_deprecation=True,
)

RECORD_CALL = """mutation($toolArgs: JSON) {
  omitted: recordToolCall(taskId: "solo", toolName: "calc") { ...Args }
  explicitNull: recordToolCall(taskId: "solo", toolName: "calc", toolArgs: null) { ...Args }
  unsetVariable: recordToolCall(taskId: "solo", toolName: "calc", toolArgs: $toolArgs) { ...Args }
}
fragment Args on RecordEventResult {
  __typename
  ... on RecordEventSuccess { event { id ... on ToolCallEvent { toolArgs } } }
}"""


async def test_full_introspection_query_builds_the_committed_schema(gql: GraphQLClient) -> None:
    body = await gql(FULL_INTROSPECTION)
    assert "errors" not in body, body["errors"]
    client_schema = build_client_schema(body["data"])
    committed = build_schema(SDL.read_text(encoding="utf-8"))
    # The same schema, field for field: types, arguments, defaults, descriptions, deprecations, directives.
    assert print_schema(lexicographic_sort_schema(client_schema)) == print_schema(
        lexicographic_sort_schema(committed)
    )
    for old, new in ((committed, client_schema), (client_schema, committed)):
        assert find_breaking_changes(old, new) == []
        assert find_dangerous_changes(old, new) == []


async def test_every_default_value_is_introspectable(gql: GraphQLClient) -> None:
    """Each argument and input field default comes back as a GraphQL literal; `toolArgs` defaults to null
    (an object default of the JSON scalar is what graphql-core could not print)."""
    query = """{ __schema { types { name
      fields { name args { name defaultValue } }
      inputFields { name defaultValue } } } }"""
    body = await gql(query)
    assert "errors" not in body, body["errors"]
    defaults = {}
    for t in body["data"]["__schema"]["types"]:
        for f in t["fields"] or []:
            defaults.update({f"{t['name']}.{f['name']}({a['name']})": a["defaultValue"] for a in f["args"]})
        defaults.update({f"{t['name']}.{f['name']}": f["defaultValue"] for f in t["inputFields"] or []})
    # Every default is a GraphQL literal a client can parse.
    assert all(parse_value(v) for v in defaults.values() if v is not None)
    assert defaults["Mutation.recordToolCall(toolArgs)"] == "null"
    assert defaults["DependencyInput.statusExpected"] == "COMPLETED"
    assert defaults["AgentTaskOrder.direction"] == "ASC"


async def test_omitted_or_null_tool_args_store_an_empty_object(gql: GraphQLClient, db: Any) -> None:
    await db.agent_task_states.insert_one(task("solo", "pending"))
    data = await gql.data(RECORD_CALL)
    for alias in ("omitted", "explicitNull", "unsetVariable"):
        event = data[alias]["event"]
        assert event["toolArgs"] == {}, alias
        stored = await db.task_events.find_one({"seq": ObjectId(event["id"])})
        assert stored["type"] == "TOOL_CALL" and stored["payload"]["tool_args"] == {}, alias


# --- A real server process, and gql's transports -------------------------------------------------------


@pytest.fixture(scope="module")
def db_name() -> str:
    return f"clients_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup, db_name: str) -> ServerProcess:
    return module_servers.start("introspection", {"EXPIRY_SWEEP_SECONDS": "3600"}, db_name=db_name)


@pytest.fixture
async def stored(mongo_uri: str, db_name: str) -> AsyncIterator[Any]:
    """The server's database, read directly to check what a mutation stored."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    yield client[db_name]
    await client.close()


WORKFLOW = """mutation($input: CreateMetaWorkflowTaskInput!) {
  createWorkflow(input: $input) {
    __typename
    ... on MetaWorkflowTaskSuccess { task { id subTasks { id } } }
    ... on Error { message }
  }
}"""

TREE = """query($id: ID!) {
  metaWorkflowTask(id: $id) {
    id
    state { status agentName }
    subTasks { id state { status dependencies { taskId satisfied } } }
  }
}"""

START = """mutation($id: ID!) {
  startTask(id: $id) { __typename ... on TaskTransitionSuccess { state { status attempts } } }
}"""

FILTERED = "query($f: JSON) { subTasks(filter: $f) { totalCount } }"
REFUSED_WHERE = "operator '$where' is not allowed (JavaScript is never run); found at filter"

EVENTS = """subscription($w: ID!) { taskEvents(workflowId: $w) { cursor type taskId } }"""


def request(query: str, **variables: Any) -> GraphQLRequest:
    return GraphQLRequest(query, variable_values=variables)


def workflow_input() -> dict[str, Any]:
    wid = f"wf_{uuid.uuid4().hex[:8]}"
    return {
        "id": wid,
        "state": {"agentName": "Orchestrator"},
        "subTasks": [
            {"id": f"{wid}_s1", "state": {"agentName": "Writer"}},
            {"id": f"{wid}_s2", "state": {"agentName": "Writer", "dependencies": [{"taskId": f"{wid}_s1"}]}},
        ],
    }


async def test_gql_fetches_the_schema_over_http_and_validates_locally(server: ServerProcess) -> None:
    transport = HTTPXAsyncTransport(url=f"{server.url}/graphql", timeout=30)
    async with Client(transport=transport, fetch_schema_from_transport=True) as session:
        schema = session.client.schema
        assert schema is not None and schema.mutation_type is not None
        assert "toolArgs" in schema.mutation_type.fields["recordToolCall"].args
        # Validated against the fetched schema before it is sent, then run by the server.
        data = await session.execute(document("{ metaWorkflowTasks(first: 1) { totalCount } }"))
        assert data == {"metaWorkflowTasks": {"totalCount": 0}}
        # A document the schema does not allow never leaves the client.
        with pytest.raises(GraphQLError, match="Cannot query field 'noSuchField' on type 'Query'"):
            await session.execute(document("{ noSuchField }"))


async def test_legacy_graphql_ws_runs_queries_mutations_and_subscriptions(
    server: ServerProcess, stored: Any
) -> None:
    ws_url = server.url.replace("http://", "ws://") + "/graphql"
    transport = WebsocketsTransport(url=ws_url, subprotocols=[WebsocketsTransport.APOLLO_SUBPROTOCOL])
    # The schema is fetched over the socket: introspection is a query on the legacy protocol.
    async with Client(transport=transport, fetch_schema_from_transport=True) as session:
        assert transport.subprotocol == "graphql-ws"
        assert session.client.schema is not None

        # A mutation: everything it created is in the database.
        workflow = workflow_input()
        wid, s1, s2 = workflow["id"], f"{workflow['id']}_s1", f"{workflow['id']}_s2"
        created = await session.execute(request(WORKFLOW, input=workflow))
        assert created["createWorkflow"]["__typename"] == "MetaWorkflowTaskSuccess"
        meta = await stored.meta_workflow_tasks.find_one({"_id": wid})
        assert meta["sub_task_ids"] == [s1, s2]
        states = {d["_id"]: d async for d in stored.agent_task_states.find({"_id": {"$in": [wid, s1, s2]}})}
        assert {k: (v["status"], v["agent_name"]) for k, v in states.items()} == {
            wid: ("pending", "Orchestrator"),
            s1: ("pending", "Writer"),
            s2: ("awaiting_dependency", "Writer"),
        }

        # A query, then a mutation, then the same query on the same socket: each operation reads afresh.
        tree = await session.execute(request(TREE, id=wid))
        assert [s["state"]["status"] for s in tree["metaWorkflowTask"]["subTasks"]] == [
            "PENDING",
            "AWAITING_DEPENDENCY",
        ]
        started = await session.execute(request(START, id=s1))
        assert started["startTask"] == {
            "__typename": "TaskTransitionSuccess",
            "state": {"status": "IN_PROGRESS", "attempts": 1},
        }
        stored_state = await stored.agent_task_states.find_one({"_id": s1})
        assert (stored_state["status"], stored_state["attempts"]) == ("in_progress", 1)
        tree = await session.execute(request(TREE, id=wid))
        assert tree["metaWorkflowTask"]["subTasks"][0]["state"]["status"] == "IN_PROGRESS"

        # A subscription: the stored events of the workflow, in commit order, as the database has them.
        received = []
        async for result in session.subscribe(request(EVENTS, w=wid)):
            received.append(result["taskEvents"])
            if len(received) == 4:
                break
        in_db = [
            (str(e["seq"]), e["type"], e["task_id"])
            async for e in stored.task_events.find({"workflow_id": wid}).sort("seq", 1)
        ]
        assert [(e["cursor"], e["type"], e["taskId"]) for e in received] == in_db
        assert [t for _, t, _ in in_db] == ["TASK_CREATED"] * 3 + ["STATUS_CHANGED"]

        # A refusal comes back as the server's own error (before: every operation but a subscription was
        # refused as "Unexpected error.").
        with pytest.raises(TransportQueryError) as refused:
            await session.execute(request(FILTERED, f={"$where": "sleep(1000)"}))
        assert refused.value.errors == [
            {
                "message": REFUSED_WHERE,
                "locations": [{"line": 2, "column": 3}],  # in the document as gql prints it
                "path": ["subTasks"],
                "extensions": {"code": "BAD_FILTER"},
            }
        ]


async def test_graphql_transport_ws_queries_read_afresh(server: ServerProcess, stored: Any) -> None:
    """A WebSocket connection's context outlives its operations: a query after a mutation on the same
    socket must not read through the loaders of an earlier query (it did, on both protocols)."""
    ws_url = server.url.replace("http://", "ws://") + "/graphql"
    transport = WebsocketsTransport(url=ws_url, subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
    async with Client(transport=transport) as session:
        assert transport.subprotocol == "graphql-transport-ws"
        workflow = workflow_input()
        wid, s1 = workflow["id"], f"{workflow['id']}_s1"
        await session.execute(request(WORKFLOW, input=workflow))
        before = await session.execute(request(TREE, id=wid))
        assert before["metaWorkflowTask"]["subTasks"][0]["state"]["status"] == "PENDING"
        await session.execute(request(START, id=s1))
        assert (await stored.agent_task_states.find_one({"_id": s1}))["status"] == "in_progress"
        after = await session.execute(request(TREE, id=wid))
        assert after["metaWorkflowTask"]["subTasks"][0]["state"]["status"] == "IN_PROGRESS"
