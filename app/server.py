"""The Starlette application: routes, and the lifespan that owns every resource (mongod, client, indexes).

`create_app(settings)` is the only way to build the app; nothing connects at import time. Tests build
it with their own settings; `agent-tasks serve` builds it from the environment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from pymongo.monitoring import CommandListener
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL, GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from app.api.context import AppState, Context
from app.api.schema import build_schema
from app.lifecycle.expiry import ExpirySweeper
from app.lifecycle.hierarchy import Hierarchy
from app.lifecycle.transitions import Lifecycle
from app.live.hub import EventHub
from app.mongo.client import make_client, shared_secret
from app.mongo.embedded import EmbeddedMongod
from app.mongo.indexes import ensure_indexes
from app.rest import rest_routes
from app.settings import Settings
from app.store.cursors import CursorCodec
from app.store.repository import Store

logger = logging.getLogger("agent_tasks")


class AgentTasksGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app with our context: fresh loaders for every request."""

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        return Context(app=request.app.state.agent_tasks, request=request, response=response)


@asynccontextmanager
async def open_resources(
    settings: Settings, listeners: Sequence[CommandListener] = ()
) -> AsyncIterator[AppState]:
    """Everything the app needs, opened in order and closed in reverse (mongod if embedded, client…)."""
    embedded: EmbeddedMongod | None = None
    uri = settings.mongodb_uri
    if uri is None:
        embedded = EmbeddedMongod(settings.data_dir, settings.embedded_mongo_port)
        uri = await asyncio.to_thread(embedded.start)
    client = make_client(uri, listeners)
    sweeper: ExpirySweeper | None = None
    hub: EventHub | None = None
    try:
        db = client[settings.mongodb_db]
        await ensure_indexes(db)
        secret = (
            settings.cursor_secret.encode() if settings.cursor_secret else await shared_secret(db, "cursor")
        )
        lifecycle = Lifecycle(db)
        hub = EventHub(db, queue_size=settings.subscription_queue_size)
        await hub.start()
        state = AppState(
            settings=settings,
            store=Store(db, CursorCodec(secret)),
            lifecycle=lifecycle,
            hierarchy=Hierarchy(db, lifecycle),
            hub=hub,
        )
        sweeper = ExpirySweeper(state.lifecycle, settings.expiry_sweep_seconds)
        sweeper.start()
        if settings.load_demo:
            from app.demo import load_demo

            await load_demo(db)
        yield state
    finally:
        if sweeper is not None:  # stopped before the client closes: it may be mid-transaction
            await sweeper.stop()
        if hub is not None:
            await hub.stop()
        await client.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def health(request: Request) -> JSONResponse:
    """Liveness and readiness: 200 once MongoDB answers a ping; also how the live event hub is doing."""
    state: AppState = request.app.state.agent_tasks
    await state.store.db.command("ping")
    hub = state.hub
    return JSONResponse(
        {
            "status": "ok",
            "event_hub": {
                "running": hub.running,
                "subscribers": hub.subscriber_count,
                "restarts": hub.restarts,
                "last_event_id": hub.last_event_id,
            },
        }
    )


def create_app(settings: Settings, *, mongo_listeners: Sequence[CommandListener] = ()) -> Starlette:
    """Build the ASGI app. `mongo_listeners` lets tests count MongoDB commands."""
    graphql_app = AgentTasksGraphQL(
        build_schema(settings.max_query_depth, settings.max_query_aliases, settings.max_query_tokens),
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL),
        connection_init_wait_timeout=timedelta(seconds=settings.connection_init_timeout_seconds),
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        keep_alive=True,
        keep_alive_interval=15,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings, mongo_listeners) as state:
            app.state.agent_tasks = state
            yield {}

    return Starlette(
        routes=[
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_app),
            Route("/healthz", health),
            # Seed 002's REST API and its OpenAPI document, over the same store and services.
            *rest_routes(),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (unknown path, method not allowed) in the API's JSON error shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": {"code": code, "message": f"{request.method} {request.url.path}: {exc.detail}"}},
        status_code=exc.status_code,
        headers=exc.headers,
    )
