"""The HTML pages: the monitor (`/` and the paths it routes), the about page (`/about`), GraphiQL
(`GET /graphql` in a browser), Swagger UI (`/docs`).

Each page loads only vendored assets from this server (`app.web.assets`), each with its `integrity=`
hash, and answers with a Content-Security-Policy that lets the browser load nothing from another host:
scripts and styles from this origin only (plus the page's own inline script, by nonce), requests to
this origin only (`connect-src 'self'` covers the WebSocket to `/graphql` too). The HTML itself is not
cached (`no-cache`), so a new version of an asset reaches browsers with the next page load.
"""

from __future__ import annotations

import json
import secrets
from html import escape
from importlib.metadata import PackageNotFoundError, version

from starlette.requests import Request
from starlette.responses import HTMLResponse

from app.web.assets import Asset, asset
from app.web.monitor_page import monitor_html

GRAPHQL_PATH = "/graphql"
OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
READY_PATH = "/readyz"
ABOUT_PATH = "/about"


def _csp(nonce: str | None) -> str:
    script = "'self'" if nonce is None else f"'self' 'nonce-{nonce}'"
    return "; ".join(
        (
            "default-src 'self'",
            f"script-src {script}",
            # React, CodeMirror and Swagger UI set inline styles.
            "style-src 'self' 'unsafe-inline'",
            # GraphiQL's fonts and Swagger UI's icons are data: URLs inside the vendored CSS.
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'self'",
        )
    )


def _html(body: str, nonce: str | None = None) -> HTMLResponse:
    return HTMLResponse(
        body,
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": _csp(nonce),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def _root(request: Request) -> str:
    """The path the app is mounted under (empty unless a proxy strips a prefix and says so)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _script(root: str, item: Asset) -> str:
    return f'<script src="{escape(root + item.url)}" integrity="{item.integrity}"></script>'


def _stylesheet(root: str, item: Asset) -> str:
    return f'<link rel="stylesheet" href="{escape(root + item.url)}" integrity="{item.integrity}">'


def _js_string(text: str) -> str:
    """`text` as a JavaScript string literal that is safe inside a <script> element."""
    return json.dumps(text).replace("</", "<\\/")


def _server_version() -> str:
    try:
        return version("agent-tasks-graphql")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


async def monitor_page(request: Request) -> HTMLResponse:
    """GET / (and /workflows/<id>, /tasks/<id>, /agents): the monitor, with the server's links."""
    root = escape(_root(request))
    links = "".join(
        f'<a href="{root}{path}">{label}</a>'
        for path, label in (
            (GRAPHQL_PATH, "GraphiQL"),
            (DOCS_PATH, "REST API"),
            (OPENAPI_PATH, "OpenAPI"),
            (HEALTH_PATH, "Health"),
            (READY_PATH, "Readiness"),
            (METRICS_PATH, "Metrics"),
            (ABOUT_PATH, "About"),
        )
    )
    about = (
        "agent-tasks: a GraphQL API server over the task hierarchy AI agent systems run on (meta workflow →"
        " sub-task → behavior task), stored in MongoDB. Everything on this page is served by this server;"
        f" nothing is loaded from the internet. agent-tasks {escape(_server_version())}."
    )
    return _html(monitor_html(_root(request), about, links))


async def landing_page(request: Request) -> HTMLResponse:
    """GET /about: what this server is, and links to everything a person can open in a browser."""
    root = escape(_root(request))
    return _html(
        f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>agent-tasks</title>
<link rel="icon" href="data:,">
<style>
  body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem;
         color: #1f2328; }}
  code {{ font-size: 90%; background: #f3f4f6; padding: 0 .25em; border-radius: 3px; }}
  li {{ margin: .4rem 0; }}
  .muted {{ color: #59636e; }}
</style>
</head>
<body>
<h1>agent-tasks</h1>
<p><a href="{root}/">The monitor</a>: every workflow, its tree and its events, live.</p>
<p>A GraphQL API server over the task hierarchy that AI agent systems run on — meta workflow → sub-task →
behavior task, with each task's output, execution state, dependencies and events — stored in MongoDB.
It also serves seed 002's REST API over the same data.</p>
<ul>
  <li><a href="{root}{GRAPHQL_PATH}">GraphiQL</a> — explore the schema and run queries, mutations and
    subscriptions in the browser (<code>POST {GRAPHQL_PATH}</code> for programs; WebSocket
    <code>graphql-transport-ws</code> and server-sent events on the same path).</li>
  <li><a href="{root}{DOCS_PATH}">REST API reference</a> — the OpenAPI document in Swagger UI.</li>
  <li><a href="{root}{OPENAPI_PATH}">OpenAPI document</a> — <code>{OPENAPI_PATH}</code>, for code
    generators and API tools.</li>
  <li><a href="{root}{HEALTH_PATH}">Health</a> — <code>{HEALTH_PATH}</code>: liveness, 200 while the
    server runs (it never waits for MongoDB), with the live event hub's counters.</li>
  <li><a href="{root}{READY_PATH}">Readiness</a> — <code>{READY_PATH}</code>: 200 when MongoDB answers a
    ping, 503 (JSON) within a second when it does not.</li>
  <li><a href="{root}{METRICS_PATH}">Metrics</a> — <code>{METRICS_PATH}</code>, Prometheus' text format:
    requests by route, method and status, with their durations; this process's subscriptions, WebSocket
    connections and event hub.</li>
</ul>
<p>Access: with an API key (<code>agent-tasks keys create</code>), send
<code>Authorization: Bearer atk_…</code>; in GraphiQL put <code>{{"Authorization": "Bearer atk_…"}}</code> in
the Headers tab (it is also sent as the WebSocket's <code>connection_init</code> payload). A server on
loopback runs open unless <code>AUTH_MODE=keys</code>.</p>
<p class="muted">Everything on these pages is served by this server; nothing is loaded from the internet.
agent-tasks {escape(_server_version())}.</p>
</body>
</html>
"""
    )


# GraphiQL's first query when the URL names none: where to start.
_WELCOME = """# Welcome to agent-tasks' GraphiQL.
#
# Run an operation with Ctrl-Enter (or the play button); complete with Ctrl-Space. The Docs and
# Explorer buttons on the left browse the schema. With the demo loaded (`make run`), try:
#
#   query WorkflowTree($id: ID!) { metaWorkflowTask(id: $id) { id progress { percentage } } }
#
# with the variables {"id": "meta_podcast_ai_ethics"}. Subscriptions run over WebSocket
# (graphql-transport-ws); anything put in the Headers tab is sent with every HTTP request and, as the
# connection_init payload, when the WebSocket opens.
"""

# The page's own script, given a nonce by the CSP. Query, variables and operation name can be given in
# the URL (?q=…&variables=…&operationName=…), and edits are written back to it, so a URL shares a query.
# Not `?query=`: a GET with `query` is a GraphQL request over GET, answered with JSON.
_GRAPHIQL_SCRIPT = """
const WELCOME = %(welcome)s;
const params = new URLSearchParams(window.location.search);
const endpoint = window.location.pathname;  // this page is served at the GraphQL endpoint itself
const wsUrl = (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + endpoint;

function parseHeaders(text) {
  try {
    const value = JSON.parse(text || "{}");
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch (e) {
    return {};
  }
}

// The header editor's content (GraphiQL keeps it in localStorage), also sent when the WebSocket opens.
let headers = {};
try { headers = parseHeaders(localStorage.getItem("graphiql:headers")); } catch (e) {}

const wsClient = graphqlWs.createClient({
  url: wsUrl,
  lazy: true,
  connectionParams: () => headers,
});
const fetcher = GraphiQL.createFetcher({ url: endpoint, wsClient });
const explorer = GraphiQLPluginExplorer.explorerPlugin();

function remember(name, value) {
  if (value) params.set(name, value); else params.delete(name);
  const search = params.toString();
  history.replaceState(null, "", search ? "?" + search : window.location.pathname);
}

function App() {
  return React.createElement(GraphiQL, {
    fetcher,
    plugins: [explorer],
    defaultQuery: WELCOME,
    query: params.get("q") || undefined,
    variables: params.get("variables") || undefined,
    operationName: params.get("operationName") || undefined,
    onEditQuery: (value) => remember("q", value),
    onEditVariables: (value) => remember("variables", value),
    onEditOperationName: (value) => remember("operationName", value),
    onEditHeaders: (value) => { headers = parseHeaders(value); },
    defaultEditorToolsVisibility: true,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: true,
    inputValueDeprecation: true,
  });
}

ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(App));
"""


def graphiql_page(request: Request) -> HTMLResponse:
    """GraphiQL, with React, GraphiQL, the explorer plugin and graphql-ws all served from /assets."""
    root = _root(request)
    nonce = secrets.token_urlsafe(16)
    styles = [asset("graphiql", "graphiql.min.css"), asset("@graphiql/plugin-explorer", "style.css")]
    scripts = [
        asset("react", "react.production.min.js"),
        asset("react-dom", "react-dom.production.min.js"),
        asset("graphiql", "graphiql.min.js"),
        asset("@graphiql/plugin-explorer", "index.umd.js"),
        asset("graphql-ws", "graphql-ws.min.js"),
    ]
    script = _GRAPHIQL_SCRIPT % {"welcome": _js_string(_WELCOME)}
    return _html(
        f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>GraphiQL · agent-tasks</title>
<link rel="icon" href="data:,">
<style>
  body {{ margin: 0; height: 100%; width: 100%; overflow: hidden; }}
  #graphiql {{ height: 100vh; display: flex; }}
</style>
{"".join(_stylesheet(root, s) for s in styles)}
</head>
<body>
<div id="graphiql" class="graphiql-container">Loading GraphiQL…</div>
{"".join(_script(root, s) for s in scripts)}
<script nonce="{nonce}">{script}</script>
</body>
</html>
""",
        nonce,
    )


async def docs_page(request: Request) -> HTMLResponse:
    """GET /docs: Swagger UI over /openapi.json (the REST API), from vendored assets."""
    root = _root(request)
    nonce = secrets.token_urlsafe(16)
    bundle = asset("swagger-ui-dist", "swagger-ui-bundle.js")
    css = asset("swagger-ui-dist", "swagger-ui.css")
    return _html(
        f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>REST API · agent-tasks</title>
<link rel="icon" href="data:,">
{_stylesheet(root, css)}
</head>
<body>
<div id="swagger-ui">Loading the OpenAPI document…
  <a href="{escape(root + OPENAPI_PATH)}">{OPENAPI_PATH}</a></div>
{_script(root, bundle)}
<script nonce="{nonce}">
window.ui = SwaggerUIBundle({{
  url: {_js_string(root + OPENAPI_PATH)},
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,  // the default sends the document to validator.swagger.io
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
}});
</script>
</body>
</html>
""",
        nonce,
    )
