"""The Starlette application: routes, and the lifespan that owns every resource (mongod, client, indexes).

`create_app(settings)` is the only way to build the app; nothing connects at import time. Tests build
it with their own settings; `agent-tasks serve` builds it from the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from opentelemetry.trace import TracerProvider
from pymongo.monitoring import CommandListener
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketState
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL, GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from app import tracing
from app.api.context import Context
from app.api.document_shape import ShapeLimits
from app.api.documents import DocumentLimits
from app.api.guards import QueryLimits
from app.api.http import GraphQLOverHTTP
from app.api.legacy_ws import GraphQLWSHandler
from app.api.live_limits import LiveConnectionCap, TransportWSHandler
from app.api.schema import AgentTasksSchema, build_schema
from app.auth.middleware import AuthMiddleware, TokenVerifier, authenticator, bearer, watch_key
from app.domain import ErrorCode
from app.edge import edge_middleware
from app.metrics import metrics_middleware, metrics_route
from app.principal import OPEN, AuthenticationError
from app.resources import AppState, open_resources
from app.rest import rest_routes
from app.settings import Settings
from app.store.config import ping
from app.store.failures import classify, describe
from app.web import graphiql_page, web_routes

logger = logging.getLogger("agent_tasks")


class AgentTasksGraphQL(LiveConnectionCap, GraphQLOverHTTP):
    """Strawberry's ASGI app speaking GraphQL over HTTP as the spec asks (`app/api/http.py`), with our
    context: fresh loaders for every request; live connections bounded (`app/api/live_limits.py`)."""

    graphql_ws_handler_class = GraphQLWSHandler  # the legacy protocol runs queries and mutations too
    graphql_transport_ws_handler_class = TransportWSHandler  # refusals that name their limit

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        state: AppState = request.app.state.agent_tasks
        if isinstance(response, WebSocket):  # asked once per connection: remembered, to close it on shutdown
            state.websockets.add(response)
        principal = getattr(request.state, "principal", None)  # set by AuthMiddleware
        return Context(app=state, request=request, response=response, principal=principal or OPEN)

    async def on_ws_connect(self, context: Context) -> None:
        """Credentials in `connection_init` (`Authorization: Bearer …`, `authorization`, or `apiKey`): the
        socket's operations run as that principal; without any, the upgrade request's stands."""
        params = context.connection_params or {}
        value = params.get("Authorization", params.get("authorization"))
        api_key = params.get("apiKey")
        auth = authenticator(context.app)
        if value is not None or api_key is not None:
            try:
                token = bearer(str(value)) if value is not None else str(api_key)
                context.principal = await auth.authenticate(token)
            except AuthenticationError as exc:
                raise ConnectionRejectionError({"message": exc.message, "code": exc.code}) from exc
        socket = context.response
        if context.principal.kind == "key" and isinstance(socket, WebSocket):
            # A revoked (or expired) key ends the socket, and with it every subscription on it.
            async def close() -> None:
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    await socket.close(code=4403, reason="API key revoked or expired")

            task = asyncio.create_task(
                watch_key(
                    auth,
                    context.principal,
                    context.app.settings.auth_recheck_seconds,
                    lambda: (
                        socket.client_state is not WebSocketState.DISCONNECTED
                        and socket.application_state is not WebSocketState.DISCONNECTED
                    ),
                    close,
                )
            )
            context.app.background.add(task)
            task.add_done_callback(context.app.background.discard)

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from this server's own assets (app.web), where Strawberry's page loads unpkg.com."""
        return graphiql_page(request)


async def health(request: Request) -> JSONResponse:
    """Liveness: 200 while the process serves HTTP, whatever MongoDB's state (it never calls MongoDB, so
    it cannot hang in a failover), with how the live event hub is doing."""
    state: AppState = request.app.state.agent_tasks
    hub = state.hub
    return JSONResponse(
        {
            "status": "ok",
            "event_hub": {
                "running": hub.running,
                "subscribers": hub.subscriber_count,
                "restarts": hub.restarts,
                "last_position": None if hub.last_position is None else str(hub.last_position),
                "stamped": hub.stamped,
                "orphan_sweeper": hub.sweeps_orphans,
            },
        }
    )


async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 when MongoDB answers a ping within READINESS_TIMEOUT_SECONDS, else 503 (JSON)."""
    state: AppState = request.app.state.agent_tasks
    seconds = state.settings.readiness_timeout_seconds
    try:
        await ping(state.store.db, seconds)
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            raise
        logger.warning("not ready: %s (%s)", failure.code.rest, describe(exc))
        return JSONResponse(
            {
                "status": "unavailable",
                "error": {
                    "code": ErrorCode.DATABASE_UNAVAILABLE.rest,
                    "message": f"MongoDB did not answer a ping within {seconds:g} s.",
                },
            },
            status_code=503,
            headers={"Retry-After": "1"},
        )
    return JSONResponse({"status": "ready"})


def create_app(
    settings: Settings,
    *,
    mongo_listeners: Sequence[CommandListener] = (),
    state: AppState | None = None,
    jwt: TokenVerifier | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Starlette:
    """Build the ASGI app. `mongo_listeners` lets tests count MongoDB commands. With `state` (resources the
    caller opened, as `agent-tasks serve` does to report start-up failures itself) the lifespan only
    hands it to the routes, and the caller closes it. Traces go to `tracer_provider`, or (None) to the one
    the `OTEL_*` variables configure, if they ask for one (`app/tracing.py`; shut down with the app).
    The app starts on the data it finds: the demo (LOAD_DEMO) is loaded by `agent-tasks serve`, which
    opens the resources itself, never by the lifespan (the server does not import `app.demo`)."""
    owned_provider = tracer_provider is None
    provider = tracing.configure() if tracer_provider is None else tracer_provider
    tracer = provider.get_tracer(tracing.TRACER_NAME) if provider is not None else None
    if tracer is not None and settings.trace_mongodb_commands:
        mongo_listeners = [*mongo_listeners, tracing.MongoCommandSpans(tracer)]
    graphql_app = AgentTasksGraphQL(
        build_schema(
            QueryLimits(
                cost_max=settings.query_cost_max,
                list_size=settings.query_cost_list_size,
                max_list_items=settings.max_list_items,
                default_page_size=settings.default_page_size,
                max_page_size=settings.max_page_size,
            ),
            DocumentLimits(
                max_tokens=settings.max_query_tokens,
                shape=ShapeLimits(
                    max_depth=settings.max_query_depth,
                    max_aliases=settings.max_query_aliases,
                    max_work=settings.graphql_validation_work_max,
                ),
                inline_bytes=settings.graphql_inline_document_bytes,
                cpu_ms=settings.graphql_prepare_cpu_ms,
                cpu_window=settings.graphql_prepare_cpu_window_seconds,
            ),
            settings.query_timeout_seconds,
            tracer,
        ),
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL),
        connection_init_wait_timeout=timedelta(seconds=settings.connection_init_timeout_seconds),
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        keep_alive=True,
        keep_alive_interval=15,
        # Browsers' WebSocket handshakes from these origins (CORS does not cover WebSockets).
        allowed_origins=settings.cors_allow_origins,
    )

    graphql_app.max_body_bytes = settings.max_body_bytes
    graphql_app.max_url_bytes = settings.max_url_bytes
    graphql_app.max_json_depth = settings.max_json_depth

    documents = graphql_app.schema.documents if isinstance(graphql_app.schema, AgentTasksSchema) else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        try:
            if state is not None:
                app.state.agent_tasks = state
                yield {}
                return
            async with open_resources(settings, mongo_listeners) as opened:
                app.state.agent_tasks = opened
                yield {}
        finally:
            if documents is not None:  # its worker process, if a large document started one
                documents.close()
            shutdown = getattr(provider, "shutdown", None) if owned_provider else None
            if shutdown is not None:  # the SDK's: flushes the spans still buffered
                await asyncio.to_thread(shutdown)

    return Starlette(
        routes=[
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_app),
            Route("/healthz", health),
            metrics_route(),
            Route("/readyz", ready),
            # Seed 002's REST API and its OpenAPI document, over the same store and services.
            *rest_routes(),
            # The landing page, the OpenAPI viewer (/docs) and the browser pages' vendored assets.
            *web_routes(),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
        middleware=[
            # Outermost: the request's span covers everything below, refusals at the edge included.
            Middleware(tracing.TracingMiddleware, tracer=tracer),
            *edge_middleware(settings),
            metrics_middleware(),
            *cors(settings),
            Middleware(AuthMiddleware, jwt=jwt),
        ],
    )


#: What a browser page may send (besides the CORS-safelisted headers) and read in an answer.
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "If-Match")
CORS_EXPOSE_HEADERS = ("ETag", "Location")


def cors(settings: Settings) -> list[Middleware]:
    """CORS for the configured origins (`CORS_ALLOW_ORIGINS`); none, and so no `Access-Control-*`
    header anywhere, when no origin is configured."""
    if not settings.cors_allow_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=("GET", "POST", "PATCH", "DELETE"),
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
        )
    ]


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (unknown path, method not allowed) in the API's JSON error shape."""
    assert isinstance(exc, HTTPException)
    code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
        exc.status_code, ErrorCode.HTTP_ERROR
    ).rest
    return JSONResponse(
        {"error": {"code": code, "message": f"{request.method} {request.url.path}: {exc.detail}"}},
        status_code=exc.status_code,
        headers=exc.headers,
    )
