"""Seed 002's REST API over the same store and services as GraphQL (docs/ARCHITECTURE.md, "The layers").

`rest_routes()` is what `app.server.create_app` mounts: one Starlette route per row of `routes.ROUTES`
(entities × operations), each handler wrapped so every refusal answers a JSON error, plus `/openapi.json`
generated from the same table. Modules: `entities` (the seven entities), `models` (pydantic bodies and
answers derived from the collection specs), `bodies` (reading JSON), `documents` (the seed's JSON shape),
`actions` (service calls), `handlers`, `routes`, `openapi`, `errors` (status codes, in one place).
"""

from __future__ import annotations

from starlette.routing import Route

from app.rest.errors import json_errors
from app.rest.handlers import HANDLERS
from app.rest.openapi import openapi_endpoint
from app.rest.routes import OPENAPI_PATH, ROUTES

__all__ = ["rest_routes"]


def rest_routes() -> list[Route]:
    """The Starlette routes of the REST API, `/openapi.json` included."""
    routes = [
        Route(
            route.path,
            json_errors(HANDLERS[route.operation.name](route.entity)),
            methods=[route.operation.method],
            name=route.operation_id,
        )
        for route in ROUTES
    ]
    routes.append(Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"], name="openapi"))
    return routes
