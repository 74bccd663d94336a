"""REST errors: the one place where a refusal becomes an HTTP status and a JSON error body.

Every REST answer that is not a success is `{"error": {"code": ..., "message": ..., ...}}`. The services'
refusals (`app/lifecycle/errors.py`), refused filters and cursors, and the REST layer's own checks of
bodies and parameters (`ApiError`) are all mapped here, so a status code is decided once:

| refusal | status | code |
|---|---|---|
| `NotFound` | 404 | `not_found` |
| `Refused` (finalized task, forbidden transition) | 409 | `refused` |
| `Conflict` (has children, stale version, depended on) | 409 | `conflict` |
| `Invalid` (a value the services refuse) | 422 | `invalid` |
| `FilterError` | 400 | `bad_filter` |
| `CursorError` | 400 | `bad_cursor` |
| `ApiError` | its own | its own (`bad_json`, `unknown_field`, `page_size_out_of_range`, …) |
| `FilterTooSlow` | 400 | `filter_too_slow` |
| MongoDB unreachable (`failures.classify`) | 503, `Retry-After` | `database_unavailable` |
| a MongoDB operation out of time | 504 | `database_timeout` |
| a POST, PATCH or PUT not sent as JSON | 415 | `unsupported_media_type` |

The last two are logged as one WARNING line, without a traceback. Anything else is logged and answered
500 `internal`, without internals.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.auth.scopes import Forbidden, Unauthenticated, require
from app.domain import ErrorCode, Scope
from app.lifecycle.errors import Conflict, Invalid, NotFound, NotYourAgent, Refused, ServiceError
from app.principal import OPEN, Principal
from app.ratelimit import RateLimited, limiter
from app.rest.documents import RestJSONResponse
from app.store.cursors import CursorError
from app.store.failures import FilterTooSlow, classify, describe, require_database
from app.store.filters import FilterError

logger = logging.getLogger("agent_tasks.rest")

Handler = Callable[[Request], Awaitable[Response]]

#: Every error code the REST API answers with, and its status (the OpenAPI document lists them).
ERROR_CODES: dict[ErrorCode, int] = {
    ErrorCode.BAD_JSON: 400,
    ErrorCode.BAD_FILTER: 400,
    ErrorCode.BAD_CURSOR: 400,
    ErrorCode.BAD_PARAMETER: 400,
    ErrorCode.UNTRUSTED_HOST: 400,
    ErrorCode.PAGE_SIZE_OUT_OF_RANGE: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.REFUSED: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INVALID: 422,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.UNKNOWN_FIELD: 422,
    ErrorCode.FILTER_TOO_SLOW: 400,
    ErrorCode.INTERNAL: 500,
    ErrorCode.DATABASE_UNAVAILABLE: 503,
    ErrorCode.DATABASE_TIMEOUT: 504,
}
#: Seconds a client is asked to wait (`Retry-After`) before retrying when the database is unavailable.
RETRY_AFTER_SECONDS = 1


class ApiError(Exception):
    """A request the REST layer refuses before calling a service; `extra` goes into the error body."""

    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = ERROR_CODES[code]
        self.code = code
        self.message = message
        self.extra = {k: v for k, v in extra.items() if v is not None}


_HEADERS = {"idempotency_key": "Idempotency-Key"}


def body_field(field: str) -> str:
    """A service's field path in the REST body's own terms. Services name fields in the domain's
    snake_case, as the body does, rooted at `input`: `input.sub_tasks[0].parent_task_id` becomes
    `sub_tasks[0].parent_task_id`; arguments that travel as headers are named by their header."""
    if field in _HEADERS:
        return _HEADERS[field]
    return field.removeprefix("input.").removeprefix("input") or "body"


def as_api_error(exc: Exception) -> ApiError | None:
    """The `ApiError` for an expected refusal, or None for a bug."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RateLimited):
        return ApiError(ErrorCode.RATE_LIMITED, exc.message, retry_after=exc.retry_after, limit=exc.limit)
    if isinstance(exc, Unauthenticated):
        return ApiError(ErrorCode.UNAUTHENTICATED, exc.message, required_scope=exc.scope.value)
    if isinstance(exc, Forbidden):
        return ApiError(ErrorCode.FORBIDDEN, exc.message, required_scope=exc.scope.value)
    if isinstance(exc, NotYourAgent):
        return ApiError(ErrorCode.FORBIDDEN, exc.message, agent_name=exc.agent_name)
    if isinstance(exc, NotFound):
        return ApiError(ErrorCode.NOT_FOUND, exc.message, id=exc.id)
    if isinstance(exc, Refused):
        return ApiError(ErrorCode.REFUSED, exc.message, current_status=exc.current_status)
    if isinstance(exc, Conflict):
        return ApiError(ErrorCode.CONFLICT, exc.message, current_version=exc.current_version)
    if isinstance(exc, Invalid) and exc.code == ErrorCode.EMPTY_FILTER:  # a bulk action's filter
        return ApiError(ErrorCode.BAD_FILTER, exc.message, field=exc.field)
    if isinstance(exc, Invalid):
        code = (
            ErrorCode.IDEMPOTENCY_KEY_REUSED
            if exc.code == ErrorCode.IDEMPOTENCY_KEY_REUSED
            else ErrorCode.INVALID
        )
        return ApiError(code, exc.message, field=body_field(exc.field))
    if isinstance(exc, ServiceError):  # pragma: no cover - every ServiceError is one of the above
        return ApiError(ErrorCode.INVALID, exc.message)
    if isinstance(exc, FilterError):
        return ApiError(ErrorCode.BAD_FILTER, str(exc), field=exc.path)
    if isinstance(exc, CursorError):
        return ApiError(ErrorCode.BAD_CURSOR, str(exc), field="after")
    if isinstance(exc, FilterTooSlow):
        return ApiError(ErrorCode.FILTER_TOO_SLOW, str(exc), limit_ms=exc.limit_ms)
    failure = classify(exc)
    if failure is not None:
        return ApiError(failure.code, failure.message)
    return None


def caller(request: Request) -> Principal:
    """The request's principal (the authentication middleware's); open when none was set (an app
    mounted without it, as some tests build)."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else OPEN


def error_response(error: ApiError) -> Response:
    headers: dict[str, str] | None = None
    if error.status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    elif error.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif error.status == 429:
        headers = {"Retry-After": str(error.extra.get("retry_after", 1))}
    return RestJSONResponse(
        {"error": {"code": error.code.rest, "message": error.message, **error.extra}},
        status_code=error.status,
        headers=headers,
    )


def json_errors(handler: Handler, scope: Scope | None = None) -> Handler:
    """Wrap a route handler so that every refusal, and every bug, answers with a JSON error body; with
    `scope`, the caller must hold it (checked first, before the body is looked at)."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            if scope is not None:
                principal = caller(request)
                require(principal, scope, f"{request.method} {request.url.path}")
                state = request.app.state.agent_tasks
                address = request.client.host if request.client else None
                await limiter(state.extras, state.settings, state.store.db).hit(principal, scope, address)
            if request.method in ("POST", "PATCH", "PUT"):
                check_json_media_type(request)
            state = request.app.state.agent_tasks  # fail fast while MongoDB is down (`require_database`)
            await require_database(state.store.db, state.settings.mongodb_server_selection_timeout_seconds)
            return await handler(request)
        except Exception as exc:
            error = as_api_error(exc)
            if error is not None and error.status >= 500:  # the database's state, not a bug: one line
                logger.warning(
                    "%s %s: %s (%s)", request.method, request.url.path, error.code.rest, describe(exc)
                )
            if error is None:
                logger.exception("unexpected error in %s %s", request.method, request.url.path)
                error = ApiError(ErrorCode.INTERNAL, "Unexpected error.")
            else:  # the edge's one log line for this refusal (app/edge.py), no traceback
                request.state.refusal = f"{error.code.rest}: {error.message}"
            return error_response(error)

    return wrapped


def check_json_media_type(request: Request) -> None:
    """POST, PATCH and PUT must say `Content-Type: application/json` (or a `+json` type), with a body or
    without: a browser sends any other type cross-origin without a CORS preflight, so this is what keeps a
    page on another site from writing (CSRF; a PUT is preflighted anyway, and held to the same rule)."""
    header = request.headers.get("content-type", "")
    media_type = header.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"send the request as application/json; Content-Type was {header[:80]!r}",
            field="Content-Type",
        )
