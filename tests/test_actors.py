"""Accountability: every event records who wrote it (`actor`) and the request that did (`request_id`),
stored and exposed on `TaskEvent`, and `taskEvents(actorId:)` filters by it.

The API keys' and JWTs' own actors are tested with them (tests/test_auth*.py); here the caller is
anonymous (the server runs open on loopback) or one of the server's own jobs."""

from __future__ import annotations

import datetime as dt
from typing import Any, get_args

import httpx

from app.api.types.events import ActorKind
from app.auth.keys import KeyService
from app.demo.workflow import DEMO_WORKFLOW_ID, load_demo
from app.domain import Scope
from app.lifecycle.expiry import ExpirySweeper
from app.lifecycle.transitions import Lifecycle, utcnow
from app.principal import Principal, PrincipalKind, acting_as
from app.settings import Settings
from app.store.indexes import ensure_indexes
from tests.conftest import GraphQLClient
from tests.support.graphql import wait_for_subscribers
from tests.support.lifecycle_helpers import append_stamped, task
from tests.support.servers import serve
from tests.support.wsclient import GraphQLWebSocket

CREATE = """mutation { r: createAgentTask(input: {id: "a1", agentName: "AgentA"}) { __typename } }"""
START = """mutation { r: startTask(id: "a1") { __typename } }"""
EVENTS = """query($actorId: String, $taskId: ID) {
  taskEvents(actorId: $actorId, taskId: $taskId, first: 100) {
    edges { node { type taskId actor { kind id name } requestId } }
  }
}"""


async def post(http: httpx.AsyncClient, query: str, request_id: str | None = None) -> httpx.Response:
    headers = {} if request_id is None else {"X-Request-ID": request_id}
    response = await http.post("/graphql", json={"query": query}, headers=headers)
    assert response.status_code == 200, response.text
    assert "errors" not in response.json(), response.json()
    return response


async def events(gql: GraphQLClient, **variables: Any) -> list[dict[str, Any]]:
    data = await gql.data(EVENTS, variables)
    return [edge["node"] for edge in data["taskEvents"]["edges"]]


async def test_events_record_the_anonymous_caller_and_the_request_id(
    client: httpx.AsyncClient, gql: GraphQLClient, db: Any
) -> None:
    await post(client, CREATE, request_id="create-req-1")
    started = await post(client, START)  # no X-Request-ID: the server gives one and echoes it
    generated = started.headers["X-Request-ID"]
    assert generated and generated != "create-req-1"

    stored = [e async for e in db.task_events.find({"task_id": "a1"}).sort("_id", 1)]
    anonymous = {"kind": "anonymous", "id": None, "name": None}
    assert [(e["type"], e["actor"], e["request_id"]) for e in stored] == [
        ("TASK_CREATED", anonymous, "create-req-1"),
        ("STATUS_CHANGED", anonymous, generated),
    ]

    listed = await events(gql, taskId="a1")
    assert [(e["type"], e["actor"], e["requestId"]) for e in listed] == [
        ("TASK_CREATED", {"kind": "ANONYMOUS", "id": None, "name": None}, "create-req-1"),
        ("STATUS_CHANGED", {"kind": "ANONYMOUS", "id": None, "name": None}, generated),
    ]


async def test_task_events_filters_by_actor_id(
    client: httpx.AsyncClient, gql: GraphQLClient, db: Any
) -> None:
    await post(client, CREATE)
    key = Principal(kind="key", id="k1d2e3", name="ci-runner", scopes=frozenset(Scope))
    other = Principal(kind="jwt", id="user-7", name="Ada", scopes=frozenset(Scope))
    with acting_as(key):
        mine = [{"type": "TOOL_CALL", "task_id": "a1", "payload": {"tool_name": f"t{i}"}} for i in range(3)]
        await append_stamped(db, mine)
    with acting_as(other):
        await append_stamped(db, [{"type": "TOOL_CALL", "task_id": "a1", "payload": {"tool_name": "x"}}])

    by_key = await events(gql, actorId="k1d2e3")
    assert [e["actor"] for e in by_key] == [{"kind": "KEY", "id": "k1d2e3", "name": "ci-runner"}] * 3
    by_user = await events(gql, actorId="user-7")
    assert [e["actor"] for e in by_user] == [{"kind": "JWT", "id": "user-7", "name": "Ada"}]
    assert await events(gql, actorId="nobody") == []
    # Combined with the other criteria: every criterion must match.
    assert len(await events(gql, actorId="k1d2e3", taskId="a1")) == 3
    assert await events(gql, actorId="k1d2e3", taskId="other") == []
    # The filter is served by its own index, not by a collection scan.
    indexes = await db.task_events.index_information()
    assert [("actor.id", 1), ("seq", 1)] in [info["key"] for info in indexes.values()]


async def test_the_sweeper_and_the_demo_are_actors_too(db: Any) -> None:
    await ensure_indexes(db)
    past = utcnow() - dt.timedelta(seconds=1)
    await db.agent_task_states.insert_one(task("late", "in_progress", attempts=1, expires_at=past))
    await ExpirySweeper(Lifecycle(db), interval=3600).sweep()
    swept = [e async for e in db.task_events.find({"task_id": "late"})]
    assert swept and {(e["actor"]["kind"], e["actor"]["id"]) for e in swept} == {("system", "expiry-sweeper")}
    assert {e["request_id"] for e in swept} == {None}  # no request: the sweeper's own work

    await load_demo(db, events=True)
    demo = [e async for e in db.task_events.find({"workflow_id": DEMO_WORKFLOW_ID})]
    assert demo and {e["actor"]["id"] for e in demo} == {"demo"}


async def test_events_from_before_actors_have_none(
    client: httpx.AsyncClient, gql: GraphQLClient, db: Any
) -> None:
    await post(client, CREATE)
    await db.task_events.update_many({"task_id": "a1"}, {"$unset": {"actor": "", "request_id": ""}})
    assert [(e["actor"], e["requestId"]) for e in await events(gql, taskId="a1")] == [(None, None)]


def test_actor_kinds_are_the_principal_kinds() -> None:
    assert sorted(k.value for k in ActorKind) == sorted(get_args(PrincipalKind))


async def test_keys_are_the_actors_of_what_they_write_and_subscriptions_filter_by_them(
    settings: Settings, db: Any
) -> None:
    keys = KeyService(db)
    first, first_secret = await keys.create("ingest", [Scope.READ, Scope.WRITE])
    _, second_secret = await keys.create("ops", [Scope.READ, Scope.WRITE])
    env = {"MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db, "AUTH_MODE": "keys"}
    with serve(env) as server:
        ws = await GraphQLWebSocket.open(server.url, init=False)
        await ws.send({"type": "connection_init", "payload": {"apiKey": first_secret}})
        assert (await ws.receive())["type"] == "connection_ack"
        await ws.subscribe(
            'subscription($a: String) { taskEvents(actorId: $a, after: "HEAD") { taskId actor { kind id name } } }',
            {"a": first.id},
        )
        await wait_for_subscribers(server.url, 1)  # registered before the writes
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for task_id, secret in (("k1", second_secret), ("k2", first_secret)):
                create = f'mutation {{ r: createAgentTask(input: {{id: "{task_id}"}}) {{ __typename }} }}'
                answer = await http.post(
                    "/graphql", json={"query": create}, headers={"Authorization": f"Bearer {secret}"}
                )
                assert answer.json()["data"]["r"]["__typename"] == "AgentTaskSuccess"
            listed = await http.post(
                "/graphql",
                json={"query": EVENTS, "variables": {"actorId": first.id}},
                headers={"Authorization": f"Bearer {second_secret}"},
            )
        nodes = [e["node"] for e in listed.json()["data"]["taskEvents"]["edges"]]
        actor = {"kind": "KEY", "id": first.id, "name": "ingest"}
        assert [(n["taskId"], n["actor"]) for n in nodes] == [("k2", actor)]
        assert (await ws.next())["taskEvents"] == {"taskId": "k2", "actor": actor}
        assert await ws.nothing_within(0.3)  # the other key's event is not this subscription's
        await ws.close()
    stored = await db.task_events.find_one({"task_id": "k1"})
    assert stored["actor"]["kind"] == "key" and stored["actor"]["name"] == "ops"
