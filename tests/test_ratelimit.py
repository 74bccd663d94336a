"""Rate limits (issue 13 part 7): per key and scope, per address for anonymous callers, one budget for
every server process on the database (counted in MongoDB), refused with 429 / RATE_LIMITED and nothing
written."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.auth.keys import KeyService
from app.domain import Scope
from app.settings import Settings
from tests.support.servers import serve

CREATE = "mutation($id: ID) { r: createAgentTask(input: {id: $id}) { __typename } }"


def env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "MONGODB_URI": settings.mongodb_uri or "",
        "MONGODB_DB": settings.mongodb_db,
        "AUTH_MODE": "keys",
        **extra,
    }


async def test_two_processes_share_one_budget_per_key_and_scope(settings: Settings, db: Any) -> None:
    keys = KeyService(db)
    _, secret = await keys.create("busy", [Scope.READ, Scope.WRITE])
    _, other = await keys.create("calm", [Scope.WRITE])
    with (
        serve(env(settings, RATE_LIMIT_WRITE="5/minute")) as first,
        serve(env(settings, RATE_LIMIT_WRITE="5/minute")) as second,
    ):
        auth = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(timeout=30, headers=auth) as http:
            for n in range(5):  # alternately through each process: one budget
                url = (first if n % 2 else second).url
                answer = await http.post(f"{url}/agent-tasks", json={"task_id": f"t{n}"})
                assert answer.status_code == 201, answer.text
            refused = await http.post(f"{first.url}/agent-tasks", json={"task_id": "t5"})
            assert refused.status_code == 429
            error = refused.json()["error"]
            assert error["code"] == "rate_limited" and error["limit"] == "5 per 1 minute"
            assert 1 <= int(refused.headers["retry-after"]) <= 60 and error["retry_after"] == int(
                refused.headers["retry-after"]
            )
            assert "5 per 1 minute (RATE_LIMIT_WRITE)" in error["message"]
            graphql = await http.post(
                f"{second.url}/graphql", json={"query": CREATE, "variables": {"id": "g"}}
            )
            [gql_error] = graphql.json()["errors"]
            assert (
                gql_error["extensions"]["code"] == "RATE_LIMITED"
                and gql_error["extensions"]["retryAfter"] >= 1
            )
            assert graphql.headers["retry-after"] == str(gql_error["extensions"]["retryAfter"])
            strict = await http.post(
                f"{second.url}/graphql",
                json={"query": CREATE, "variables": {"id": "g"}},
                headers={"Accept": "application/graphql-response+json"},
            )
            assert strict.status_code == 429
            # Reads have their own budget; another key has its own too.
            assert (await http.get(f"{first.url}/agent-tasks/t0")).status_code == 200
            calm = await http.post(
                f"{first.url}/agent-tasks",
                json={"task_id": "c1"},
                headers={"Authorization": f"Bearer {other}"},
            )
            assert calm.status_code == 201
    assert sorted([d["_id"] async for d in db.agent_task_states.find()]) == [
        "c1",
        "t0",
        "t1",
        "t2",
        "t3",
        "t4",
    ]
    counters = [d async for d in db.rate_limit_counters.find()]
    assert any(d["count"] >= 6 for d in counters)  # the shared counter both processes incremented


async def test_anonymous_callers_are_limited_per_address(settings: Settings, db: Any) -> None:
    _, secret = await KeyService(db).create("reader", [Scope.READ])
    with serve(env(settings, AUTH_ANONYMOUS_SCOPES="read", RATE_LIMIT_ANONYMOUS="3/minute")) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for _ in range(3):
                assert (await http.get("/agent-tasks/none")).status_code == 404
            refused = await http.get("/agent-tasks/none")
            assert refused.status_code == 429
            assert "address 127.0.0.1" in refused.json()["error"]["message"]
            assert "(RATE_LIMIT_ANONYMOUS)" in refused.json()["error"]["message"]
            keyed = await http.get("/agent-tasks/none", headers={"Authorization": f"Bearer {secret}"})
            assert keyed.status_code == 404  # a key has its own budget


async def test_open_servers_are_not_limited_by_default(settings: Settings, db: Any) -> None:
    open_env = {**env(settings, RATE_LIMIT_ANONYMOUS="1/minute"), "AUTH_MODE": "open"}
    with serve(open_env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for _ in range(3):
                assert (await http.get("/agent-tasks/none")).status_code == 404
    assert await db.rate_limit_counters.count_documents({}) == 0


def test_a_malformed_limit_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="is not a rate limit such as `600/minute`"):
        Settings(_env_file=None, rate_limit_write="often")


async def test_forwarded_addresses_are_ignored_unless_the_proxy_is_trusted(
    settings: Settings, db: Any
) -> None:
    """Issue 18 finding 8: a client on loopback sending its own `X-Forwarded-For` got a new address (and a
    new anonymous budget) with every request. By default no proxy is trusted; FORWARDED_ALLOW_IPS names
    the proxies whose `X-Forwarded-For` is believed."""
    limited = env(settings, AUTH_ANONYMOUS_SCOPES="read", RATE_LIMIT_ANONYMOUS="3/minute")

    async def reads(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            return [
                await http.get("/agent-tasks/none", headers={"X-Forwarded-For": f"203.0.113.{n}"})
                for n in range(4)
            ]

    with serve(limited) as server:  # by default; uvicorn's own default trusted loopback
        answers = await reads(server.url)
    assert [a.status_code for a in answers] == [404, 404, 404, 429]
    assert "address 127.0.0.1" in answers[-1].json()["error"]["message"]
    await db.rate_limit_counters.delete_many({})

    with serve({**limited, "FORWARDED_ALLOW_IPS": "127.0.0.1"}) as server:  # behind a proxy on loopback
        answers = await reads(server.url)
        assert [a.status_code for a in answers] == [404] * 4  # one budget per forwarded address
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            forwarded = {"X-Forwarded-For": "198.51.100.7"}
            for _ in range(3):
                assert (await http.get("/agent-tasks/none", headers=forwarded)).status_code == 404
            refused = await http.get("/agent-tasks/none", headers=forwarded)
    assert refused.status_code == 429
    assert "address 198.51.100.7" in refused.json()["error"]["message"]


def test_forwarded_allow_ips_holds_addresses_and_networks() -> None:
    proxies = Settings(_env_file=None, forwarded_allow_ips="127.0.0.1, [::1], 10.0.0.0/8").forwarded_allow_ips
    assert proxies == ["127.0.0.1", "::1", "10.0.0.0/8"]
    assert Settings(_env_file=None).forwarded_allow_ips == []
    with pytest.raises(ValidationError, match="FORWARDED_ALLOW_IPS holds proxy addresses"):
        Settings(_env_file=None, forwarded_allow_ips="proxy.internal")


async def test_a_window_counts_every_concurrent_hit_once(db: Any) -> None:
    """The counting is ours (app/store/rate_windows.py): 60 hits at once on a window nobody has opened yet
    (so several upserts race to create it) count 60, and the window goes when it ends (TTL index)."""
    from app.store import rate_windows
    from app.store.indexes import ensure_indexes

    await ensure_indexes(db)
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=1)
    counts = await asyncio.gather(*(rate_windows.hit(db, "write/key/k1/w", end) for _ in range(60)))
    assert sorted(counts) == list(range(1, 61))
    doc = await db.rate_limit_counters.find_one({"_id": "write/key/k1/w"})
    assert doc["count"] == 60 and doc["expire_at"].replace(tzinfo=dt.UTC) == end
    indexes = {i["name"]: i async for i in await db.rate_limit_counters.list_indexes()}
    assert indexes["expire_at_1"]["expireAfterSeconds"] == 0
