"""Every refusal at the edge says what was wrong, with a code, and logs no traceback (issue 18, findings 4
and 5): a mutation over GET as a stream, a batch, view refusals, over-long URLs, over-deep REST bodies. Over
real HTTP against a real `agent-tasks serve` (the URL limit lives in its HTTP protocol)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.support.servers import ServerGroup, ServerProcess

GRJ = "application/graphql-response+json"


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    return module_servers.start("refusals", {"LOG_LEVEL": "info"})


def no_traceback(server: ServerProcess) -> None:
    output = "".join(server.output)
    assert "Traceback" not in output and "Unexpected error" not in output, output[-3000:]


def test_a_mutation_over_get_as_a_stream_is_405(server: ServerProcess) -> None:
    for accept in ("text/event-stream", "multipart/mixed;subscriptionSpec=1.0, application/json"):
        response = httpx.get(
            f"{server.url}/graphql", params={"query": "mutation { __typename }"}, headers={"Accept": accept}
        )
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "POST"
        (error,) = response.json()["errors"]
        assert error["extensions"] == {"code": "METHOD_NOT_ALLOWED"}
        assert "POST" in error["message"]
    # A query over GET as a stream still streams.
    query = httpx.get(
        f"{server.url}/graphql", params={"query": "{ __typename }"}, headers={"Accept": "text/event-stream"}
    )
    assert query.status_code == 200 and '{"data":{"__typename":"Query"}}' in query.text
    no_traceback(server)


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        ({"content": b'[{"query": "{ __typename }"}]'}, 400, "BATCHING_NOT_ENABLED"),
        ({"content": b"{not json"}, 400, "BAD_JSON"),
        (
            {"content": b'{"query": "{ __typename }", "variables": ' + b"[" * 100 + b"]" * 100 + b"}"},
            400,
            "JSON_TOO_DEEP",
        ),
        (
            {"content": b'{"query": "{ __typename }"}', "headers": {"Content-Type": "text/plain"}},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            {"content": b'{"query": "{ __typename }"}', "headers": {"Accept": "text/csv"}},
            406,
            "NOT_ACCEPTABLE",
        ),
        (
            {"content": b'{"query": "' + b" " * (1024 * 1024 + 10) + b'{ __typename }"}'},
            413,
            "BODY_TOO_LARGE",
        ),
    ],
    ids=["batch", "not json", "deep json", "media type", "accept", "body size"],
)
def test_every_refusal_of_the_view_has_a_code(
    server: ServerProcess, request_kwargs: dict[str, object], status: int, code: str
) -> None:
    headers = {"Content-Type": "application/json", **request_kwargs.pop("headers", {})}  # type: ignore[dict-item]
    response = httpx.post(f"{server.url}/graphql", headers=headers, timeout=60, **request_kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == code and error["message"], error
    no_traceback(server)


def raw_get(server: ServerProcess, target: bytes) -> tuple[bytes, dict[str, object]]:
    """Send a GET with this request target over a plain socket (httpx refuses long URLs itself); the
    status line and the JSON body of the answer."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


@pytest.mark.parametrize("length", [40_000, 70_000, 2_000_000])
def test_an_over_long_url_is_414_with_the_limit(server: ServerProcess, length: int) -> None:
    status, body = raw_get(server, b"/graphql?query=%7B__typename%7D" + b"+" * length)
    assert status == b"HTTP/1.1 414 URI Too Long"
    assert body == {
        "errors": [
            {
                "message": "The URL is longer than MAX_URL_BYTES (32768 bytes): send the request as a POST body.",
                "extensions": {"code": "URI_TOO_LONG", "limit": 32768},
            }
        ]
    }
    status, body = raw_get(server, b"/agent-tasks?filter=" + b"x" * length)
    assert status == b"HTTP/1.1 414 URI Too Long"
    assert body["error"] == {  # type: ignore[comparison-overlap]
        "code": "uri_too_long",
        "message": "The URL is longer than MAX_URL_BYTES (32768 bytes): send the request as a POST body.",
        "limit": 32768,
    }
    # Under the limit, a GET is served.
    status, body = raw_get(server, b"/graphql?query=%7B__typename%7D" + b"+" * 30_000)
    assert status == b"HTTP/1.1 200 OK" and body == {"data": {"__typename": "Query"}}
    no_traceback(server)


@pytest.mark.parametrize("depth", [100, 10_000])
def test_an_over_deep_rest_body_names_the_limit(server: ServerProcess, depth: int) -> None:
    body = '{"agent_name": "a", "input_parameters": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    response = httpx.post(
        f"{server.url}/agent-tasks", content=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_json" and "recursion" not in error["message"], error
    assert "64" in error["message"] or "deep" in error["message"], error
    no_traceback(server)


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ('""', "agentName must not be empty (argument `agentName`)."),
        ('"   "', "agentName must not be empty (argument `agentName`)."),
        ('"' + "x" * 300 + '"', "agentName must be at most"),
    ],
)
def test_a_bad_claim_queue_agent_is_a_user_error(server: ServerProcess, agent: str, message: str) -> None:
    """The GraphQL fuzz found `claimQueue(agentName: "")` answering "Unexpected error." (a service refusal in
    a query, which has no result union): it is a BAD_USER_INPUT error naming the argument."""
    body = {"query": f"{{ claimQueue(agentName: {agent}) {{ agentName }} }}"}
    response = httpx.post(f"{server.url}/graphql", json=body)
    assert response.status_code == 200, response.text
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert error["message"].startswith(message), error
    no_traceback(server)
