"""API keys (issue 13): the key service against a real mongod, and the authentication middleware over HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.keys import KeyService
from app.domain import Scope
from app.principal import AuthenticationError
from app.server import create_app
from app.settings import Settings


async def test_secret_is_returned_once_and_only_its_hash_is_stored(db: Any) -> None:
    keys = KeyService(db)
    key, secret = await keys.create("ci", [Scope.READ, Scope.WRITE], agents=["writer"])
    assert secret.startswith(f"atk_{key.id}_")
    stored = await db.api_keys.find_one({"_id": key.id})
    assert stored["hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(stored)
    assert stored["scopes"] == ["read", "write"] and stored["agents"] == ["writer"]
    principal = await keys.authenticate(secret)
    assert (principal.kind, principal.id, principal.name) == ("key", key.id, "ci")
    assert principal.scopes == {Scope.READ, Scope.WRITE} and principal.agents == {"writer"}
    listed = await keys.list()
    assert [k.id for k in listed] == [key.id]
    assert "hash" not in str(listed[0])


async def test_last_used_at_is_updated_at_most_once_a_minute(db: Any) -> None:
    keys = KeyService(db)
    key, secret = await keys.create("ci", [Scope.READ])
    await keys.authenticate(secret)
    first = (await db.api_keys.find_one({"_id": key.id}))["last_used_at"]
    assert first is not None
    await keys.authenticate(secret)
    assert (await db.api_keys.find_one({"_id": key.id}))["last_used_at"] == first
    old = first - dt.timedelta(minutes=2)
    await db.api_keys.update_one({"_id": key.id}, {"$set": {"last_used_at": old}})
    await keys.authenticate(secret)
    assert (await db.api_keys.find_one({"_id": key.id}))["last_used_at"] > old


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("atk_nope", "malformed API key (expected `atk_<id>_<secret>`)"),
        ("atk_0123456789ab_wrong", "unknown API key"),
    ],
)
async def test_unknown_and_malformed_secrets_are_refused(db: Any, secret: str, message: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        await KeyService(db).authenticate(secret)
    assert info.value.message == message


async def test_revoked_and_expired_keys_are_refused(db: Any) -> None:
    keys = KeyService(db)
    revoked, revoked_secret = await keys.create("old", [Scope.READ])
    assert (await keys.revoke(revoked.id)).revoked_at is not None  # type: ignore[union-attr]
    assert await keys.revoke("missing") is None
    with pytest.raises(AuthenticationError, match="was revoked"):
        await keys.authenticate(revoked_secret)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    _, expired_secret = await keys.create("brief", [Scope.READ], expires_at=past)
    with pytest.raises(AuthenticationError, match="has expired"):
        await keys.authenticate(expired_secret)


@pytest.mark.parametrize(
    ("host", "mode", "is_open"),
    [
        ("127.0.0.1", "auto", True),
        ("::1", "auto", True),
        ("localhost", "auto", True),
        ("0.0.0.0", "auto", False),
        ("192.168.1.20", "auto", False),
        ("127.0.0.1", "keys", False),
        ("0.0.0.0", "open", True),
    ],
)
def test_auth_mode_auto_is_open_only_on_loopback(host: str, mode: str, is_open: bool) -> None:
    settings = Settings(_env_file=None, host=host, auth_mode=mode)  # type: ignore[arg-type]
    assert settings.auth_open is is_open


@pytest.fixture
async def keys_client(settings: Settings, db: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"auth_mode": "keys"}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        yield http


QUERY = {"query": "{ __typename }"}


async def test_bad_credentials_are_401_in_the_shape_of_the_route(client: httpx.AsyncClient) -> None:
    bearer = {"Authorization": "Bearer atk_0123456789ab_wrong"}
    rest = await client.get("/meta-tasks/x", headers=bearer)
    assert rest.status_code == 401 and rest.headers["www-authenticate"] == "Bearer"
    assert rest.json() == {"error": {"code": "unauthenticated", "message": "unknown API key"}}
    graphql = await client.post("/graphql", json=QUERY, headers=bearer)
    assert graphql.status_code == 401
    assert graphql.json() == {
        "errors": [{"message": "unknown API key", "extensions": {"code": "UNAUTHENTICATED"}}]
    }
    jwt = await client.post("/graphql", json=QUERY, headers={"Authorization": "Bearer eyJhbGciOi"})
    assert jwt.json()["errors"][0]["message"] == "not an API key and no JWT issuer is configured"


async def test_open_mode_lets_anonymous_requests_through(client: httpx.AsyncClient) -> None:
    assert (await client.post("/graphql", json=QUERY)).json() == {"data": {"__typename": "Query"}}


async def test_a_valid_key_is_accepted_in_keys_mode(keys_client: httpx.AsyncClient, db: Any) -> None:
    key, secret = await KeyService(db).create("ci", [Scope.READ])
    answer = await keys_client.post("/graphql", json=QUERY, headers={"Authorization": f"Bearer {secret}"})
    assert answer.json() == {"data": {"__typename": "Query"}}
    assert (await db.api_keys.find_one({"_id": key.id}))["last_used_at"] is not None


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", *args],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_keys_cli_creates_lists_and_revokes(settings: Settings, db: Any) -> None:
    created = _cli(settings, "create", "--name", "ci", "--scopes", "read,write", "--agent", "writer")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.split("secret (shown once, keep it): ")[1].split()[0]
    stored = await db.api_keys.find_one({})
    assert stored["hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert stored["name"] == "ci" and stored["scopes"] == ["read", "write"] and stored["agents"] == ["writer"]
    listed = _cli(settings, "list")
    assert (
        listed.returncode == 0 and f"{stored['_id']}\tci\tread,write\tagents=writer\tactive" in listed.stdout
    )
    assert secret not in listed.stdout
    revoked = _cli(settings, "revoke", stored["_id"])
    assert revoked.returncode == 0, revoked.stderr
    assert (await db.api_keys.find_one({}))["revoked_at"] is not None
    with pytest.raises(AuthenticationError, match="was revoked"):
        await KeyService(db).authenticate(secret)
    assert _cli(settings, "revoke", "nope").returncode != 0


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("auto", "open: anyone who can reach 127.0.0.1:"),
        ("keys", "API keys required (`agent-tasks keys create`)"),
    ],
)
def test_the_start_up_line_says_who_may_call(settings: Settings, mode: str, said: str) -> None:
    from tests.support.servers import serve

    env = {"MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db, "AUTH_MODE": mode}
    with serve(env) as server:
        assert any(said in line for line in server.output), server.output
