"""Seed 002's REST API over the same store and services as GraphQL (docs/ARCHITECTURE.md, "The layers").

`rest_routes()` is what `app.server.create_app` mounts: one Starlette route per row of `routes.ROUTES`
(entities × operations), each handler wrapped so every refusal answers a JSON error, plus `/openapi.json`
generated from the same table. A method a path does not serve answers 405 with an `Allow` header listing
every method of every route matching that path. Modules: `entities` (the seven entities), `models`
(pydantic bodies and answers derived from the collection specs), `bodies` (reading JSON), `documents` (the
seed's JSON shape), `actions` (service calls), `handlers`, `routes`, `openapi`, `errors` (status codes, in
one place), `steering` (the routes of concurrency limits, start rate limits, claim policies and queues).
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from app.auth.scopes import REST
from app.rest.errors import json_errors
from app.rest.handlers import HANDLERS
from app.rest.openapi import openapi_endpoint
from app.rest.routes import OPENAPI_PATH, ROUTES, Resource, RestRoute, register_convertors
from app.rest.steering import STEERING_HANDLERS

__all__ = ["rest_routes"]


#: The order `Allow` lists methods in.
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class _RestRoute(Route):
    """A route whose 405 names every method the request's path is served with.

    Each (path, method) is its own route, and Starlette answers a method no route of the path serves
    from the first route whose path matched, listing only that route's methods (`Allow: HEAD, GET` on a
    path that also takes DELETE and PATCH). The `Allow` here is the union over all the REST routes whose
    path matches (`/meta-tasks/query` is also `/meta-tasks/{id}`).
    """

    def __init__(self, *args: Any, siblings: list[Route], template: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.siblings = siblings
        if template is not None:
            # Matching uses the compiled pattern (`{key:tail}`); `path` is what the request metrics and
            # the access log name the route by: the OpenAPI document's template (`{key}`).
            self.path = template

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            methods: set[str] = set()
            for route in self.siblings:
                if route.matches(scope)[0] is not Match.NONE:
                    methods |= route.methods or set()
            allow = ", ".join(sorted(methods, key=_METHOD_ORDER.index))
            raise HTTPException(status_code=405, headers={"Allow": allow})
        await super().handle(scope, receive, send)


def _endpoint(route: RestRoute) -> Any:
    """The handler of a route: an entity operation's for its entity, or a steering operation's own."""
    if isinstance(route.entity, Resource):
        return STEERING_HANDLERS[route.operation.name]
    return HANDLERS[route.operation.name](route.entity)


def rest_routes() -> list[Route]:
    """The Starlette routes of the REST API, `/openapi.json` included."""
    register_convertors()
    routes: list[Route] = []
    routes += [
        _RestRoute(
            route.route_path,
            json_errors(_endpoint(route), REST[route.operation.name]),
            methods=[route.operation.method],
            name=route.operation_id,
            siblings=routes,
            template=route.path,
        )
        for route in ROUTES
    ]
    routes.append(
        _RestRoute(OPENAPI_PATH, openapi_endpoint, methods=["GET"], name="openapi", siblings=routes)
    )
    return routes
