"""The monitor page (app/web/monitor_page.py, app/web/monitor/): served at `/` and at every path it routes
on the client, its files with their integrity, its operations from the one file `queries/Monitor.graphql`
links to. In a real headless Chromium, offline, against a server with the demo workflow: the list, the
workflow graph and timeline, the task panel, the agents view, live updates from mutations made here, a
dropped WebSocket resumed without a lost or doubled event (checked against the stored event log), the
keyboard path, and no request leaving the machine."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest

from app.web.monitor_page import FILES, MONITOR_DIR
from tests.conftest import ROOT
from tests.test_web import HTML, Links, assert_local_only


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
