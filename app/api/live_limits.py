"""Bounds on live connections: how many a server process holds, and how many operations one WebSocket runs.

- **Connections per process** (`WS_MAX_CONNECTIONS`): WebSocket connections and server-sent-event streams
  together, since each holds a socket, a context and (most often) a subscriber. One more is refused: a
  WebSocket is accepted and closed at once with 1013 "try again later" and a reason naming the limit (a
  handshake refused outright would reach the client as a bare HTTP 403); an SSE request is answered 503
  with a GraphQL error and `Retry-After`. SSE streams have one subscription each (one per HTTP request,
  and uvicorn's HTTP/1.1 runs one request at a time per connection), so this cap is also theirs.
- **Operations per WebSocket** (`MAX_SUBSCRIPTIONS_PER_CONNECTION`): Strawberry's own check, with a
  refusal that names the limit and its value (Strawberry says "Subscription limit reached"), on both
  WebSocket protocols (`graphql-transport-ws` here, the legacy `graphql-ws` in `legacy_ws.py`).
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage

from app.api.context import Context
from app.domain import ErrorCode

#: WebSocket close code "Try Again Later" (the IANA registry of close codes): the server is at capacity.
TRY_AGAIN_LATER = 1013
#: Seconds an SSE client refused for capacity is told to wait (`Retry-After`).
RETRY_AFTER_SECONDS = 5


def operation_limit_error(limit: int) -> GraphQLError:
    """The refusal of one operation more than a WebSocket connection may run at once."""
    return GraphQLError(
        f"this connection already runs {limit} operations, the most one connection may"
        f" (MAX_SUBSCRIPTIONS_PER_CONNECTION={limit}); complete one first, or open another connection",
        extensions={"code": ErrorCode.SUBSCRIPTION_LIMIT_EXCEEDED},
    )


def connection_limit_reason(limit: int) -> str:
    """Why a connection over the cap is refused (a WebSocket close reason: at most 123 bytes)."""
    return f"this server holds WS_MAX_CONNECTIONS={limit} live connections already; retry later"


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's `graphql-transport-ws` handler, refusing an operation over the cap by name."""

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            limit is not None
            and self.connection_acknowledged
            and message["id"] not in self.operations  # Strawberry closes the socket for those
            and len(self.operations) >= limit
        ):
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [operation_limit_error(limit).formatted]}
            )
            return
        await super().handle_subscribe(message)


class LiveConnectionCap:
    """Mixed into the GraphQL view: counts its open WebSockets and SSE streams and refuses one over
    `WS_MAX_CONNECTIONS` (see the module). One view serves the app, so the count is the process's."""

    live_connections = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = self._live_kind(scope)
        if kind is None:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
            return
        limit: int = scope["app"].state.agent_tasks.settings.ws_max_connections
        if self.live_connections >= limit:
            await self._refuse(kind, limit, scope, receive, send)
            return
        self.live_connections += 1
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            self.live_connections -= 1

    def _live_kind(self, scope: Scope) -> str | None:
        """ "websocket", "sse" (a request for an event stream), or None for any other request."""
        if scope["type"] == "websocket":
            return "websocket"
        if scope["type"] == "http" and scope.get("method") in ("GET", "POST"):
            transport = self._get_stream_transport_from_headers(Request(scope).headers)  # type: ignore[attr-defined]
            if transport is not None:
                return "sse"
        return None

    async def _refuse(self, kind: str, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        reason = connection_limit_reason(limit)
        if kind == "websocket":
            websocket = WebSocket(scope, receive, send)
            protocols: Any = scope.get("subprotocols") or []
            supported = [p for p in protocols if p in self.protocols]  # type: ignore[attr-defined]
            await websocket.accept(subprotocol=supported[0] if supported else None)
            await websocket.close(TRY_AGAIN_LATER, reason)
            return
        error = {"message": reason, "extensions": {"code": ErrorCode.CONNECTION_LIMIT_EXCEEDED}}
        response = JSONResponse(
            {"errors": [error]}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
        await response(scope, receive, send)
