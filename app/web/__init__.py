"""The pages a person opens in a browser, served by this server alone (docs/ARCHITECTURE.md, "The layers").

- `/` — the monitor (`monitor_page`): workflows, trees, timelines, agents, live; the same page answers
  `/workflows/<id>`, `/tasks/<id>` and `/agents` (the script routes on the client). Its own files are
  served at `/monitor/<file>` (`app.web.monitor_page`).
- `/about` — the landing page: what the server is, with links to everything below.
- `GET /graphql` from a browser — GraphiQL (`graphiql_page`, rendered by the GraphQL view in
  `app.server`), with subscriptions over graphql-transport-ws.
- `/docs` — Swagger UI over the REST API's `/openapi.json`.
- `/assets/<package>@<version>/<file>` — the scripts and stylesheets those pages use: files taken from
  npm tarballs at pinned versions by `python -m app.web.vendor`, committed under `app/web/assets/` with
  their SHA-384 in `assets/manifest.json`, served with year-long cache headers.

Nothing here loads from another host, so the pages work offline and on air-gapped networks. This layer
talks to no other part of the app: it only links to the other endpoints by path.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from app.web.assets import ASSETS_PATH, asset_endpoint
from app.web.monitor_page import MONITOR_PATH, monitor_asset
from app.web.pages import ABOUT_PATH, DOCS_PATH, docs_page, graphiql_page, landing_page, monitor_page

__all__ = ["graphiql_page", "web_routes"]


def web_routes() -> list[BaseRoute]:
    """The monitor, the about page, the OpenAPI viewer and the assets (GraphiQL is on the GraphQL route)."""
    return [
        Route("/", monitor_page, methods=["GET"], name="monitor"),
        Route("/workflows/{id}", monitor_page, methods=["GET"], name="monitor-workflow"),
        Route("/tasks/{id}", monitor_page, methods=["GET"], name="monitor-task"),
        Route("/agents", monitor_page, methods=["GET"], name="monitor-agents"),
        Route(f"{MONITOR_PATH}/{{file}}", monitor_asset, methods=["GET"], name="monitor-file"),
        Route(ABOUT_PATH, landing_page, methods=["GET"], name="landing"),
        Route(DOCS_PATH, docs_page, methods=["GET"], name="docs"),
        Route(f"{ASSETS_PATH}/{{directory}}/{{file}}", asset_endpoint, methods=["GET"], name="asset"),
    ]
