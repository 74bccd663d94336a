"""GraphQL execution guards (issue 11): the cost limit, the query deadline, list lengths, argument bounds
checked before a mutation writes, and several operations without `operationName`, over real HTTP and
both WebSocket protocols."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import OperationDefinitionNode, parse

from app.api.guards import QueryLimits, check_request
from app.api.schema import build_schema
from app.api.types.fetch import PACE, paced
from app.server import create_app
from app.settings import Settings
from tests.conftest import GraphQLClient
from tests.support.lifecycle_helpers import snapshot, task
from tests.support.servers import ServerGroup, ServerProcess
from tests.support.wsclient import GraphQLWebSocket

ROOT = Path(__file__).resolve().parents[1]
GRJ = "application/graphql-response+json"

#: The issue's 150-character query (depth 10, no aliases): 30 s of CPU over 5 workflows of 25×20.
BACK_AND_FORTH = (
    "{ metaWorkflowTasks(first: 100) { edges { node { subTasks { behaviorTasks { subTask { behaviorTasks {"
    " subTask { behaviorTasks { id } } } } } } } } } }"
)
#: A thousand copies of one cheap-looking field (validating them alone took over a second).
COPIES = "{" + " ".join(["agentTasks(first: 5) { totalCount }"] * 1000) + "}"
#: A tree under `first: $n` workflows: its cost grows with `$n`.
TREES = (
    "query($n: Int) { metaWorkflowTasks(first: $n) { edges { node { subTasks { behaviorTasks { id state { id } }"
    " } } } } }"
)


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    return module_servers.start("guards")


def post(server: ServerProcess, body: dict[str, Any], accept: str = "application/json") -> httpx.Response:
    return httpx.post(f"{server.url}/graphql", json=body, headers={"Accept": accept}, timeout=60)


def documents() -> Iterator[tuple[str, str]]:
    """Every GraphQL document the project ships: queries/ and the examples of the README and docs/."""
    for path in sorted((ROOT / "queries").glob("*.graphql")):
        yield path.name, path.read_text(encoding="utf-8")
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for i, block in enumerate(re.findall(r"```graphql\n(.*?)```", text, re.S)):
            yield f"{page.name} block {i}", block


def test_every_shipped_document_is_within_the_default_cost() -> None:
    schema = build_schema()._schema
    for name, text in documents():
        document = parse(text)
        for operation in (d for d in document.definitions if isinstance(d, OperationDefinitionNode)):
            op_name = operation.name.value if operation.name else None
            assert check_request(schema, document, op_name, {}, QueryLimits()) is None, name


def test_the_estimate_follows_first_variables_fragments_and_aliases() -> None:
    schema = build_schema()._schema
    limits = QueryLimits(cost_max=10**12)

    def cost(text: str, variables: dict[str, Any] | None = None) -> int:
        error = check_request(schema, parse(text), None, variables, QueryLimits(cost_max=0))
        assert error is not None and error.extensions is not None
        assert check_request(schema, parse(text), None, variables, limits) is None
        return int(error.extensions["cost"])

    # A page of 10 connections: 10 documents read, and 10 × (edge + node + id).
    assert cost("{ agentTasks(first: 10) { edges { node { id } } } }") == 1 + 10 + 10 * 3
    # The variable, its default, and the server's default page (20) when none is given.
    assert cost("query($n: Int) { agentTasks(first: $n) { edges { node { id } } } }", {"n": 10}) == 41
    assert cost("query($n: Int = 10) { agentTasks(first: $n) { edges { node { id } } } }") == 41
    assert cost("{ agentTasks { edges { node { id } } } }") == 1 + 20 + 20 * 3
    # An unbounded list counts as QUERY_COST_LIST_SIZE (20) items, a back-reference once per item.
    assert cost('{ subTask(id: "s") { behaviorTasks { id subTask { id } } } }') == 1 + 20 * (1 + 1 + 2)
    # A fragment counts where it is spread; aliases count as the fields they are.
    fragment = "fragment F on AgentTaskState { id status }"
    assert cost("{ agentTasks(first: 10) { edges { node { ...F } } } }" + fragment) == 1 + 10 + 10 * 4
    assert cost("{ a: agentTasks(first: 0) { totalCount } b: agentTasks(first: 0) { totalCount } }") == 2 * (
        1 + 101
    )
    # `pendingFirst` sizes `pendingTasks`.
    assert cost('{ agentStats(agentName: "a", pendingFirst: 5) { pendingTasks { id } } }') == 1 + 5 * 2


def test_the_costly_queries_of_the_issue_are_refused_before_execution(server: ServerProcess) -> None:
    # The copies are refused before validation (the overlapping-fields rule compares them pairwise).
    for accept in (GRJ, "application/json"):
        response = post(server, {"query": COPIES}, accept)
        assert response.status_code == (400 if accept == GRJ else 200), response.text
        (error,) = response.json()["errors"]
        assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "limit": 5_000}
        assert "GRAPHQL_VALIDATION_WORK_MAX" in error["message"]
    for query in (BACK_AND_FORTH,):
        for accept in (GRJ, "application/json"):
            response = post(server, {"query": query}, accept)
            assert response.status_code == (400 if accept == GRJ else 200), response.text
            (error,) = response.json()["errors"]
            extensions = error["extensions"]
            assert extensions["code"] == "QUERY_TOO_COSTLY" and extensions["limit"] == 100_000
            assert extensions["cost"] > 100_000
            assert error["message"].startswith(
                f"This operation's estimated cost is {extensions['cost']}, above the limit of 100000"
            )
            assert "data" not in response.json() or response.json()["data"] is None
    # Through a variable: the same document is fine with a small page and refused with a big one.
    assert "errors" not in post(server, {"query": TREES, "variables": {"n": 2}}).json()
    error = post(server, {"query": TREES, "variables": {"n": 100}}).json()["errors"][0]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"


async def test_other_clients_are_answered_while_costly_queries_are_refused(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:

        async def costly() -> str:
            body = (await http.post("/graphql", json={"query": COPIES})).json()
            return str(body["errors"][0]["extensions"]["code"])

        async def trivial() -> str:
            return str((await http.post("/graphql", json={"query": "{ __typename }"})).json()["data"])

        results = await asyncio.gather(*(costly() for _ in range(5)), *(trivial() for _ in range(5)))
    assert results == ["QUERY_TOO_COMPLEX"] * 5 + ["{'__typename': 'Query'}"] * 5


async def test_subscriptions_are_costed(server: ServerProcess) -> None:
    ws = await GraphQLWebSocket.open(server.url)
    try:
        limits = QueryLimits()
        nested = "subtasks { subtasks { subtasks { subtasks { id } } } }"
        await ws.subscribe(f"subscription {{ taskStateChanged {{ {nested} }} }}")
        message = await ws.receive()
        assert message["type"] == "error", message
        assert message["payload"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
        assert message["payload"][0]["extensions"]["limit"] == limits.cost_max
    finally:
        await ws.close()


def test_long_list_variables_and_literals_are_refused(server: ServerProcess) -> None:
    query = "query($s: [TaskStatus!]) { agentTasks(status: $s) { totalCount } }"
    # 1,000 items pass this check (the filter's own limits then apply to them).
    ok = post(server, {"query": query, "variables": {"s": ["PENDING"] * 1000}}).json()
    assert all(e["extensions"]["code"] != "LIST_TOO_LONG" for e in ok.get("errors", [])), ok
    # The issue's 1,000,000 items (11 MB) are over MAX_BODY_BYTES: refused before the body is read.
    response = post(server, {"query": query, "variables": {"s": ["PENDING"] * 1_000_000}}, GRJ)
    assert response.status_code == 413
    # 50,000 items fit in a body; the list itself is refused.
    response = post(server, {"query": query, "variables": {"s": ["PENDING"] * 50_000}}, GRJ)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "LIST_TOO_LONG", "items": 50_000, "limit": 1000}
    assert error["message"] == (
        "The variable `$s` holds a list of 50000 items; at most 1000 are accepted (MAX_LIST_ITEMS)."
    )
    # Inside a JSON scalar too, and written in the document.
    nested = {"filter": {"status": {"$in": ["pending"] * 1001}}}
    query = "query($filter: JSON) { agentTasks(filter: $filter) { totalCount } }"
    error = post(server, {"query": query, "variables": nested}).json()["errors"][0]
    assert error["extensions"]["code"] == "LIST_TOO_LONG"
    literal = "{ agentTasks(status: [" + ", ".join(["PENDING"] * 1001) + "]) { totalCount } }"
    error = post(server, {"query": literal}).json()["errors"][0]
    assert error["extensions"]["code"] == "LIST_TOO_LONG" and "`status`" in error["message"]


async def test_a_bad_page_size_in_a_mutation_is_refused_before_it_writes(
    gql: GraphQLClient, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await db.agent_task_states.insert_one(task("t1", "in_progress"))
    before = await snapshot(db)
    for first, variables in (("-1", {}), ("$n", {"n": 101})):
        query = (
            f'mutation($n: Int) {{ completeTask(id: "t1") {{ ... on TaskTransitionSuccess {{'
            f" state {{ events(first: {first}) {{ type }} }} }} }} }}"
        )
        body = await gql(query, variables)
        assert body["data"] is None
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "PAGE_SIZE_OUT_OF_RANGE"
        assert error["message"] == f"`first` must be between 0 and 100, got {-1 if first == '-1' else 101}."
        assert "path" not in error or error["path"] is None
    assert await snapshot(db) == before
    assert not any(record.exc_info for record in caplog.records)  # a client's mistake: no traceback


def test_several_operations_need_an_operation_name_over_http(server: ServerProcess) -> None:
    document = "query A { __typename } query B { agentTasks { totalCount } }"
    for accept in (GRJ, "application/json"):
        response = post(server, {"query": document}, accept)
        assert response.status_code == (400 if accept == GRJ else 200)
        (error,) = response.json()["errors"]
        assert error["extensions"] == {"code": "OPERATION_NAME_REQUIRED"}
    named = post(server, {"query": document, "operationName": "A"}).json()
    assert named == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_several_operations_need_an_operation_name_over_websockets(
    server: ServerProcess, protocol: str
) -> None:
    ws = await GraphQLWebSocket.open(server.url, protocol=protocol)
    try:
        await ws.subscribe("query A { __typename } query B { __typename }")
        message = await ws.receive()
        payload = message["payload"]
        if message["type"] == "error":  # graphql-transport-ws: a list of errors; graphql-ws: one error
            errors = payload if isinstance(payload, list) else [payload]
        else:
            errors = payload.get("errors")
        assert errors and errors[0]["extensions"]["code"] == "OPERATION_NAME_REQUIRED", message
    finally:
        await ws.close()


async def test_a_query_past_the_deadline_is_cancelled_and_a_mutation_is_not(
    settings: Settings, db: Any
) -> None:
    # A deadline too short for any read of MongoDB: every query that awaits one runs past it.
    app = create_app(settings.model_copy(update={"query_timeout_seconds": 1e-6}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        gql = GraphQLClient(http)
        await db.agent_task_states.insert_one(task("t1", "in_progress"))
        body = await gql("{ agentTasks { totalCount } }")
        assert body["data"] is None
        (error,) = body["errors"]
        assert error["extensions"] == {"code": "QUERY_TIMEOUT", "limit_seconds": 1e-6}
        assert error["message"].startswith("The query ran longer than 1e-06 s (QUERY_TIMEOUT_SECONDS)")
        # It ran (and was cancelled): an execution result, 200 with `data: null` under either media type.
        response = await http.post(
            "/graphql", json={"query": "{ agentTasks { totalCount } }"}, headers={"Accept": GRJ}
        )
        assert response.status_code == 200 and response.json()["data"] is None
        assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TIMEOUT"
        # A mutation answers what it did, whatever the deadline.
        done = await gql.data('mutation { completeTask(id: "t1") { __typename } }')
        assert done == {"completeTask": {"__typename": "TaskTransitionSuccess"}}
        assert (await db.agent_task_states.find_one({"_id": "t1"}))["status"] == "completed"
        # The server goes on answering.
        assert await gql.data("{ __typename }") == {"__typename": "Query"}


async def test_paced_lists_give_the_event_loop_turns() -> None:
    """A list resolver's items come through `paced`: another task runs between every PACE items."""
    turns = 0
    done = False

    async def other_client() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_client())
    await asyncio.sleep(0)
    seen: list[tuple[int, int]] = []
    async for item in paced(list(range(4 * PACE))):
        seen.append((item, turns))
    done = True
    await ticker
    # Items within one slice of PACE share a turn; each next slice comes after the other task ran.
    slices = [{t for i, t in seen if i // PACE == k} for k in range(4)]
    assert all(len(s) == 1 for s in slices)
    assert [next(iter(s)) for s in slices] == sorted({next(iter(s)) for s in slices})
    assert len({next(iter(s)) for s in slices}) == 4


def test_fragments_spread_many_times_or_nested_deep_are_costed_without_blowing_up() -> None:
    schema = build_schema()._schema
    # Each fragment spreads the next twice: 2**40 spreads if walked naively; costed once per fragment.
    chain = (
        " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(40))
        + " fragment F40 on Query { agentTasks(first: 1) { totalCount } }"
    )
    error = check_request(schema, parse("{ ...F0 } " + chain), None, {}, QueryLimits())
    assert error is not None and error.extensions is not None
    assert error.extensions["code"] == "QUERY_TOO_COSTLY" and error.extensions["cost"] == 2**40 * (
        1 + 1 + 101
    )
    # A chain of spreads deeper than the walk goes is refused, not walked (nor let through uncosted).
    deep = " ".join(f"fragment D{i} on Query {{ ...D{i + 1} }}" for i in range(400))
    deep += " fragment D400 on Query { __typename }"
    error = check_request(schema, parse("{ ...D0 } " + deep), None, {}, QueryLimits())
    assert error is not None and error.extensions == {"code": "QUERY_TOO_DEEP", "limit": 150}
