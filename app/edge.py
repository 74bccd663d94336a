"""The HTTP edge around every route: request ids, trusted hosts, and one log line per refused request.

Order (outermost first): `RequestId` gives every request an id (the client's `X-Request-ID` when it is a
plausible id, a new one otherwise), echoed in the answer and put in every log line; `TrustedHosts`
refuses a `Host` the server does not answer to (DNS rebinding) with a 400 JSON error; `RefusalLog`
writes one line at INFO for every 4xx answer, with the reason a handler left in `request.state.refusal`,
so a client's mistake never logs a traceback (only the unexpected, a 500, does).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
from asgi_correlation_id.log_filters import CorrelationIdFilter
from starlette._utils import parse_host_header
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings

logger = logging.getLogger("agent_tasks.requests")

REQUEST_ID_HEADER = "X-Request-ID"
#: A client's request id is kept when it looks like one (no spaces or control characters: it is logged).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def _plausible_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def edge_middleware(settings: Settings) -> list[Middleware]:
    """The edge's middleware, outermost first (`Starlette(middleware=...)` order)."""
    return [
        Middleware(CorrelationIdMiddleware, header_name=REQUEST_ID_HEADER, validator=_plausible_request_id),
        Middleware(RefusalLog),
        Middleware(TrustedHosts, allowed_hosts=settings.allowed_hosts),
    ]


def log_filter() -> logging.Filter:
    """A filter that puts the request id on every record as `correlation_id` (`-` outside a request)."""
    return CorrelationIdFilter(default_value="-")


def refuse(scope: Scope, reason: str) -> None:
    """Say why this request is refused, for `RefusalLog`'s line (Starlette's `request.state`)."""
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
        parsed = parse_host_header(raw)
        host = parsed.host.lower() if parsed is not None else None
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
            body = {"error": {"code": "untrusted_host", "message": message}}
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


class RefusalLog:
    """One INFO line per refused request (4xx): method, path, status, request id and the reason."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                reason = scope.get("state", {}).get("refusal", "")
                logger.info(
                    "refused %s %s: %s %s (request %s)",
                    scope["method"],
                    scope["path"][:200],
                    message["status"],
                    reason[:300],
                    correlation_id.get() or "-",
                )
            await send(message)

        await self.app(scope, receive, logging_send)


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
