"""The HTTP edge: body sizes, malformed JSON, REST's media types (CSRF), trusted hosts, request ids, and
one log line without a traceback for every refused request (issue 11, findings 3, 4, 6 and 7)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
import websockets.asyncio.client
import websockets.exceptions
from asgi_correlation_id.log_filters import CorrelationIdFilter
from websockets.typing import Subprotocol

from app.rest.openapi import openapi_document
from app.settings import Settings
from tests.support.rest import check_declared
from tests.support.servers import ServerProcess

MIB = 1024 * 1024


class Body:
    """A request body streamed in 64 KiB chunks, counting what the server pulled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b" " * 65536
        while self.sent < self.total:
            self.sent += len(chunk)
            yield chunk


@pytest.mark.parametrize("path", ["/graphql", "/meta-tasks", "/meta-tasks/query"])
async def test_a_300_mb_body_is_refused_413_without_being_read(client: httpx.AsyncClient, path: str) -> None:
    body = Body(300 * MIB)
    declared = await client.post(path, content=body, headers={"Content-Length": str(body.total)})
    assert declared.status_code == 413, declared.text
    assert "MAX_BODY_BYTES (1048576 bytes)" in declared.text
    assert body.sent <= 65536  # refused from Content-Length: at most the first chunk was pulled

    chunked = Body(300 * MIB)  # no Content-Length: counted as it streams, stopped past the limit
    response = await client.post(path, content=chunked)
    assert response.status_code == 413, response.text
    assert chunked.sent <= MIB + 65536


async def test_the_body_limit_is_the_one_setting(settings: Settings, db: Any) -> None:
    from app.server import create_app

    app = create_app(settings.model_copy(update={"max_body_bytes": 2048, "max_url_bytes": 2048}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        big = {"query": "{ __typename }", "variables": {"x": "a" * 3000}}
        assert (await http.post("/graphql", json=big)).status_code == 413
        rest = await http.post("/meta-tasks/query", json={"meta_workflow_id": "a" * 3000})
        assert rest.status_code == 413 and rest.json()["error"]["code"] == "payload_too_large"
        long_get = await http.get(
            "/graphql", params={"query": "{ __typename }", "variables": "{}" + " " * 3000}
        )
        assert long_get.status_code == 414
        assert long_get.json()["errors"][0]["extensions"] == {"code": "URI_TOO_LONG"}
        assert "MAX_URL_BYTES (2048 bytes)" in long_get.json()["errors"][0]["message"]


def nested(depth: int) -> bytes:
    return b'{"query": "{ __typename }", "variables": {"x": ' + b"[" * depth + b"]" * depth + b"}}"


MALFORMED: dict[str, bytes] = {
    "a string": b'"hello"',
    "a number": b"42",
    "null": b"null",
    "true": b"true",
    "invalid UTF-8": b'{"query": "{ __typename }", "x": "\xff\xfe"}',
    "100,000 deep": nested(100_000),
    "70 deep": nested(70),
}


@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_graphql_bodies_are_400s(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/graphql", content=MALFORMED[name])
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert error["message"] and "Unexpected" not in error["message"]
    if "deep" in name:
        assert "MAX_JSON_DEPTH (64 levels)" in error["message"]


async def test_an_array_body_is_refused_by_graphql_and_rest(client: httpx.AsyncClient) -> None:
    assert (await client.post("/graphql", content=b"[]")).status_code == 400
    rest = await client.post("/meta-tasks", content=b'["a"]')
    assert rest.status_code in (400, 422), rest.text


async def test_malformed_get_variables_are_400s(client: httpx.AsyncClient) -> None:
    for variables in ("[" * 5000 + "]" * 5000, "{not json"):
        response = await client.get("/graphql", params={"query": "{ __typename }", "variables": variables})
        assert response.status_code == 400, response.text


@pytest.mark.parametrize("route", ["/meta-tasks", "/meta-tasks/query", "/agent-tasks", "PATCH /sub-tasks/x"])
@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_rest_bodies_are_4xx(client: httpx.AsyncClient, route: str, name: str) -> None:
    method, _, path = route.rpartition(" ")
    response = await client.request(method or "POST", path, content=MALFORMED[name])
    if route.endswith("/query") and name == "null":
        assert response.status_code == 200  # a null filter is no filter
        return
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] in (
        "bad_json",
        "bad_filter",
        "invalid",
        "unknown_field",
        "not_found",
    )


async def test_rest_takes_bodies_only_as_json(client: httpx.AsyncClient, db: Any) -> None:
    """A page on another origin can POST `text/plain` without a CORS preflight: refused 415."""
    doc = {"task_id": "m1", "meta_workflow_id": "w1"}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x", ""):
        created = await client.post(
            "/meta-tasks", content=json.dumps(doc), headers={"Content-Type": content_type}
        )
        assert created.status_code == 415, created.text
        error = created.json()["error"]
        assert error["code"] == "unsupported_media_type" and error["field"] == "Content-Type"
    assert await db.meta_workflow_tasks.count_documents({}) == 0

    ok = await client.post(
        "/meta-tasks", content=json.dumps(doc), headers={"Content-Type": "application/vnd.x+json"}
    )
    assert ok.status_code == 201, ok.text
    # A body-less POST too: finalize is one-way, so a cross-site form must not reach it.
    refused = await client.post("/meta-tasks/m1/finalize", headers={"Content-Type": "text/plain"})
    assert refused.status_code == 415
    assert (await db.meta_workflow_tasks.find_one({"_id": "m1"}))["is_finalized"] is False
    patched = await client.patch("/meta-tasks/m1", content=b"{}", headers={"Content-Type": "text/plain"})
    assert patched.status_code == 415


@pytest.mark.parametrize("path", ["/graphql", "/meta-tasks/x", "/healthz", "/openapi.json"])
async def test_an_untrusted_host_is_refused_400_json(
    client: httpx.AsyncClient, settings: Settings, path: str
) -> None:
    response = await client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 400
    body = response.json()
    message = body["errors"][0]["message"] if path == "/graphql" else body["error"]["message"]
    assert "'evil.example'" in message and "TRUSTED_HOSTS" in message
    if path != "/graphql":
        assert body["error"]["code"] == "untrusted_host"
        if path.startswith("/meta-tasks"):  # the REST routes declare it (OpenAPI)
            check_declared(openapi_document(settings), "GET", path, 400, response.content)
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert (await client.get("/openapi.json", headers={"Host": host})).status_code == 200


def test_trusted_hosts_setting() -> None:
    assert Settings(_env_file=None).allowed_hosts == ["localhost", "127.0.0.1", "[::1]"]
    public = Settings(_env_file=None, host="10.0.0.5", trusted_hosts="api.example.com,*.example.org")
    assert public.allowed_hosts == ["api.example.com", "*.example.org", "10.0.0.5"]
    assert Settings(_env_file=None, host="0.0.0.0", trusted_hosts='["::1"]').allowed_hosts == ["[::1]"]
    with pytest.raises(ValueError, match="TRUSTED_HOSTS"):
        Settings(_env_file=None, trusted_hosts="a.*.com")


async def test_request_ids_are_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/openapi.json", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = (await client.get("/openapi.json")).headers["x-request-id"]
    assert len(generated) == 32
    hostile = await client.get("/openapi.json", headers={"X-Request-ID": "a b\tc"})
    assert hostile.headers["x-request-id"] != "a b\tc"


async def test_refusals_log_one_line_without_a_traceback(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(CorrelationIdFilter(default_value="-"))  # as app/logs.py's handler
    refusals = [
        client.post("/behavior-tasks/query", params={"after": "forged"}, headers={"X-Request-ID": "rid-1"}),
        client.post("/behavior-tasks/query", json={"$where": "1"}, headers={"X-Request-ID": "rid-2"}),
        client.post("/meta-tasks", content=b"{bad", headers={"X-Request-ID": "rid-3"}),
        client.post("/graphql", content=b"{bad", headers={"X-Request-ID": "rid-4"}),
        client.post("/graphql", json={"query": '{ agentTasks(after: "forged") { totalCount } }'}),
        client.post("/graphql", json={"query": "{ nope }"}),
    ]
    for request in refusals:
        response = await request
        assert response.status_code in (200, 400), response.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("agent_tasks")]
    # One access line per request, with its route template, status, request id and the refusal's reason.
    by_route = [r for r in caplog.records if r.name == "agent_tasks.access"]
    assert len(by_route) == len(refusals), [r.getMessage() for r in by_route]
    for record, (route, status, code, rid) in zip(
        by_route,
        (
            ("/behavior-tasks/query", 400, "bad_cursor", "rid-1"),
            ("/behavior-tasks/query", 400, "bad_filter", "rid-2"),
            ("/meta-tasks", 400, "bad_json", "rid-3"),
            ("/graphql", 400, "", "rid-4"),
            ("/graphql", 200, "", None),
            ("/graphql", 200, "", None),
        ),
        strict=True,
    ):
        fields = record.__dict__
        assert (fields["route"], fields["status"], fields["method"]) == (route, status, "POST"), fields
        assert code in fields.get("refusal", ""), fields
        assert rid is None or fields["correlation_id"] == rid, fields
    assert any("refused GraphQL request: BAD_CURSOR" in line for line in lines), lines
    assert any("refused GraphQL request: GRAPHQL_VALIDATION_FAILED" in line for line in lines), lines


def deep_literal(depth: int) -> str:
    return "{a: " * depth + "1" + "}" * depth


CREATE = """mutation($p: JSON) { createAgentTask(input: {id: "deep", agentName: "a", inputParameters: $p}) {
  __typename ... on Error { message } } }"""


@pytest.mark.parametrize("depth", [31, 50, 99, 990, 5000])
async def test_deeply_nested_input_parameters_are_refused_cleanly(
    client: httpx.AsyncClient, db: Any, depth: int
) -> None:
    value = '{"a": ' * depth + "1" + "}" * depth  # json.dumps would recurse too deep itself
    as_variable = await client.post(
        "/graphql", content=json.dumps({"query": CREATE, "variables": {"p": "P"}}).replace('"P"', value)
    )
    literal = CREATE.replace("($p: JSON)", "").replace("$p", deep_literal(depth))
    inline = await client.post("/graphql", json={"query": literal})
    for response in (as_variable, inline):
        assert response.status_code in (200, 400), response.text
        assert "Unexpected error" not in response.text, response.text
        if depth > 32:
            assert any(w in response.text for w in ("32", "MAX_JSON_DEPTH (64", "nested too deeply")), (
                response.text
            )
    if depth > 32:
        assert await db.agent_task_states.count_documents({}) == 0


async def test_a_websocket_handshake_from_an_untrusted_host_is_refused(
    plain_server: ServerProcess,
) -> None:
    """Over a real server (uvicorn): a rebinding page's WebSocket never reaches the subscriptions."""
    url = plain_server.url.replace("http", "ws", 1) + "/graphql"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.asyncio.client.connect(
            url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            additional_headers={"Host": "evil.example"},
        ):
            pass
    assert refused.value.response.status_code == 403
    async with websockets.asyncio.client.connect(
        url, subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        assert ws.subprotocol == "graphql-transport-ws"
