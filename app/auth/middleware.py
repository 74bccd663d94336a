"""The authentication middleware: `Authorization: Bearer <secret>` → the request's Principal.

Pure ASGI, so streaming answers (SSE) and WebSocket upgrades pass through untouched. Secrets starting
`atk_` are API keys; any other bearer token goes to the pluggable JWT verifier. Without credentials the
request acts as OPEN (open mode) or as ANONYMOUS with AUTH_ANONYMOUS_SCOPES (keys mode). Bad credentials
are refused with 401 in the shape of the route (GraphQL's errors or REST's error object), even in open
mode. The principal is put on the scope state and in `current_principal` for the request's duration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pymongo.errors import PyMongoError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.jwt import JwtVerifier
from app.auth.keys import PREFIX, KeyService
from app.cancellation import cancel_until_done
from app.domain import ErrorCode
from app.domain import Scope as AccessScope
from app.edge import refuse, send_json
from app.principal import ANONYMOUS, OPEN, AuthenticationError, Principal, acting_as
from app.resources import AppState
from app.settings import Settings

logger = logging.getLogger("agent_tasks.auth")

TokenVerifier = Callable[[str], Awaitable[Principal]]


def bearer(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive); None if absent."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be `Bearer <API key or token>`")
    return token.strip()


class Authenticator:
    """Credentials → Principal, for HTTP requests and WebSocket `connection_init` payloads alike."""

    def __init__(self, settings: Settings, keys: KeyService, jwt: TokenVerifier | None = None) -> None:
        self.settings = settings
        self.keys = keys
        # JWTs from the configured issuer (JWT_ISSUER), unless the app was given its own verifier.
        self.jwt = jwt if jwt is not None else (JwtVerifier(settings) if settings.jwt_issuer else None)

    def anonymous(self) -> Principal:
        if self.settings.auth_open:
            return OPEN
        return (
            Principal(
                kind="anonymous",
                id=None,
                name=None,
                scopes=frozenset(AccessScope(s) for s in self.settings.auth_anonymous_scopes),
            )
            if self.settings.auth_anonymous_scopes
            else ANONYMOUS
        )

    async def still_valid(self, principal: Principal) -> bool:
        """Whether an API key principal's key is still neither revoked nor expired, as read at most
        AUTH_KEY_CACHE_SECONDS ago (a revocation through this process counts at once: `KeyService.active`).
        Others: True (a JWT's own expiry was checked when it was presented)."""
        if principal.kind != "key" or principal.id is None:
            return True
        return await self.keys.active(principal.id)

    async def authenticate(self, token: str | None) -> Principal:
        if token is None:
            return self.anonymous()
        if token.startswith(PREFIX):
            return await self.keys.authenticate(token)
        if self.jwt is None:
            raise AuthenticationError("not an API key and no JWT issuer is configured")
        return await self.jwt(token)


def authenticator(state: AppState, jwt: TokenVerifier | None = None) -> Authenticator:
    """The application's authenticator (made once, on first use: the state is opened by the lifespan,
    after the middleware stack is built)."""
    auth = state.extras.get("authenticator")
    if auth is None:
        keys = KeyService(state.store.db, state.settings.auth_key_cache_seconds)
        auth = Authenticator(state.settings, keys, jwt)
        state.extras["authenticator"] = auth
    return auth


async def watch_key(
    auth: Authenticator,
    principal: Principal,
    interval: float,
    alive: Callable[[], bool],
    on_lost: Callable[[], Awaitable[None]],
) -> None:
    """Every `interval` seconds while `alive()`, check the principal's key; once it is revoked or has
    expired, call `on_lost` (which ends the live connection) and stop. A MongoDB hiccup is no verdict:
    the next tick checks again."""
    while alive():
        await asyncio.sleep(interval)
        if not alive():
            return
        try:
            valid = await auth.still_valid(principal)
        except PyMongoError:
            continue
        if not valid:
            logger.info("API key %s was revoked or expired: ending its live connection", principal.id)
            await on_lost()
            return


def _streaming(scope: Scope) -> bool:
    accept = dict(scope.get("headers") or []).get(b"accept", b"")
    return b"text/event-stream" in accept


class AuthMiddleware:
    """Authenticate every HTTP request and WebSocket upgrade (see the module docstring)."""

    def __init__(self, app: ASGIApp, jwt: TokenVerifier | None = None) -> None:
        self.app = app
        self.jwt = jwt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        try:
            token = bearer(header.decode("latin-1") if header is not None else None)
            principal = await authenticator(scope["app"].state.agent_tasks, self.jwt).authenticate(token)
        except AuthenticationError as exc:
            await self._refuse(scope, send, exc.message)
            return
        scope.setdefault("state", {})["principal"] = principal
        with acting_as(principal):
            if principal.kind == "key" and scope["type"] == "http" and _streaming(scope):
                await self._stream(principal, scope, receive, send)
            else:
                await self.app(scope, receive, send)

    async def _stream(self, principal: Principal, scope: Scope, receive: Receive, send: Send) -> None:
        """A server-sent events stream (a subscription over HTTP) made with an API key: it ends once the
        key is revoked or expires (checked every AUTH_RECHECK_SECONDS)."""
        state = scope["app"].state.agent_tasks
        started = finished = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, finished
            started = started or message["type"] == "http.response.start"
            finished = finished or (message["type"] == "http.response.body" and not message.get("more_body"))
            await send(message)

        serving = asyncio.ensure_future(self.app(scope, receive, tracking_send))

        async def end() -> None:
            cancel_until_done(serving)

        watcher = asyncio.ensure_future(
            watch_key(
                authenticator(state, self.jwt),
                principal,
                state.settings.auth_recheck_seconds,
                lambda: not serving.done(),
                end,
            )
        )
        try:
            await serving
        except asyncio.CancelledError:
            if not watcher.done():  # cancelled from outside (shutdown, client gone): not ours to absorb
                raise
            if started and not finished:  # close the stream the client is reading
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()

    @staticmethod
    async def _refuse(scope: Scope, send: Send, message: str) -> None:
        refuse(scope, f"unauthenticated: {message}")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401, "reason": "Unauthorized"})
            return
        if scope["path"].startswith("/graphql"):
            body: dict[str, object] = {
                "errors": [{"message": message, "extensions": {"code": ErrorCode.UNAUTHENTICATED}}]
            }
        else:
            body = {"error": {"code": ErrorCode.UNAUTHENTICATED.rest, "message": message}}
        await send_json(send, 401, body, headers=[(b"www-authenticate", b"Bearer")])
