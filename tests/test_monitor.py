"""The monitor page (app/web/monitor_page.py, app/web/monitor/): served at `/` and at every path it routes
on the client, its files with their integrity, its operations from the one file `queries/Monitor.graphql`
links to. In a real headless Chromium, offline, against a server with the demo workflow: the list, the
workflow graph and timeline, the task panel, the agents view, live updates from mutations made here, a
dropped WebSocket resumed without a lost or doubled event (checked against the stored event log), the
keyboard path, and no request leaving the machine."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient

from app.auth.keys import KeyService
from app.domain import Scope
from app.web.monitor_page import FILES, MONITOR_DIR
from tests.conftest import ROOT, read_query
from tests.support.dropping_proxy import DroppingProxy
from tests.support.servers import free_port, serve
from tests.support.web import CHROMIUM, CHROMIUM_FLAGS, HTML, Links, assert_local_only


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


@pytest.mark.parametrize(
    "path", ["/", "/workflows/meta_podcast_ai_ethics", "/tasks/beh_write_script", "/agents"]
)
async def test_every_route_of_the_page_answers_with_the_page(client: httpx.AsyncClient, path: str) -> None:
    page = await client.get(path, headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    links = assert_local_only(page.text)
    scripts = [ref for ref in links.refs if ref.startswith("/monitor/")]
    assert any(ref.startswith("/monitor/app.js?v=") for ref in scripts)
    assert any(ref.startswith("/monitor/style.css?v=") for ref in scripts)
    assert any(ref.startswith("/assets/graphql-ws@") for ref in links.refs)
    assert 'type="module"' in page.text and "<script>" not in page.text  # no inline script at all


async def test_the_page_files_are_served_with_their_integrity(client: httpx.AsyncClient) -> None:
    links = Links((await client.get("/", headers=HTML)).text)
    for ref, integrity in links.integrity.items():
        answer = await client.get(ref)
        assert answer.status_code == 200, ref
        assert sri(answer.content) == integrity, ref
    for name in FILES:
        answer = await client.get(f"/monitor/{name}")
        assert answer.status_code == 200, name
        assert answer.content == (MONITOR_DIR / name).read_bytes()
        # nothing from elsewhere (SVG's namespace is a name, never fetched)
        text = answer.text.replace('"http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(?i)\b(https?|wss?)://[a-z0-9]", text), name
    # every file of the page's directory is listed (so the package ships what the page imports)
    assert {p.name for p in MONITOR_DIR.iterdir()} == set(FILES)
    for path in ("/monitor/nothing.js", "/monitor/..%2Fpages.py", "/monitor/"):
        assert (await client.get(path)).status_code == 404, path


def test_the_operations_have_one_source() -> None:
    """queries/Monitor.graphql (validated with every file there) is the page's own operations file."""
    link = ROOT / "queries" / "Monitor.graphql"
    assert link.is_symlink() and link.resolve() == (MONITOR_DIR / "operations.graphql").resolve()
    # the page sends operations by name only: no GraphQL text in its scripts
    for name in FILES:
        if name.endswith(".js"):
            text = (MONITOR_DIR / name).read_text(encoding="utf-8")
            assert not re.search(r"\b(query|mutation|subscription)\s+[A-Z]\w*\s*[({]", text), name


# --- In a browser ------------------------------------------------------------------------------------

WORKFLOW = "meta_podcast_ai_ethics"
SEEN_WITHIN_MS = 1000  # a change made here must be on the page within this (polled, never a sleep)


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=10)
    body = answer.json()
    assert "errors" not in body, body
    return body["data"]


def _stored_cursors(url: str) -> list[str]:
    """The workflow's event log as the server stores it, in order."""
    query = read_query("TaskEvents.graphql")
    cursors: list[str] = []
    after = None
    while True:
        page = _graphql(url, query, {"workflowId": WORKFLOW, "after": after, "first": 100})["taskEvents"]
        cursors += [edge["cursor"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return cursors
        after = page["pageInfo"]["endCursor"]


def _literal(value: Any) -> str:
    """A GraphQL literal of a JSON value (object keys unquoted)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_literal(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _mutate(url: str, field: str, **arguments: Any) -> None:
    args = ", ".join(f"{k}: {_literal(v)}" for k, v in arguments.items())
    data = _graphql(url, f"mutation {{ {field}({args}) {{ __typename }} }}")
    assert data[field]["__typename"].endswith("Success"), data


def _node(page: Any, task_id: str, attribute: str, value: str) -> None:
    """Wait until the graph's node for `task_id` has `attribute` = `value`."""
    page.wait_for_function(
        "([id, attr, value]) => document.querySelector(`.node[data-id='${id}']`)?.getAttribute(attr) === value",
        arg=[task_id, attribute, value],
        timeout=SEEN_WITHIN_MS,
    )


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (as .ci/run does) to run the browser test",
)
def test_monitor_follows_the_demo_workflow_live_in_headless_chromium(mongo_uri: str, tmp_path: Path) -> None:
    from playwright.sync_api import Route, sync_playwright

    shots = Path(os.environ.get("MONITOR_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"monitor_{uuid.uuid4().hex[:12]}"}
    elsewhere: list[str] = []
    hosts: set[str | None] = set()
    problems: list[str] = []

    def offline(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    port = free_port()
    with (
        serve(env, "--demo", port=port) as server,
        tempfile.TemporaryDirectory(prefix="agent-tasks-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            browser.route("**/*", offline)
            browser.on("request", lambda r: hosts.add(urlsplit(r.url).hostname))
            page = browser.new_page()
            dropped = {"now": False}
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type == "error" and not dropped["now"] else None,
            )
            page.on("pageerror", lambda e: problems.append(str(e)))

            # The list: the demo workflow with its roll-up; open it.
            page.goto(f"{server.url}/")
            row = page.locator(f'tr[data-id="{WORKFLOW}"]')
            row.wait_for(timeout=30_000)
            assert "12 tasks" in row.inner_text() and "In progress" in row.inner_text()
            page.locator('#live[data-state="live"]').wait_for(timeout=10_000)
            page.screenshot(path=shots / "list.png")
            row.get_by_role("link").first.click()
            page.wait_for_url(f"**/workflows/{WORKFLOW}")

            # The graph: every task drawn, pending and blocked ones too, with unmet dependencies marked.
            page.locator('.node[data-id="beh_master_audio"]').wait_for(timeout=30_000)
            assert page.locator(".node").count() == 13  # the workflow, 3 sub-tasks, 9 behavior tasks
            assert page.locator('.node[data-status="AWAITING_DEPENDENCY"]').count() == 4
            assert page.locator(".edges path.unmet").count() >= 3
            assert "Blocked" in page.locator('.node[data-id="beh_polish_script"]').inner_text()
            page.locator('#live[data-state="live"]').wait_for(timeout=30_000)
            page.screenshot(path=shots / "graph.png")

            # Mutations from here, each on the page within a second.
            _mutate(server.url, "reportProgress", id="beh_write_script", percentage=60)
            _node(page, "beh_write_script", "data-progress", "60")
            _mutate(server.url, "completeTask", id="beh_write_script")
            _node(page, "beh_write_script", "data-status", "COMPLETED")
            _node(page, "beh_polish_script", "data-status", "PENDING")  # released by its dependency
            _mutate(server.url, "cancelTask", id="beh_master_audio", reason="not needed")
            _node(page, "beh_master_audio", "data-status", "CANCELLED")

            # The task panel: state, dependencies, output on demand, the event log (live).
            page.locator('.node[data-id="beh_write_script"]').click()
            page.wait_for_url("**/tasks/beh_write_script")
            panel = page.locator("aside.panel")
            panel.locator(".log li", has_text="TASK_COMPLETED").wait_for(timeout=5_000)
            assert "beh_outline_script" in panel.locator(".deps").inner_text()
            panel.get_by_role("button", name="Show the output document").click()
            panel.get_by_text("This task has no output document.").wait_for(timeout=5_000)
            _mutate(
                server.url,
                "recordToolCall",
                taskId="beh_write_script",
                toolName="web_search",
                toolArgs={"query": "AI ethics"},
                correlationId="c-1",
            )
            page.wait_for_function(
                "() => [...document.querySelectorAll('aside.panel .log li')].some(li => li.textContent.includes('web_search'))",
                timeout=SEEN_WITHIN_MS,
            )
            log = panel.locator(".log").inner_text()
            assert "call web_search" in log and "In progress → ✓ Completed" in log and "anonymous" in log
            page.screenshot(path=shots / "panel.png")

            # The keyboard: Escape closes the panel; Tab reaches the graph, arrows move, Enter opens.
            page.keyboard.press("Escape")
            page.wait_for_url(f"**/workflows/{WORKFLOW}")
            assert panel.is_hidden()
            page.locator("body").focus()
            for _ in range(40):
                page.keyboard.press("Tab")
                if page.evaluate("() => document.activeElement?.classList.contains('node')"):
                    break
            else:
                raise AssertionError("Tab never reached the graph")
            page.keyboard.press("Home")
            page.keyboard.press("ArrowDown")  # the first sub-task
            page.keyboard.press("ArrowRight")  # the next one in the chain
            assert page.evaluate("() => document.activeElement.dataset.id") == "sub_script"
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")
            page.wait_for_url("**/tasks/beh_outline_script")
            panel.get_by_role("button", name="Show the output document").click()
            panel.locator(".panel-output pre", has_text="art_beh_outline_script").wait_for(timeout=5_000)
            page.keyboard.press("Escape")
            page.wait_for_url(f"**/workflows/{WORKFLOW}")

            # Drop the WebSocket (the server goes away) and restore it: the page says so, resumes after
            # its last cursor, and holds exactly the stored event log, each event once.
            before = page.evaluate("() => window.monitorDebug.follower.events.length")
            dropped["now"] = True  # the browser logs the refused connections meanwhile
            assert server.stop() == 0
            page.locator('#live[data-state="reconnecting"]').wait_for(timeout=10_000)
            with serve(env, port=port) as again:
                # changes while the page is still away: it must get them from its cursor
                _mutate(again.url, "startTask", id="beh_polish_script")
                _mutate(
                    again.url,
                    "reportProgress",
                    id="beh_polish_script",
                    percentage=30,
                    currentStep="tightening",
                )
                _mutate(
                    again.url,
                    "recordMemoryOperation",
                    taskId="beh_polish_script",
                    operation="set",
                    keyOrQuery="draft:v2",
                    status="SUCCESS",
                )
                page.locator('#live[data-state="live"]').wait_for(timeout=15_000)
                dropped["now"] = False
                _node(page, "beh_polish_script", "data-progress", "30")
                _mutate(again.url, "reportProgress", id="beh_polish_script", percentage=70)
                _node(page, "beh_polish_script", "data-progress", "70")
                stored = _stored_cursors(again.url)
                page.wait_for_function(
                    "n => window.monitorDebug.follower.events.length >= n", arg=len(stored)
                )
                shown = page.evaluate("() => window.monitorDebug.follower.events.map(e => e.cursor)")
                assert shown == stored  # none missed, none twice, in commit order
                assert len(stored) >= before + 4  # start, two progress reports, a memory operation
                assert page.evaluate("() => window.monitorDebug.follower.reconnects") >= 1

                # The timeline and the agents view, by their own URLs.
                page.goto(f"{again.url}/workflows/{WORKFLOW}?view=timeline")
                page.locator('.tl-row[data-id="beh_write_script"] .tl-bar').wait_for(timeout=30_000)
                assert "not started" in page.locator('.tl-row[data-id="beh_synthesize_audio"]').inner_text()
                page.screenshot(path=shots / "timeline.png")
                page.goto(f"{again.url}/agents")
                card = page.locator('article.card[data-agent="VoiceForgeAgent"]')
                card.wait_for(timeout=30_000)
                assert "Voice catalogue timed out" in card.inner_text()
                page.screenshot(path=shots / "agents.png", full_page=True)

                # A phone: the same pages, readable.
                phone = browser.new_page()
                phone.set_viewport_size({"width": 390, "height": 844})
                phone.goto(f"{again.url}/tasks/beh_select_voice")
                phone.locator("aside.panel .log li").first.wait_for(timeout=30_000)
                assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
                phone.screenshot(path=shots / "phone.png")
        finally:
            browser.close()
    assert elsewhere == [], elsewhere
    assert hosts <= {"127.0.0.1"}, hosts
    assert problems == [], problems


# --- On a server that requires keys: what each key may see and do; a drop under load --------------------


def _post(url: str, query: str, variables: dict[str, Any] | None, key: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    body = answer.json()
    assert "errors" not in body, body
    return body["data"]


def _stored_events(url: str, key: str) -> list[dict[str, Any]]:
    """The workflow's stored event log (cursor, task), in order."""
    query = read_query("TaskEvents.graphql")
    events: list[dict[str, Any]] = []
    after = None
    while True:
        page = _post(url, query, {"workflowId": WORKFLOW, "after": after, "first": 100}, key)["taskEvents"]
        events += [{"cursor": e["cursor"], "taskId": e["node"]["taskId"]} for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return events
        after = page["pageInfo"]["endCursor"]


def _make_keys(mongo_uri: str, db_name: str, *specs: tuple[str, list[Scope]]) -> list[str]:
    """API keys (their secrets) created in the server's database, as `agent-tasks keys create` does."""

    async def create() -> list[str]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
        try:
            return [(await KeyService(client[db_name]).create(name, scopes))[1] for name, scopes in specs]
        finally:
            await client.close()

    return asyncio.run(create())


def _enter_key(page: Any, secret: str | None) -> None:
    """The key dialog, by keyboard: the header's Key button, type the key, Enter (or Forget the key)."""
    page.locator("#key-button").focus()
    page.keyboard.press("Enter")
    page.locator("#key-input").wait_for()
    assert page.evaluate("() => document.activeElement.id") == "key-input"
    if secret is None:
        page.get_by_role("button", name="Forget the key").click()
    else:
        page.keyboard.type(secret)
        page.keyboard.press("Enter")


def _tab_to(page: Any, predicate: str, limit: int = 60) -> None:
    """Press Tab until `predicate` (a JS expression on `el`, the focused element) holds."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {{ const el = document.activeElement; return Boolean({predicate}); }}"):
            return
    raise AssertionError(f"Tab never reached {predicate}")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_monitor_with_keys_actions_and_a_drop_under_load(mongo_uri: str, tmp_path: Path) -> None:
    """AUTH_MODE=keys: without a key the page says one is needed and shows nothing else; a `read` key
    sees the workflow and no controls; a `read,write` key retries, cancels and re-prioritises from the
    keyboard, the stored state changes and each action's event is in the panel. Then the page's
    connection is cut (a proxy between it and the server resets it) while mutations run at 20/s on one
    task: the panel's event log and the page's events equal the stored log, none missed, none twice."""
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("MONITOR_SCREENSHOTS") or tmp_path)
    db_name = f"monitor_keys_{uuid.uuid4().hex[:12]}"
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, "AUTH_MODE": "keys"}
    problems: list[str] = []
    expected_refusals = {"now": True}  # the browser logs a refused request / a cut socket as an error
    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    states = mongo[db_name].agent_task_states
    reader, writer = _make_keys(
        mongo_uri,
        db_name,
        ("monitor-reader", [Scope.READ]),
        ("monitor-writer", [Scope.READ, Scope.WRITE]),
    )
    try:
        with (
            serve(env, "--demo") as server,
            DroppingProxy(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as proxy,
            tempfile.TemporaryDirectory(prefix="agent-tasks-chromium-") as profile,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 900},
            )
            try:
                page = browser.new_page()
                page.on(
                    "console",
                    lambda m: (
                        problems.append(m.text)
                        if m.type == "error" and not expected_refusals["now"]
                        else None
                    ),
                )
                page.on("pageerror", lambda e: problems.append(str(e)))

                # No key: the page says a key is needed (and nothing else: no graph, no controls).
                page.goto(f"{proxy.url}/tasks/beh_write_script")
                page.get_by_role("heading", name="An API key is needed").wait_for(timeout=30_000)
                assert "requires an API key" in page.get_by_role("alert").inner_text()
                assert page.locator(".node, [data-action=cancel], [data-action=retry]").count() == 0
                page.screenshot(path=shots / "keys-needed.png")

                # A read key: the workflow and the panel, no controls.
                _enter_key(page, reader)
                page.locator("aside.panel .log li[data-cursor]").first.wait_for(timeout=30_000)
                assert page.locator("#key-button").inner_text() == "Key: read"
                assert page.locator(".node").count() == 13
                assert page.locator("aside.panel .panel-actions").inner_text() == ""
                assert page.locator("[data-action]").count() == 0
                expected_refusals["now"] = False

                # A read,write key: actions. First the drop under load, on the panel's task.
                _enter_key(page, writer)
                panel = page.locator("aside.panel")
                panel.locator("[data-action=cancel]").wait_for(timeout=30_000)
                assert page.locator("#key-button").inner_text() == "Key: read, write"
                page.locator('#live[data-state="live"]').wait_for(timeout=30_000)

                sent: list[int] = []

                def load() -> None:
                    with httpx.Client(headers={"Authorization": f"Bearer {writer}"}, timeout=10) as http:
                        start = time.monotonic()
                        for n in range(40):  # 2 s at 20/s
                            time.sleep(max(0.0, start + n / 20 - time.monotonic()))
                            answer = http.post(
                                f"{server.url}/graphql",
                                json={
                                    "query": 'mutation($p: Float!) { reportProgress(id: "beh_write_script",'
                                    " percentage: $p) { __typename } }",
                                    "variables": {"p": 10 + n},
                                },
                            )
                            assert "Success" in answer.text, answer.text
                            sent.append(n)

                mutator = threading.Thread(target=load)
                expected_refusals["now"] = True
                mutator.start()
                time.sleep(0.6)
                assert proxy.drop(hold=0.5) >= 1  # the page's WebSocket at least
                page.locator('#live[data-state="reconnecting"]').wait_for(timeout=5_000)
                mutator.join(30)
                assert len(sent) == 40
                page.locator('#live[data-state="live"]').wait_for(timeout=15_000)
                expected_refusals["now"] = False
                stored = _stored_events(server.url, writer)
                page.wait_for_function(
                    "n => window.monitorDebug.follower.events.length >= n", arg=len(stored), timeout=10_000
                )
                shown = page.evaluate("() => window.monitorDebug.follower.events.map(e => e.cursor)")
                assert shown == [e["cursor"] for e in stored]  # none missed, none twice, in order
                in_panel = page.evaluate(
                    "() => [...document.querySelectorAll('aside.panel .log li[data-cursor]')].map(li => li.dataset.cursor)"
                )
                assert in_panel == [e["cursor"] for e in stored if e["taskId"] == "beh_write_script"]
                assert page.evaluate("() => window.monitorDebug.follower.reconnects") >= 1
                _node(page, "beh_write_script", "data-progress", "49")

                # Set priority, cancel, retry: by keyboard from the panel; stored; each event in the panel.
                def action_done(label: str) -> None:
                    try:
                        page.wait_for_function(
                            "t => document.querySelector('.action-result')?.textContent === t",
                            arg=f"Done: {label}.",
                            timeout=5_000,
                        )
                    except Exception:
                        raise AssertionError(panel.locator(".action-result").inner_text()) from None

                def logged(*texts: str) -> None:
                    page.wait_for_function(
                        "texts => [...document.querySelectorAll('aside.panel .log li')].some(li =>"
                        " texts.every(t => li.textContent.includes(t)))",
                        arg=list(texts),
                        timeout=SEEN_WITHIN_MS * 3,
                    )

                before = states.find_one({"_id": "beh_write_script"})
                assert before is not None and before["status"] == "in_progress"
                panel.focus()
                _tab_to(page, "el.id === 'priority'")
                page.keyboard.press("ArrowDown")
                chosen = page.evaluate("() => document.activeElement.value")
                assert chosen != before["priority"].upper()
                _tab_to(page, "el.dataset.action === 'prioritise'", limit=2)
                page.keyboard.press("Enter")
                action_done("priority set")
                assert page.evaluate("() => document.activeElement.classList.contains('action-result')")
                assert states.find_one({"_id": "beh_write_script"})["priority"] == chosen.lower()
                logged("TASK_UPDATED", "priority", "key monitor-writer")

                panel.focus()
                _tab_to(page, "el.dataset.action === 'cancel'")
                page.keyboard.press("Enter")
                action_done("cancelled")
                assert states.find_one({"_id": "beh_write_script"})["status"] == "cancelled"
                logged("STATUS_CHANGED", "→ ⊘ Cancelled", "key monitor-writer")
                _node(page, "beh_write_script", "data-status", "CANCELLED")
                page.screenshot(path=shots / "actions.png")

                panel.focus()
                _tab_to(page, "el.dataset.action === 'retry'")
                page.keyboard.press(" ")
                action_done("retried")
                retried = states.find_one({"_id": "beh_write_script"})
                assert retried["status"] not in ("cancelled", "in_progress"), retried["status"]
                logged("STATUS_CHANGED", "Cancelled →", "key monitor-writer")

                # Forgetting the key: back to the notice, nothing of the workflow left.
                expected_refusals["now"] = True
                _enter_key(page, None)
                page.get_by_role("heading", name="An API key is needed").wait_for(timeout=10_000)
                assert page.locator(".node, [data-action=cancel]").count() == 0
            finally:
                browser.close()
    finally:
        mongo.drop_database(db_name)
        mongo.close()
    assert problems == [], problems
