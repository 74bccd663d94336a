"""API key management over GraphQL (admin only), and a revoked key ending the live connections made with
it (WebSocket and server-sent events), against a real server process."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from app.auth.keys import KeyService
from app.domain import Scope
from app.server import create_app
from app.settings import Settings
from tests.support.servers import serve
from tests.support.wsclient import GraphQLWebSocket

CREATE = """mutation($i: CreateApiKeyInput!) { r: createApiKey(input: $i) {
  __typename ... on Error { message } ... on ValidationError { field }
  ... on CreateApiKeySuccess { secret key { id name scopes agents active expiresAt revokedAt } } } }"""
REVOKE = """mutation($id: ID!) { r: revokeApiKey(id: $id) {
  __typename ... on Error { message } ... on RevokeApiKeySuccess { key { id active revokedAt } } } }"""
LIST = "{ apiKeys { id name scopes active lastUsedAt } }"


@pytest.fixture
async def http(settings: Settings, db: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"auth_mode": "keys"}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
    ):
        yield client


async def call(http: httpx.AsyncClient, secret: str, query: str, **variables: Any) -> dict[str, Any]:
    answer = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {secret}"},
    )
    return dict(answer.json())


async def test_admins_create_list_and_revoke_keys(http: httpx.AsyncClient, db: Any) -> None:
    _, admin = await KeyService(db).create("root", [Scope.ADMIN])
    made = (await call(http, admin, CREATE, i={"name": "ci", "scopes": ["READ", "WRITE"], "agents": ["A"]}))[
        "data"
    ]["r"]
    assert made["__typename"] == "CreateApiKeySuccess"
    key, secret = made["key"], made["secret"]
    assert key["scopes"] == ["READ", "WRITE"] and key["agents"] == ["A"] and key["active"] is True
    stored = await db.api_keys.find_one({"_id": key["id"]})
    assert stored["hash"] == hashlib.sha256(secret.encode()).hexdigest() and secret not in str(stored)

    # The new key works, and reads what it may.
    assert (await call(http, secret, "{ __typename }")) == {"data": {"__typename": "Query"}}
    listed = (await call(http, admin, LIST))["data"]["apiKeys"]
    assert [(k["name"], k["active"]) for k in listed] == [("ci", True), ("root", True)]
    assert secret not in str(listed)
    # Key management is admin only.
    refused = await call(http, secret, LIST)
    assert refused["errors"][0]["extensions"] == {"code": "FORBIDDEN", "requiredScope": "admin"}

    revoked = (await call(http, admin, REVOKE, id=key["id"]))["data"]["r"]
    assert revoked["__typename"] == "RevokeApiKeySuccess" and revoked["key"]["active"] is False
    after = await http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert (
        after.status_code == 401
        and after.json()["errors"][0]["message"] == f"API key {key['id']} was revoked"
    )
    missing = (await call(http, admin, REVOKE, id="nope"))["data"]["r"]
    assert missing == {"__typename": "NotFoundError", "message": "no API key with id 'nope'"}


async def test_create_api_key_refuses_bad_input(http: httpx.AsyncClient, db: Any) -> None:
    _, admin = await KeyService(db).create("root", [Scope.ADMIN])
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    for bad, field in (
        ({"name": " ", "scopes": ["READ"]}, "input.name"),
        ({"name": "x", "scopes": []}, "input.scopes"),
        ({"name": "x", "scopes": ["READ"], "agents": []}, "input.agents"),
        ({"name": "x", "scopes": ["READ"], "expiresAt": past}, "input.expiresAt"),
    ):
        answer = (await call(http, admin, CREATE, i=bad))["data"]["r"]
        assert answer["__typename"] == "ValidationError" and answer["field"] == field, answer
    assert await db.api_keys.count_documents({}) == 1


async def test_a_revoked_key_ends_its_open_subscriptions(settings: Settings, db: Any) -> None:
    keys = KeyService(db)
    key, secret = await keys.create("watcher", [Scope.READ])
    _, other_secret = await keys.create("other", [Scope.READ])
    env = {
        "MONGODB_URI": settings.mongodb_uri or "",
        "MONGODB_DB": settings.mongodb_db,
        "AUTH_MODE": "keys",
        "AUTH_RECHECK_SECONDS": "0.2",
    }
    subscription = 'subscription { taskEvents(after: "HEAD") { type } }'
    with serve(env) as server:
        watched = await GraphQLWebSocket.open(server.url, init=False)
        await watched.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {secret}"}})
        assert (await watched.receive())["type"] == "connection_ack"
        await watched.subscribe(subscription)
        bystander = await GraphQLWebSocket.open(server.url, init=False)
        await bystander.send({"type": "connection_init", "payload": {"apiKey": other_secret}})
        assert (await bystander.receive())["type"] == "connection_ack"
        await bystander.subscribe(subscription)

        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            stream = http.stream(
                "POST",
                "/graphql",
                json={"query": subscription},
                headers={"Authorization": f"Bearer {secret}", "Accept": "text/event-stream"},
            )
            async with stream as response:
                assert response.status_code == 200
                await asyncio.sleep(0.5)  # both live, past a few checks of a valid key
                await keys.revoke(key.id)
                # The SSE stream ends by itself (the loop below returns), within a few checks.
                async with asyncio.timeout(10):
                    async for _ in response.aiter_lines():
                        pass

        with pytest.raises(ConnectionClosed) as closed:
            await watched.receive(wait=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        assert closed.value.rcvd.reason == "API key revoked or expired"
        assert await bystander.nothing_within(0.5)  # the other key's socket stays open
        await bystander.close()
