"""The HTTP edge around every route: request ids, trusted hosts, and one log line per refused request.

Order (outermost first): `RequestId` gives every request an id (the client's `X-Request-ID` when it is a
plausible id, a new one otherwise), echoed in the answer and put in every log line; `TrustedHosts`
refuses a `Host` the server does not answer to (DNS rebinding) with a 400 JSON error; `AccessLog`
writes one line per request (route template, GraphQL operation, status, duration, actor, request id),
with, for every 4xx answer, the reason a handler left in `request.state.refusal`, so a client's mistake
never logs a traceback (only the unexpected, a 500, does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.domain import ErrorCode
from app.settings import Settings

logger = logging.getLogger("agent_tasks.requests")
#: The access line's logger (one line per request: `AccessLog`).
access_logger = logging.getLogger("agent_tasks.access")

#: A Host header (RFC 9110 §7.2): a registered name or IPv4 address, or a bracketed IP literal, then an
#: optional port. Starlette parses it the same way in a private module (`starlette._utils`), not ours to use.
_HOST_HEADER = re.compile(
    r"(?P<host>[a-z0-9._~%!$&'()*+,;=-]+|\[(?:[a-f0-9]*:[a-f0-9.:]+|v[a-f0-9]+\.[a-z0-9._~!$&'()*+,;=:-]+)\])"
    r"(?::[0-9]+)?",
    re.IGNORECASE,
)


def host_of(header: str) -> str | None:
    """The host of a Host header, lower-cased (brackets kept around an IP literal), or None if malformed."""
    match = _HOST_HEADER.fullmatch(header)
    return match["host"].lower() if match else None


REQUEST_ID_HEADER = "X-Request-ID"
#: A client's request id is kept when it looks like one (no spaces or control characters: it is logged).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def _plausible_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def edge_middleware(settings: Settings) -> list[Middleware]:
    """The edge's middleware, outermost first (`Starlette(middleware=...)` order)."""
    return [
        Middleware(CorrelationIdMiddleware, header_name=REQUEST_ID_HEADER, validator=_plausible_request_id),
        Middleware(AccessLog),
        Middleware(TrustedHosts, allowed_hosts=settings.allowed_hosts),
    ]


def refuse(scope: Scope, reason: str) -> None:
    """Say why this request is refused, for `AccessLog`'s line (Starlette's `request.state`)."""
    scope.setdefault("state", {})["refusal"] = reason


class TrustedHosts(TrustedHostMiddleware):
    """Starlette's trusted-host check (its patterns: `example.com`, `*.example.com`, `*`), answering a
    refused host with a JSON error in the shape of the route asked (GraphQL's or REST's) instead of
    plain text. A WebSocket handshake with a wrong host is refused with 403 before it is accepted."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        host = host_of(raw)
        if host is not None and any(
            host == pattern or (pattern.startswith("*") and host.endswith(pattern[1:]))
            for pattern in self.allowed_hosts
        ):
            await self.app(scope, receive, send)
            return
        message = f"the Host header {raw[:100]!r} is not one this server answers to (TRUSTED_HOSTS)"
        refuse(scope, f"untrusted_host: {message}")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "untrusted host"})
            return
        if scope["path"].startswith("/graphql"):
            body: dict[str, Any] = {"errors": [{"message": f"Bad request: {message}."}]}
        else:
            body = {"error": {"code": ErrorCode.UNTRUSTED_HOST.rest, "message": message}}
        await send_json(send, 400, body)


async def send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class AccessLog:
    """One line per HTTP request, when its answer has been sent (logger `agent_tasks.access`; INFO, WARNING
    for a 5xx): method, route template (`scope["route"]`, set by Starlette's router; never the raw path
    or its query string, which may carry ids or credentials; none for a path no route matched), GraphQL
    operation name and type (`request.state.graphql_operation`, set by the GraphQL extension), status,
    duration, actor (`request.state.principal`, set by the auth middleware), the request id (from the
    log filter) and, for a 4xx, the reason a handler left in `request.state.refusal` — so a client's
    mistake is one line, never a traceback. A WebSocket gets one line when it ends (`WS`, 101 when it
    was accepted, else 403)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        begin = time.perf_counter()
        status: list[int] = [500 if scope["type"] == "http" else 403]

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "websocket.accept":
                status[0] = 101
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            _access_line(scope, status[0], time.perf_counter() - begin)


def _access_line(scope: Scope, status: int, seconds: float) -> None:
    state = scope.get("state") or {}
    method = scope["method"] if scope["type"] == "http" else "WS"
    route = getattr(scope.get("route"), "path", None)
    operation = state.get("graphql_operation")
    name, kind = operation if operation is not None else (None, None)
    principal = state.get("principal")
    actor = (
        f"{principal.kind}:{principal.id}"
        if principal is not None and getattr(principal, "id", None)
        else getattr(principal, "kind", None)
    )
    refusal = str(state.get("refusal", ""))[:300] if 400 <= status < 500 else ""
    duration_ms = round(seconds * 1000, 2)
    text = f"{method} {route or '-'} {status} {duration_ms:g} ms"
    if kind is not None:
        text += f" {kind} {name or '(anonymous)'}"
    if actor is not None:
        text += f" as {actor}"
    if refusal:
        text += f": {refusal}"
    access_logger.log(
        logging.WARNING if status >= 500 else logging.INFO,
        text,
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "graphql_operation": name,
            "graphql_type": kind,
            "actor": actor,
            **({"refusal": refusal} if refusal else {}),
        },
    )


class BodyTooLarge(Exception):
    """A request body over `limit` bytes; GraphQL and REST each answer it 413 in their own error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than MAX_BODY_BYTES ({limit} bytes)")
        self.limit = limit


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused (`BodyTooLarge`) from its Content-Length, or as soon as a chunked body (or one
    with a false length) passes `limit`: it is never read whole into memory first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


#: After a 414, how much more of the request is read (and dropped) before the connection is closed anyway,
#: and for how long at most.
LINGER_BYTES = 8 * 1024 * 1024
LINGER_SECONDS = 5.0


class UrlTooLong(Exception):
    """Raised from the HTTP parser's URL callback to stop reading a request whose URL is over the limit."""


def url_limited_protocol(max_url_bytes: int) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol, answering a request line whose URL is longer than `max_url_bytes` with
    414 and a JSON error naming the limit (`MAX_URL_BYTES`) before reading the rest of it. Without it a
    URL past ~64 KiB (httptools' URL parser counts in 16 bits) got uvicorn's bare 400 "Invalid HTTP request
    received." whatever its length. uvicorn takes a protocol class as `Config(http=...)`; where httptools
    is not installed, uvicorn's default is kept ("auto": h11, whose own limit answers 400)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools ships with uvicorn[standard]
        return "auto"

    class UrlLimitedHttpTools(HttpToolsProtocol):
        refused = False
        discarded = b""  # the tail of what was read after refusing (the end of the head may straddle reads)
        discarded_bytes = 0

        def data_received(self, data: bytes) -> None:
            if not self.refused:
                super().data_received(data)
                return
            # Read the rest of the request head before closing: closing with unread bytes would reset the
            # connection, and the client could lose the 414 before reading it.
            self.discarded_bytes += len(data)
            self.discarded = (self.discarded + data)[-4:]
            if b"\r\n\r\n" in self.discarded or self.discarded_bytes > LINGER_BYTES:
                self.transport.close()

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > max_url_bytes and not self.refused:
                self.refused = True
                graphql = self.url.startswith(b"/graphql")
                message = (
                    f"The URL is longer than MAX_URL_BYTES ({max_url_bytes} bytes):"
                    " send the request as a POST body."
                )
                body: dict[str, Any] = (
                    {
                        "errors": [
                            {
                                "message": message,
                                "extensions": {"code": ErrorCode.URI_TOO_LONG, "limit": max_url_bytes},
                            }
                        ]
                    }
                    if graphql
                    else {
                        "error": {
                            "code": ErrorCode.URI_TOO_LONG.rest,
                            "message": message,
                            "limit": max_url_bytes,
                        }
                    }
                )
                payload = json.dumps(body).encode()
                head = (
                    "HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
                )
                logger.info("refused request: 414 URI too long (over %d bytes)", max_url_bytes)
                self.transport.write(head.encode("ascii") + payload)
                asyncio.get_running_loop().call_later(LINGER_SECONDS, self.transport.close)
                raise UrlTooLong  # stops the parser; what follows is read and dropped (`data_received`)

        def send_400_response(self, msg: str) -> None:
            if not self.refused:  # the 414 is the answer already
                super().send_400_response(msg)

    return UrlLimitedHttpTools
