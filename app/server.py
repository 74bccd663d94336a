"""The Starlette application: routes, and the lifespan that owns every resource (mongod, client, indexes).

`create_app(settings)` is the only way to build the app; nothing connects at import time. Tests build
it with their own settings; `agent-tasks serve` builds it from the environment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pymongo.monitoring import CommandListener
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from app.api.context import AppState, Context
from app.api.schema import build_schema
from app.lifecycle.expiry import ExpirySweeper
from app.lifecycle.hierarchy import Hierarchy
from app.lifecycle.transitions import Lifecycle
from app.mongo.client import make_client, shared_secret
from app.mongo.embedded import EmbeddedMongod
from app.mongo.indexes import ensure_indexes
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
    try:
        db = client[settings.mongodb_db]
        await ensure_indexes(db)
        secret = (
            settings.cursor_secret.encode() if settings.cursor_secret else await shared_secret(db, "cursor")
        )
        lifecycle = Lifecycle(db)
        state = AppState(
            settings=settings,
            store=Store(db, CursorCodec(secret)),
            lifecycle=lifecycle,
            hierarchy=Hierarchy(db, lifecycle),
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
        await client.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def health(request: Request) -> JSONResponse:
    """Liveness and readiness: answers 200 once MongoDB answers a ping."""
    state: AppState = request.app.state.agent_tasks
    await state.store.db.command("ping")
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings, *, mongo_listeners: Sequence[CommandListener] = ()) -> Starlette:
    """Build the ASGI app. `mongo_listeners` lets tests count MongoDB commands."""
    graphql_app = AgentTasksGraphQL(build_schema(settings.max_query_depth))

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
        ],
        lifespan=lifespan,
    )
