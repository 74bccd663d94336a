"""GraphQL over HTTP (the GraphQL-over-HTTP spec's draft) against a real server process: media types,
status codes and refusals, and graphql-http's own server audit, run with node, finding nothing to warn
about."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServerProcess

HERE = Path(__file__).resolve().parent

# The audit's versions, pinned: a new release may add audits, and the test should change on purpose.
GRAPHQL_HTTP_VERSION = "1.23.1"
GRAPHQL_JS_VERSION = "16.15.0"

# npm's error codes when the registry cannot be reached: the test is skipped, not failed, for those.
_NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENETUNREACH")


@pytest.fixture(scope="session")
def graphql_http(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding graphql-http and graphql-js, installed once into pytest's cache (or a temporary
    directory when the cache is disabled, `-p no:cacheprovider`)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("graphql-http's audit needs node and npm, and they are not installed")
    name = f"graphql-http-{GRAPHQL_HTTP_VERSION}-{GRAPHQL_JS_VERSION}"
    cache = getattr(request.config, "cache", None)
    directory = Path(cache.mkdir(name)) if cache is not None else tmp_path_factory.mktemp(name)
    package = directory / "node_modules" / "graphql-http" / "package.json"
    if package.exists() and json.loads(package.read_text())["version"] == GRAPHQL_HTTP_VERSION:
        return directory
    command = [
        "npm",
        "install",
        "--no-save",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(directory),
        f"graphql-http@{GRAPHQL_HTTP_VERSION}",
        f"graphql@{GRAPHQL_JS_VERSION}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip("npm could not install graphql-http within 180 s (is the npm registry reachable?)")
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if any(code in output for code in _NETWORK_ERRORS):
            pytest.skip(
                f"the npm registry is unreachable, so graphql-http cannot be installed: {output[-500:]}"
            )
        pytest.fail(f"npm install of graphql-http failed: {output[-2000:]}")
    return directory


def test_graphql_http_audit_finds_no_warning_and_no_error(
    plain_server: ServerProcess, graphql_http: Path
) -> None:
    done = subprocess.run(
        ["node", str(HERE / "graphql_http_audit.mjs"), str(graphql_http), f"{plain_server.url}/graphql"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) >= 60  # the whole audit ran
    failed = [r for r in results if r["status"] in ("warn", "error")]
    report = "\n".join(
        f"{r['status']} {r['id']} {r['name']}: {r['reason']} (HTTP {r['httpStatus']} {r['contentType']}: "
        f"{(r['body'] or '')[:200]})"
        for r in failed
    )
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "notice", "warn", "error")}
    assert not failed, f"graphql-http audit {counts} of {len(results)}:\n{report}"


GRJ = "application/graphql-response+json"
JSON = "application/json"


def post(server: ServerProcess, body: object, accept: str | None = GRJ, **headers: str) -> httpx.Response:
    if accept is not None:
        headers["Accept"] = accept
    return httpx.post(f"{server.url}/graphql", json=body, headers=headers, timeout=10)


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),  # no Accept: the legacy default
        ("*/*", JSON),
        ("application/*", JSON),
        (JSON, JSON),
        (GRJ, GRJ),
        (f"{GRJ}, {JSON};q=0.9", GRJ),  # what the spec recommends clients send
        (f"{JSON}, {GRJ}", GRJ),  # both named at the same quality: the spec's own type
        (f"{JSON}, {GRJ};q=0.5", JSON),
        (f"{GRJ};q=0, */*", JSON),  # q=0: not acceptable
        (f"text/html, {GRJ};charset=utf-8", GRJ),
    ],
)
def test_the_answer_is_in_the_media_type_the_client_accepts(
    plain_server: ServerProcess, accept: str | None, expected: str
) -> None:
    response = post(plain_server, {"query": "{ __typename }"}, accept=accept)
    assert response.status_code == 200, response.text
    assert media_type(response) == expected
    assert response.headers["content-type"].endswith("charset=utf-8")
    assert "Accept" in response.headers["vary"]
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": "{"}, "Syntax Error"),  # does not parse
        ({"query": "{ noSuchField }"}, "Cannot query field 'noSuchField'"),  # does not validate
        ({"query": "query($id: ID!) { subTask(id: $id) { id } }", "variables": {}}, "$id"),  # variables
        ({"query": "query($id: ID!) { subTask(id: $id) { id } }", "variables": {"id": []}}, "$id"),
        ({"query": "{ __typename }", "operationName": "Nope"}, "Nope"),
        ({"variables": {}}, "No GraphQL query"),
        ({"query": 1}, "must be a string"),
        ({"query": "{ __typename }", "variables": "x"}, "must be an object"),
        (["not", "batched"], "Batching"),
        ("just a string", "JSON object"),
    ],
)
def test_a_request_that_fails_before_execution_is_a_400_without_data(
    plain_server: ServerProcess, body: object, message: str
) -> None:
    response = post(plain_server, body)
    assert response.status_code == 400, response.text
    assert media_type(response) == GRJ
    answer = response.json()
    assert "data" not in answer and answer["errors"], answer
    assert any(message in error["message"] for error in answer["errors"]), answer


@pytest.mark.parametrize(
    "body",
    [
        {"query": "{"},
        {"query": "{ noSuchField }"},
        {"query": "query($id: ID!) { subTask(id: $id) { id } }", "variables": {}},
    ],
)
def test_under_application_json_graphql_errors_stay_200_with_null_data(
    plain_server: ServerProcess, body: object
) -> None:
    """What clients of application/json have always read (the spec allows it for that media type)."""
    for accept in (None, JSON):
        response = post(plain_server, body, accept=accept)
        assert response.status_code == 200 and media_type(response) == JSON
        assert response.json()["data"] is None and response.json()["errors"]


def test_an_error_during_execution_is_a_200_under_both_media_types(plain_server: ServerProcess) -> None:
    """A field error that nulls the whole `data` still executed: 200, with `data` and the error's path."""
    for accept in (GRJ, JSON):
        response = post(plain_server, {"query": '{ behaviorTasks(after: "nope") { totalCount } }'}, accept)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert "data" in answer and answer["errors"][0]["path"] == ["behaviorTasks"]
        assert answer["errors"][0]["extensions"]["code"] == "BAD_CURSOR"


def test_an_argument_out_of_its_bounds_is_a_request_error(plain_server: ServerProcess) -> None:
    """Page sizes are checked before execution (a mutation must not write and then fail): a 400."""
    response = post(plain_server, {"query": "{ behaviorTasks(first: 100000) { totalCount } }"}, GRJ)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "errors": [
            {
                "message": "`first` must be between 0 and 100, got 100000.",
                "extensions": {
                    "code": "PAGE_SIZE_OUT_OF_RANGE",
                    "argument": "first",
                    "value": 100000,
                    "min": 0,
                    "max": 100,
                },
            }
        ]
    }


def test_a_body_that_is_not_json_is_a_400_graphql_error(plain_server: ServerProcess) -> None:
    for accept in (GRJ, JSON):
        response = httpx.post(
            f"{plain_server.url}/graphql",
            content=b'{"query": ',
            headers={"Content-Type": JSON, "Accept": accept},
        )
        assert response.status_code == 400 and media_type(response) == accept
        assert response.json() == {
            "errors": [
                {
                    "message": "The body is not valid JSON: Expecting value: line 1 column 11 (char 10).",
                    "extensions": {"code": "BAD_JSON"},
                }
            ]
        }
    empty = httpx.post(f"{plain_server.url}/graphql", headers={"Content-Type": JSON, "Accept": GRJ})
    assert empty.status_code == 400 and "empty" in empty.json()["errors"][0]["message"]


def test_get_runs_queries_and_refuses_mutations_with_405(plain_server: ServerProcess) -> None:
    url = f"{plain_server.url}/graphql"
    query = httpx.get(url, params={"query": "{ __typename }"}, headers={"Accept": GRJ})
    assert query.status_code == 200 and query.json() == {"data": {"__typename": "Query"}}
    assert media_type(query) == GRJ
    mutation = 'mutation { cancelTask(id: "x") { __typename } }'
    for accept in (GRJ, JSON):
        refused = httpx.get(url, params={"query": mutation}, headers={"Accept": accept})
        assert refused.status_code == 405 and refused.headers["allow"] == "POST"
        assert media_type(refused) == accept
        assert "mutations are not allowed" in refused.json()["errors"][0]["message"]
        assert "data" not in refused.json()


@pytest.mark.parametrize("accept", ["text/plain", "text/html", "application/xml, image/*", f"{GRJ};q=0"])
def test_an_accept_without_a_json_type_is_a_406(plain_server: ServerProcess, accept: str) -> None:
    response = post(plain_server, {"query": "{ __typename }"}, accept=accept)
    assert response.status_code == 406, response.text
    assert media_type(response) == JSON
    assert GRJ in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/graphql",
        f"{JSON}; charset=latin-1",
    ],
)
def test_a_post_that_is_not_utf8_json_is_a_415(plain_server: ServerProcess, content_type: str | None) -> None:
    headers = {"Accept": GRJ} | ({"Content-Type": content_type} if content_type else {})
    response = httpx.post(
        f"{plain_server.url}/graphql", content=b'{"query": "{ __typename }"}', headers=headers
    )
    assert response.status_code == 415, response.text
    assert (
        media_type(response) == GRJ
        and "must be sent as application/json" in response.json()["errors"][0]["message"]
    )
    accepted = httpx.post(
        f"{plain_server.url}/graphql",
        content=b'{"query": "{ __typename }"}',
        headers={"Accept": GRJ, "Content-Type": f"{JSON}; charset=UTF-8"},
    )
    assert accepted.status_code == 200


def test_graphiql_and_server_sent_events_are_still_served(plain_server: ServerProcess) -> None:
    page = httpx.get(f"{plain_server.url}/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    body = {"query": 'subscription { taskEvents(after: "HEAD") { cursor } }'}
    with httpx.stream(
        "POST", f"{plain_server.url}/graphql", json=body, headers={"Accept": "text/event-stream"}, timeout=10
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
