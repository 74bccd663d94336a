"""The browser pages (app/web): the landing page, GraphiQL and the OpenAPI viewer, served with every asset
from this server. Over HTTP: what each page links, that nothing names another host, and that every
vendored file served is byte for byte the one in the manifest (hashed here, compared with the manifest
and the pages' `integrity=` attributes). In a real headless Chromium, offline: GraphiQL renders, runs
the README's tree query and a subscription over graphql-transport-ws; Swagger UI renders the REST API."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from app.web.assets import ASSETS_DIR, IMMUTABLE, MANIFEST, manifest
from tests.conftest import read_query
from tests.support.servers import serve
from tests.support.web import CHROMIUM, CHROMIUM_FLAGS, HTML, Links, assert_local_only


def sri(data: bytes, algorithm: str = "sha384") -> str:
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


@pytest.mark.parametrize("path", ["/", "/about"])
async def test_landing_page_says_what_this_is_and_links_everything(
    client: httpx.AsyncClient, path: str
) -> None:
    """`/` is the monitor (tests/test_monitor.py), which keeps the links of the landing page, now at /about."""
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "GraphQL API server" in page.text and "MongoDB" in page.text
    links = assert_local_only(page.text)
    assert {"/graphql", "/docs", "/openapi.json", "/healthz", "/metrics", "/readyz"} <= set(links.refs)
    assert ("/about" if path == "/" else "/") in links.refs
    # every link answers (GraphiQL as a browser asks for it)
    for ref in links.refs:
        if ref.startswith("/"):
            assert (await client.get(ref, headers=HTML)).status_code == 200, ref
    assert page.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert (await client.head(path)).status_code == 200


async def test_docs_is_swagger_ui_over_the_openapi_document(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    links = assert_local_only(page.text)
    assert "SwaggerUIBundle" in page.text and '"/openapi.json"' in page.text
    assert "validatorUrl: null" in page.text  # Swagger UI's default posts the document to swagger.io
    scripts = [ref for ref in links.refs if ref.endswith(".js")]
    assert scripts and all(re.fullmatch(r"/assets/swagger-ui-dist@[\d.]+/[\w.-]+", s) for s in scripts)
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")


async def test_graphiql_page_loads_everything_from_this_server(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    links = assert_local_only(page.text)
    names = {ref.rsplit("/", 1)[1] for ref in links.refs if ref.startswith("/assets/")}
    assert {
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "graphiql.min.css",
        "index.umd.js",  # the explorer plugin
        "graphql-ws.min.js",  # subscriptions over graphql-transport-ws
    } <= names
    assert "isHeadersEditorEnabled: true" in page.text
    # the inline script runs by nonce; nothing else inline, nothing from elsewhere
    csp = page.headers["content-security-policy"]
    nonce = re.search(r'<script nonce="([^"]+)">', page.text)
    assert nonce and f"'nonce-{nonce.group(1)}'" in csp and "connect-src 'self'" in csp


async def test_served_assets_match_the_manifest_and_the_pages_integrity(client: httpx.AsyncClient) -> None:
    """Hash the bytes the server sends: they must be what the manifest (and each page's SRI) says."""
    recorded = json.loads(MANIFEST.read_text())["packages"]
    served: dict[str, str] = {}
    for directory, package in recorded.items():
        assert directory == f"{package['name'].removeprefix('@').replace('/', '-')}@{package['version']}"
        assert re.fullmatch(r"\d+\.\d+\.\d+", package["version"]), "versions are pinned exactly"
        assert package["tarball_integrity"].startswith("sha512-")
        for file, entry in package["files"].items():
            url = f"/assets/{directory}/{file}"
            answer = await client.get(url)
            assert answer.status_code == 200, url
            assert sri(answer.content) == entry["integrity"], f"{url} differs from the manifest"
            assert answer.headers["cache-control"] == IMMUTABLE
            if file.endswith(".js"):
                assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
            elif file.endswith(".css"):
                assert answer.headers["content-type"] == "text/css; charset=utf-8"
            served[url] = entry["integrity"]
    # the directory holds exactly the files the manifest lists
    on_disk = {p.relative_to(ASSETS_DIR).as_posix() for p in ASSETS_DIR.rglob("*") if p.is_file()}
    assert on_disk == {"manifest.json"} | {url.removeprefix("/assets/") for url in served}
    assert len(manifest()) == len(served)
    # every asset a page loads carries the manifest's hash, so the browser checks it too
    for path in ("/", "/docs", "/graphql"):
        links = Links((await client.get(path, headers=HTML)).text)
        for ref in links.refs:
            if ref.startswith("/assets/"):
                assert links.integrity.get(ref) == served[ref], (path, ref)


def test_vendored_files_match_what_strawberry_pinned_on_unpkg() -> None:
    """A second, independent source: Strawberry's own GraphiQL page pins SRI hashes of the same unpkg
    files. Where it names a package and version vendored here, the bytes must be the same."""
    import strawberry

    page = (Path(strawberry.__file__).parent / "static" / "graphiql.html").read_text()
    pinned = re.findall(r'https://unpkg\.com/(@?[^@"]+)@([\d.]+)/([^"]+)"\s+integrity="([^"]+)"', page)
    recorded = json.loads(MANIFEST.read_text())["packages"]
    by_source = {
        (package["name"], package["version"], entry["from"].removeprefix("package/")): entry["integrity"]
        for package in recorded.values()
        for entry in package["files"].values()
    }
    compared = 0
    for name, version, path, integrity in pinned:
        ours = by_source.get((name, version, path))
        if ours is not None:
            assert ours == integrity, (name, version, path)
            compared += 1
    if compared == 0:
        pytest.skip("this Strawberry pins none of the versions vendored here")


async def test_unknown_assets_are_404(client: httpx.AsyncClient) -> None:
    for path in (
        "/assets/react@18.2.0/nothing.js",
        "/assets/react@0.0.1/react.production.min.js",
        "/assets/react@18.2.0/..%2Fmanifest.json",
        "/assets/..%2F..%2Fserver.py/x",
        "/assets/manifest.json",
    ):
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["code"] == "not_found"


# --- In a browser ------------------------------------------------------------------------------------


SUBSCRIPTION = """subscription {
  taskEvents(workflowId: "meta_podcast_ai_ethics", after: "HEAD") {
    cursor type taskId
    ... on TaskProgressEvent { progress }
  }
}"""


def _editor_value(page: Any, selector: str) -> str:
    return page.locator(f"{selector} .CodeMirror").first.evaluate("el => el.CodeMirror.getValue()")


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (as .ci/run does) to run the browser test",
)
def test_graphiql_works_offline_in_headless_chromium(mongo_uri: str) -> None:
    from playwright.sync_api import Request, Route, WebSocket, sync_playwright

    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"web_{uuid.uuid4().hex[:12]}"}
    elsewhere: list[str] = []  # every request the page tried to make to another host
    requests: list[str] = []
    problems: list[str] = []  # console errors, page errors (a CSP violation or an SRI mismatch lands here)
    frames_sent: list[dict[str, Any]] = []
    frames_received: list[dict[str, Any]] = []
    sockets: list[str] = []

    def offline(route: Route) -> None:
        """No internet: anything not for this machine is counted, then refused."""
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    def on_request(request: Request) -> None:
        requests.append(request.url)

    def on_websocket(ws: WebSocket) -> None:
        sockets.append(ws.url)
        ws.on("framesent", lambda payload: frames_sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: frames_received.append(json.loads(payload)))

    with (
        serve(env, "--demo") as server,
        tempfile.TemporaryDirectory(prefix="agent-tasks-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        # Playwright drives the system's Chromium; it never downloads a browser of its own.
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            browser.route("**/*", offline)
            browser.on("request", on_request)
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("websocket", on_websocket)

            # The README's tree query, given in the URL as a shared GraphiQL link would.
            tree_query = read_query("WorkflowTree.graphql")
            variables = {"id": "meta_podcast_ai_ethics"}
            link = urlencode({"q": tree_query, "variables": json.dumps(variables)})
            page.goto(f"{server.url}/graphql?{link}")
            page.locator(".graphiql-execute-button").wait_for(state="visible", timeout=30_000)
            assert "Loading GraphiQL" not in page.inner_text("body")
            assert page.locator(".graphiql-query-editor").count() == 1
            # the header editor (where an API key will go) is there
            page.get_by_text("Headers", exact=True).click()
            page.locator(".graphiql-editor-tool .graphiql-editor").last.wait_for(state="attached")

            page.locator(".graphiql-execute-button").click()
            page.wait_for_function(
                "() => document.querySelector('.result-window .CodeMirror')"
                "?.CodeMirror.getValue().includes('sub_voice')",
                timeout=30_000,
            )
            shown = json.loads(_editor_value(page, ".result-window"))
            expected = httpx.post(f"{server.url}/graphql", json={"query": tree_query, "variables": variables})
            assert shown == expected.json()
            tree = shown["data"]["metaWorkflowTask"]
            assert tree["id"] == "meta_podcast_ai_ethics"
            assert [s["id"] for s in tree["subTasks"]] == ["sub_snippet", "sub_script", "sub_voice"]

            # A subscription, over graphql-transport-ws: start it in GraphiQL, make a change, see it.
            page.locator(".graphiql-query-editor .CodeMirror").evaluate(
                "(el, q) => el.CodeMirror.setValue(q)", SUBSCRIPTION
            )
            # GraphiQL picks the operation name from the new document a moment after an edit
            page.wait_for_timeout(500)
            page.locator(".graphiql-execute-button").click()
            for _ in range(100):
                if any(frame["type"] == "subscribe" for frame in frames_sent):
                    break
                page.wait_for_timeout(100)
            else:
                raise AssertionError(
                    f"no subscription sent; GraphiQL shows {_editor_value(page, '.result-window')}"
                )
            page.wait_for_timeout(1000)  # let the server start the subscription before the change
            mutation = 'mutation { reportProgress(id: "beh_write_script", percentage: 60) { __typename } }'
            answer = httpx.post(f"{server.url}/graphql", json={"query": mutation})
            assert answer.json()["data"]["reportProgress"]["__typename"] == "TaskTransitionSuccess"
            page.wait_for_function(
                "() => document.querySelector('.result-window .CodeMirror')"
                "?.CodeMirror.getValue().includes('TASK_PROGRESS')",
                timeout=30_000,
            )
            event = json.loads(_editor_value(page, ".result-window"))["data"]["taskEvents"]
            assert event["type"] == "TASK_PROGRESS" and event["taskId"] == "beh_write_script"
            assert sockets == [f"ws://127.0.0.1:{urlsplit(server.url).port}/graphql"]
            # `connection_init` / `subscribe` / `next` are graphql-transport-ws (the legacy protocol
            # says `start` and `data`)
            sent = [frame["type"] for frame in frames_sent]
            assert sent[0] == "connection_init" and "subscribe" in sent and "start" not in sent
            assert "next" in {frame["type"] for frame in frames_received}

            # Swagger UI over the REST API's OpenAPI document
            page.goto(f"{server.url}/docs")
            page.locator(".swagger-ui .info .title").wait_for(state="visible", timeout=30_000)
            assert "REST" in page.locator(".swagger-ui .info .title").inner_text()
            assert page.locator(".opblock").count() > 10

            page.goto(f"{server.url}/")
            assert page.title() == "agent-tasks"
        finally:
            browser.close()

    assert elsewhere == [], f"requests left 127.0.0.1: {elsewhere}"
    assert {urlsplit(url).hostname for url in requests if not url.startswith("data:")} == {"127.0.0.1"}
    assert any("/assets/graphiql@" in url for url in requests)
    assert problems == [], problems
