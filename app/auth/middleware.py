"""The authentication middleware: `Authorization: Bearer <secret>` → the request's Principal.

Pure ASGI, so streaming answers (SSE) and WebSocket upgrades pass through untouched. Secrets starting
`atk_` are API keys; any other bearer token goes to the pluggable JWT verifier. Without credentials the
request acts as OPEN (open mode) or as ANONYMOUS with AUTH_ANONYMOUS_SCOPES (keys mode). Bad credentials
are refused with 401 in the shape of the route (GraphQL's errors or REST's error object), even in open
mode. The principal is put on the scope state and in `current_principal` for the request's duration.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.keys import PREFIX, KeyService
from app.domain import Scope as AccessScope
from app.edge import refuse, send_json
from app.principal import ANONYMOUS, OPEN, AuthenticationError, Principal, acting_as
from app.resources import AppState
from app.settings import Settings

JwtVerifier = Callable[[str], Awaitable[Principal]]


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

    def __init__(self, settings: Settings, keys: KeyService, jwt: JwtVerifier | None = None) -> None:
        self.settings = settings
        self.keys = keys
        self.jwt = jwt

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

    async def authenticate(self, token: str | None) -> Principal:
        if token is None:
            return self.anonymous()
        if token.startswith(PREFIX):
            return await self.keys.authenticate(token)
        if self.jwt is None:
            raise AuthenticationError("not an API key and no JWT issuer is configured")
        return await self.jwt(token)


def authenticator(state: AppState, jwt: JwtVerifier | None = None) -> Authenticator:
    """The application's authenticator (made once, on first use: the state is opened by the lifespan,
    after the middleware stack is built)."""
    auth = state.extras.get("authenticator")
    if auth is None:
        auth = Authenticator(state.settings, KeyService(state.store.db), jwt)
        state.extras["authenticator"] = auth
    return auth


class AuthMiddleware:
    """Authenticate every HTTP request and WebSocket upgrade (see the module docstring)."""

    def __init__(self, app: ASGIApp, jwt: JwtVerifier | None = None) -> None:
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
            await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, message: str) -> None:
        refuse(scope, f"unauthenticated: {message}")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401, "reason": "Unauthorized"})
            return
        if scope["path"].startswith("/graphql"):
            body: dict[str, object] = {
                "errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]
            }
        else:
            body = {"error": {"code": "unauthenticated", "message": message}}
        await send_json(send, 401, body, headers=[(b"www-authenticate", b"Bearer")])
