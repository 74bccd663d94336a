"""Log lines (issue 23 part 4) from a real server process with LOG_FORMAT=json: every line is a JSON object,
one access line per request with its route template, GraphQL operation, status, duration, actor and
request id; and no secret (an API key's secret, a JWT, the password of MONGODB_URI) reaches any line,
whether it came in a header, a query string or a body, accepted or refused."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from typing import Any

import httpx
from pymongo import MongoClient

from app.logs import redact
from tests.support.servers import ROOT, free_port, serve

# A JWT's shape (header.payload.signature, base64url): what a client of an OIDC provider sends. No `_` in
# it, so it also passes as a plausible X-Request-ID (the edge keeps such ids, and logs them).
JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZ2VudC03IiwiYXVkIjoiYWdlbnQtdGFza3MifQ."
    "c2lnbmF0dXJlLXRoYXQtaXMtbm90LXZhbGlk"
)


def credentialed(mongo_uri: str, user: str, password: str) -> str:
    return mongo_uri.replace("mongodb://", f"mongodb://{user}:{password}@", 1)


def create_key(env: dict[str, str], scopes: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--name", "logs", "--scopes", scopes],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return re.findall(r"atk_\S+", done.stdout)[0]


def json_lines(output: list[str]) -> list[dict[str, Any]]:
    """Every line parsed: the test fails on the first that is not a JSON object."""
    parsed = []
    for line in output:
        record = json.loads(line)
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def test_redact_masks_each_kind_of_secret() -> None:
    key = "atk_0123456789ab_" + secrets.token_urlsafe(32)
    text = f"Bearer {key} {JWT} mongodb://u:pa%24%24@h:1/ atk_{key[4:]} key={key}"
    masked = redact(text)
    assert key not in masked and JWT not in masked and "pa%24%24" not in masked, masked
    assert "atk_0123456789ab_[REDACTED]" in masked  # the public key id stays: which key it was
    assert redact("GET /meta-tasks/{id} 200 1.2 ms") == "GET /meta-tasks/{id} 200 1.2 ms"


def test_json_access_lines_and_no_secret_in_any_line(mongo_uri: str) -> None:
    user, password = "logs_" + uuid.uuid4().hex[:8], "pw-" + secrets.token_hex(16)
    db_name = f"logs_{uuid.uuid4().hex[:12]}"
    with MongoClient(mongo_uri) as mongo:
        mongo.admin.command("createUser", user, pwd=password, roles=["root"])
        try:
            uri = credentialed(mongo_uri, user, password)
            env = {"MONGODB_URI": uri, "MONGODB_DB": db_name, "AUTH_MODE": "keys"}
            key = create_key(env, "read,write")
            key_id = key.split("_")[1]
            forged = f"atk_{key_id}_{secrets.token_urlsafe(32)}"  # a real id, a wrong secret
            secret_parts = [key.split("_", 2)[2], forged.split("_", 2)[2], JWT, password]
            with serve({**env, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}) as server:
                _send_traffic(server.url, key, forged)
                code = server.stop()
            assert code == 0, "".join(server.output)
        finally:
            mongo.admin.command("dropUser", user)
            mongo.drop_database(db_name)

    # A start-up that fails on the credentialed URI says so without the password either.
    closed = free_port()
    failed = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")},
            "MONGODB_URI": f"mongodb://{user}:{password}@127.0.0.1:{closed}/",
            "MONGODB_STARTUP_TIMEOUT_SECONDS": "1",
            "PORT": "0",
            "LOG_FORMAT": "json",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert password not in failed.stdout + failed.stderr

    records = json_lines(server.output)
    everything = "".join(server.output)
    for secret in secret_parts:
        assert secret not in everything, [line for line in server.output if secret in line]
    assert "api_key=" not in everything and "token=" not in everything  # no raw query string
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["time"]), record
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's lines, in the same format
    assert any(r["logger"] == "agent_tasks.startup" and "GraphiQL at" in r["message"] for r in records)

    access = [r for r in records if r["logger"] == "agent_tasks.access"]
    assert not any(r["logger"] == "uvicorn.access" for r in records)
    by_id = {r.get("request_id"): r for r in access}
    for record in access:
        assert {"method", "route", "status", "duration_ms", "actor", "request_id"} <= record.keys(), record
        assert record["duration_ms"] >= 0
    tree = by_id["rid-tree"]
    assert (tree["method"], tree["route"], tree["status"]) == ("POST", "/graphql", 200)
    assert (tree["graphql_operation"], tree["graphql_type"]) == ("WorkflowTree", "query")
    assert tree["actor"] == f"key:{key_id}"
    rest = by_id["rid-rest"]
    assert (rest["route"], rest["status"], rest["actor"]) == ("/meta-tasks/{id}", 404, f"key:{key_id}")
    assert "graphql_operation" not in rest or rest["graphql_operation"] is None
    refused = by_id["rid-forged"]
    assert (refused["status"], refused["level"]) == (401, "INFO")
    assert refused["refusal"].startswith("unauthenticated"), refused
    mutation = by_id["rid-mutation"]
    assert (mutation["graphql_operation"], mutation["graphql_type"]) == ("MakeOne", "mutation")
    # The X-Request-ID a client sent is logged, and a JWT sent as one is masked like any other.
    assert "[REDACTED JWT]" in by_id
    # Each request is one access line: as many as were sent (the health checks of `serve` included).
    assert len([r for r in access if r.get("request_id") in SENT_IDS]) == len(SENT_IDS)


SENT_IDS = ("rid-tree", "rid-rest", "rid-forged", "rid-malformed", "rid-query", "rid-body", "rid-mutation")


def _send_traffic(url: str, key: str, forged: str) -> None:
    good = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url) as client:
        tree = client.post(
            "/graphql",
            json={
                "query": "query WorkflowTree { metaWorkflowTasks(first: 1) { totalCount } }",
                "operationName": "WorkflowTree",
            },
            headers={**good, "X-Request-ID": "rid-tree"},
        )
        assert tree.status_code == 200, tree.text
        assert tree.headers["x-request-id"] == "rid-tree"
        rest = client.get(
            "/meta-tasks/no-such-task",
            params={"api_key": key, "token": JWT},
            headers={**good, "X-Request-ID": "rid-rest"},
        )
        assert rest.status_code == 404, rest.text
        # Refused credentials: a real key id with a wrong secret, a malformed key, a JWT the server
        # cannot verify (none configured), each one line.
        for rid, token in (("rid-forged", forged), ("rid-malformed", "atk_" + key[-20:]), (JWT, JWT)):
            refused = client.get(
                "/meta-tasks", headers={"Authorization": f"Bearer {token}", "X-Request-ID": rid}
            )
            assert refused.status_code == 401, refused.text
        # Secrets in a query string and in bodies, where the server's answer quotes what it was sent.
        client.get(
            "/graphql",
            params={"query": f'{{ agentTasks(first: "{key}") {{ totalCount }} }}', "token": JWT},
            headers={**good, "X-Request-ID": "rid-query"},
        )
        client.post(
            "/graphql",
            json={"query": f'query {{ agentTasks(first: "{JWT}") {{ totalCount }} }}', "operationName": key},
            headers={**good, "X-Request-ID": "rid-body"},
        )
        made = client.post(
            "/graphql",
            json={
                "query": 'mutation MakeOne($p: JSON) { createAgentTask(input: {id: "t-logs", agentName:'
                ' "a", inputParameters: $p}) { __typename } }',
                "operationName": "MakeOne",
                "variables": {"p": {"api_key": key, "jwt": JWT}},
            },
            headers={**good, "X-Request-ID": "rid-mutation"},
        )
        assert made.status_code == 200, made.text
        client.post("/meta-tasks", json={"id": key, "name": JWT}, headers=good)
