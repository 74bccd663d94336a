"""CORS: pages on the configured origins may call the API from a browser, over real HTTP against server
processes; with no origin configured nothing changes (no `Access-Control-*` header anywhere)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydantic import ValidationError
from websockets.exceptions import InvalidStatus

from app.settings import Settings
from tests.support.servers import ServerGroup, ServerProcess
from tests.support.wsclient import GraphQLWebSocket

FRONTEND = "http://localhost:5173"
OTHER_ALLOWED = "https://app.example.com"
STRANGER = "https://evil.example.net"


@pytest.fixture(scope="module")
def servers(module_servers: ServerGroup) -> dict[str, ServerProcess]:
    """Three servers on one database: two origins with credentials, any origin, and no CORS setting."""
    # As an operator would write it: comma-separated, spaces, a trailing slash.
    listed = module_servers.start(
        "cors", {"CORS_ALLOW_ORIGINS": f"{FRONTEND}, {OTHER_ALLOWED}/", "CORS_ALLOW_CREDENTIALS": "true"}
    )
    anyone = module_servers.start("cors", {"CORS_ALLOW_ORIGINS": '["*"]'}, db_name=listed.db_name)
    plain = module_servers.start("cors", db_name=listed.db_name)
    return {"listed": listed, "any": anyone, "plain": plain}


def preflight(server: ServerProcess, path: str, origin: str, method: str, headers: str) -> httpx.Response:
    return httpx.options(
        server.url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


def test_preflight_of_graphql_from_an_allowed_origin(servers: dict[str, ServerProcess]) -> None:
    for origin in (FRONTEND, OTHER_ALLOWED):
        response = preflight(servers["listed"], "/graphql", origin, "POST", "content-type, authorization")
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["access-control-allow-credentials"] == "true"
        assert {"post", "get"} <= listed(response.headers["access-control-allow-methods"])
        assert {"content-type", "authorization"} <= listed(response.headers["access-control-allow-headers"])


def test_preflight_of_a_rest_route_allows_its_headers(servers: dict[str, ServerProcess]) -> None:
    response = preflight(
        servers["listed"],
        "/agent-tasks/anything",
        FRONTEND,
        "PATCH",
        "if-match, idempotency-key, content-type",
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert {"patch", "delete"} <= listed(response.headers["access-control-allow-methods"])
    assert {"if-match", "idempotency-key", "content-type", "authorization"} <= listed(
        response.headers["access-control-allow-headers"]
    )


def test_requests_from_an_allowed_origin_may_read_the_answer_and_its_headers(
    servers: dict[str, ServerProcess],
) -> None:
    server = servers["listed"]
    task_id = f"cors_{uuid.uuid4().hex[:8]}"
    created = httpx.post(
        f"{server.url}/agent-tasks",
        json={"task_id": task_id, "agent_name": "SnippetCraftAgent"},
        headers={"Origin": FRONTEND},
    )
    assert created.status_code == 201, created.text
    assert created.headers["access-control-allow-origin"] == FRONTEND
    assert created.headers["access-control-allow-credentials"] == "true"
    assert listed(created.headers["access-control-expose-headers"]) == {"etag", "location"}
    assert created.headers["location"] == f"/agent-tasks/{task_id}"
    assert "origin" in listed(created.headers["vary"])

    read = httpx.get(f"{server.url}/agent-tasks/{task_id}", headers={"Origin": OTHER_ALLOWED})
    assert read.headers["access-control-allow-origin"] == OTHER_ALLOWED and read.headers["etag"] == '"1"'

    answer = httpx.post(
        f"{server.url}/graphql",
        json={"query": f'{{ agentTask(id: "{task_id}") {{ agentName }} }}'},
        headers={"Origin": FRONTEND},
    )
    assert (
        answer.status_code == 200 and answer.json()["data"]["agentTask"]["agentName"] == "SnippetCraftAgent"
    )
    assert answer.headers["access-control-allow-origin"] == FRONTEND
    # A bad credential is refused (401) even in open mode, and the page may read why.
    refused = httpx.post(
        f"{server.url}/graphql",
        json={"query": "{ __typename }"},
        headers={"Origin": FRONTEND, "Authorization": "Bearer not-a-key"},
    )
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == FRONTEND
    assert {"accept", "origin"} <= listed(answer.headers["vary"])


def test_another_origin_gets_no_allow_origin(servers: dict[str, ServerProcess]) -> None:
    server = servers["listed"]
    refused = preflight(server, "/graphql", STRANGER, "POST", "content-type")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # A simple request is answered (the browser enforces CORS), but without the header that would let
    # the page read the answer (Starlette still sends its fixed allow-credentials and expose headers).
    answer = httpx.post(
        f"{server.url}/graphql", json={"query": "{ __typename }"}, headers={"Origin": STRANGER}
    )
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_any_origin_without_credentials(servers: dict[str, ServerProcess]) -> None:
    server = servers["any"]
    response = preflight(server, "/graphql", STRANGER, "POST", "content-type")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers  # the default: false
    answer = httpx.post(
        f"{server.url}/graphql", json={"query": "{ __typename }"}, headers={"Origin": STRANGER}
    )
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer.headers


def test_without_the_setting_nothing_changes(servers: dict[str, ServerProcess]) -> None:
    server = servers["plain"]
    options = preflight(server, "/graphql", FRONTEND, "POST", "content-type")
    assert options.status_code == 405  # no CORS: OPTIONS is simply not a method of /graphql
    for response in (
        options,
        httpx.post(f"{server.url}/graphql", json={"query": "{ __typename }"}, headers={"Origin": FRONTEND}),
        httpx.get(f"{server.url}/healthz", headers={"Origin": FRONTEND}),
        preflight(server, "/agent-tasks/x", FRONTEND, "PATCH", "if-match"),
    ):
        assert not [h for h in response.headers if h.startswith("access-control-")], response.headers


async def test_websocket_handshakes_follow_the_same_origins(servers: dict[str, ServerProcess]) -> None:
    """CORS does not cover WebSockets: the same list decides which pages may open one."""
    ws = await GraphQLWebSocket.open(servers["listed"].url, origin=FRONTEND)
    await ws.close()
    for server, origin in ((servers["listed"], STRANGER), (servers["plain"], FRONTEND)):
        with pytest.raises(InvalidStatus) as refused:
            await GraphQLWebSocket.open(server.url, origin=origin)
        assert refused.value.response.status_code == 403


def test_origins_setting_accepts_a_list_or_json_and_refuses_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CORS_ALLOW_ORIGINS", " http://localhost:5173 ,HTTPS://App.Example.com:443/, http://[::1]:80"
    )
    # As browsers send them: lower case, no trailing slash, no default port.
    assert Settings(_env_file=None).cors_allow_origins == [
        "http://localhost:5173",
        "https://app.example.com",
        "http://[::1]",
    ]
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", '["http://localhost:5173", "http://127.0.0.1:3000"]')
    assert Settings(_env_file=None).cors_allow_origins == ["http://localhost:5173", "http://127.0.0.1:3000"]
    monkeypatch.delenv("CORS_ALLOW_ORIGINS")
    assert Settings(_env_file=None).cors_allow_origins == []
    assert Settings(_env_file=None).cors_allow_credentials is False
    for bad in ("localhost:5173", "http://localhost:5173/app", "ftp://x", "http://x:99999", "http://u@x"):
        with pytest.raises(ValidationError, match="origins such as http://localhost:5173"):
            Settings(_env_file=None, cors_allow_origins=[bad])


def test_any_origin_with_credentials_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "*")
    monkeypatch.setenv("CORS_ALLOW_CREDENTIALS", "true")
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    assert "CORS_ALLOW_CREDENTIALS=true cannot be combined with CORS_ALLOW_ORIGINS=*" in str(refused.value)
