"""MongoDB going away and coming back, under a real `agent-tasks serve` process.

The test starts a mongod of its own (never the worker's shared one), points a server at it, stops it and
checks that every kind of request fails clearly (the code says the server gave up selecting a server, its
1 s, rather than waiting out an operation's deadline; how long each took is recorded, not asserted: the
suite runs on busy machines): GraphQL queries and mutations with
`DATABASE_UNAVAILABLE`, REST with 503 and `Retry-After`, `/healthz` still 200, `/readyz` 503 in JSON;
and one WARNING line per failure in the log, no traceback. Then mongod is started again (same port and
data) and the same server answers normally.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.mongo.embedded import EmbeddedMongod
from tests.support.servers import ServerProcess, serve

QUERY = "{ agentTasks(first: 5) { totalCount edges { node { id } } } }"
MUTATION = 'mutation { r: createAgentTask(input: {id: "a1", agentName: "X"}) { __typename } }'


@pytest.fixture
def own_mongod(tmp_path: Path) -> Iterator[EmbeddedMongod]:
    mongod = EmbeddedMongod(tmp_path / "mongod", port=0)
    mongod.start()
    try:
        yield mongod
    finally:
        mongod.stop()


def graphql(server: ServerProcess, query: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = httpx.post(f"{server.url}/graphql", json={"query": query}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json(), time.monotonic() - started


def timed_get(server: ServerProcess, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(f"{server.url}{path}", timeout=60)
    return response, time.monotonic() - started


def test_mongod_down_then_back(own_mongod: EmbeddedMongod, record_property: Any) -> None:
    env = {
        "MONGODB_URI": own_mongod.uri,
        "MONGODB_DB": "unavailable_test",
        "MONGODB_SERVER_SELECTION_TIMEOUT_SECONDS": "1",
        "LOG_LEVEL": "warning",
    }
    with serve(env) as server:
        body, _ = graphql(server, QUERY)
        assert body == {"data": {"agentTasks": {"totalCount": 0, "edges": []}}}
        assert timed_get(server, "/readyz")[0].json() == {"status": "ready"}

        own_mongod.stop()
        logged_before = len(server.output)

        timings: dict[str, float] = {}
        body, seconds = graphql(server, QUERY)
        timings["graphql_query"] = seconds
        [error] = body["errors"]
        assert error["extensions"] == {"code": "DATABASE_UNAVAILABLE"}
        assert error["message"].startswith("The database is unavailable right now; nothing was done.")
        assert body["data"] is None

        body, seconds = graphql(server, MUTATION)
        timings["graphql_mutation"] = seconds
        assert [e["extensions"]["code"] for e in body["errors"]] == ["DATABASE_UNAVAILABLE"]
        assert body["data"] is None

        response, seconds = timed_get(server, "/agent-tasks/a1")
        timings["rest_get"] = seconds
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "database_unavailable"

        response = httpx.post(f"{server.url}/agent-tasks/query", json={"status": "pending"}, timeout=60)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"

        # Liveness never waits for MongoDB; readiness says no, in JSON, within its 0.5 s (and some slack).
        response, seconds = timed_get(server, "/healthz")
        timings["healthz"] = seconds
        assert response.status_code == 200 and response.json()["status"] == "ok"
        response, seconds = timed_get(server, "/readyz")
        timings["readyz"] = seconds
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"

        time.sleep(0.5)  # let the output thread catch up with the log lines
        logged = "".join(server.output[logged_before:])
        assert "Traceback" not in logged, logged
        assert "Unexpected error" not in logged, logged
        assert re.search(r"WARNING agent_tasks\.graphql \[\w+\]: DATABASE_UNAVAILABLE", logged), logged
        assert "GET /agent-tasks/a1: database_unavailable" in logged, logged

        restarted = time.monotonic()
        own_mongod.start()
        deadline = time.monotonic() + 60
        while timed_get(server, "/readyz")[0].status_code != 200:
            assert time.monotonic() < deadline, "not ready again within 60 s of mongod's restart"
            time.sleep(0.2)
        timings["ready_after_restart"] = time.monotonic() - restarted
        print(f"\nseconds to answer with mongod down: {timings}")
        record_property("unavailable_timings", timings)
        body, _ = graphql(server, MUTATION)
        assert body["data"]["r"]["__typename"] == "AgentTaskSuccess", body
        body, _ = graphql(server, QUERY)
        assert body["data"]["agentTasks"]["totalCount"] == 1
