"""The monitor page: workflows, their trees, timelines, agents and actions, live, in the browser.

One HTML shell answers every path the page routes on the client (`/`, `/workflows/<id>`, `/tasks/<id>`,
`/agents`), so a deep link works when opened directly; the script (History API) decides what to draw.
The page is plain ES modules and CSS under `app/web/monitor/`, served at `/monitor/<file>` from that
directory (only the files listed in `FILES`), with no build step. The entry script and the stylesheet
carry their SHA-384 (`integrity=`), computed from the files when first served; the WebSocket client is the
vendored graphql-ws (`app.web.assets`). Every GraphQL operation the page sends is a named operation in
`monitor/operations.graphql`, which the page fetches from here (`queries/Monitor.graphql` links to it, so
the schema tests validate it). docs/MONITOR.md says how the page works.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache
from html import escape
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.web.assets import asset

MONITOR_DIR = Path(__file__).resolve().parent / "monitor"
MONITOR_PATH = "/monitor"

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".graphql": "application/graphql; charset=utf-8",
}

#: The page's own files: what `/monitor/<file>` serves, and nothing else.
FILES = (
    "app.js",
    "gql.js",
    "live.js",
    "graph.js",
    "timeline.js",
    "views.js",
    "util.js",
    "style.css",
    "operations.graphql",
)


@dataclass(frozen=True)
class MonitorFile:
    """One of the page's files, read once: its bytes, media type and Subresource Integrity hash."""

    name: str
    data: bytes
    media_type: str

    @property
    def integrity(self) -> str:
        return "sha384-" + base64.b64encode(hashlib.sha384(self.data).digest()).decode()

    @property
    def url(self) -> str:
        """With a short hash, so a changed file has a new URL (relative to the application's root)."""
        return f"{MONITOR_PATH}/{self.name}?v={hashlib.sha256(self.data).hexdigest()[:12]}"


@cache
def monitor_file(name: str) -> MonitorFile:
    """The page's file `name` (one of `FILES`), read on first use."""
    if name not in FILES:
        raise LookupError(name)
    path = MONITOR_DIR / name
    return MonitorFile(name, path.read_bytes(), _MEDIA_TYPES[path.suffix])


async def monitor_asset(request: Request) -> Response:
    """GET /monitor/<file>: one of the page's scripts, its stylesheet or its operations."""
    try:
        found = monitor_file(request.path_params["file"])
    except LookupError:
        raise HTTPException(404, "no such file") from None
    return Response(
        found.data,
        media_type=found.media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def monitor_html(root: str, about: str, links: str) -> str:
    """The page's HTML shell: header with the views and the server's links, the view, the footer."""
    ws = asset("graphql-ws", "graphql-ws.min.js")
    css = monitor_file("style.css")
    entry = monitor_file("app.js")
    r = escape(root)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>agent-tasks</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{r}{escape(css.url)}" integrity="{css.integrity}">
</head>
<body data-root="{r}">
<a class="skip" href="#view">Skip to content</a>
<header class="top">
  <a class="brand" href="{r}/" data-route>agent-tasks</a>
  <nav aria-label="Views">
    <a href="{r}/" data-route>Workflows</a>
    <a href="{r}/agents" data-route>Agents</a>
  </nav>
  <span id="live" class="live" role="status" aria-live="polite" hidden></span>
  <button type="button" id="key-button" class="key-button" aria-haspopup="dialog">Key</button>
  <nav aria-label="Server" class="server-links">{links}</nav>
</header>
<main id="view" tabindex="-1"><p class="muted">Loading the monitor…</p></main>
<footer class="about">{about}</footer>
<script src="{r}{escape(ws.url)}" integrity="{ws.integrity}"></script>
<script type="module" src="{r}{escape(entry.url)}" integrity="{entry.integrity}"></script>
</body>
</html>
"""
