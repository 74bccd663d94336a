"""GraphQL over HTTP as the GraphQL-over-HTTP spec's current draft asks: media types and status codes.

Strawberry's ASGI view runs the operations; `GraphQLOverHTTP` adds what the spec asks of the HTTP
exchange around them (graphql-http's audit, `tests/test_graphql_http.py`, checks it):

- **Content negotiation.** A client that asks for `application/graphql-response+json` (in `Accept`)
  gets it; `application/json` stays the default (no `Accept`, `*/*`, `application/*`) and what legacy
  clients get. An `Accept` that allows neither is answered 406. GraphiQL (`GET` for `text/html`) and
  subscriptions over server-sent events (`Accept: text/event-stream`) are left to Strawberry.
- **Request bodies.** A `POST` must be `application/json` (in UTF-8, the only charset allowed) or it is
  answered 415; its body must be a JSON object, or it is answered 400.
- **Status codes.** A request that fails before execution — a body that is not JSON, no query, a query
  that does not parse or validate, variables that do not fit — is answered 400 with the errors and no
  `data` under `application/graphql-response+json`. Under `application/json` parse, validation and
  variable errors stay 200 with `data: null` (the spec allows it, and existing clients read them so).
  A mutation sent over `GET` is answered 405 (`Allow: POST`), as the spec requires.
- **Errors are GraphQL responses.** Every refusal of the view (400, 405, 406, 415) has the body
  `{"errors": [{"message": "…"}]}` in the negotiated media type (`application/json` for a 406), not
  Strawberry's plain text.
"""

from __future__ import annotations

import asyncio
import json
from contextvars import ContextVar
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, get_operation_ast
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.extensions import MaskErrors
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult, SubscriptionExecutionResult
from strawberry.types.graphql import OperationType

from app.api.context import Context
from app.api.documents import client_key
from app.api.schema import AgentTasksSchema, client_of
from app.domain import ErrorCode
from app.edge import BodyTooLarge, read_capped
from app.store import storable

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"

#: What masked errors say (the schema masks unexpected exceptions with MaskErrors' default message).
_UNEXPECTED = MaskErrors().error_message


#: The `extensions.code` of each refusal of the view, by status (Strawberry's own refusals included).
VIEW_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    406: ErrorCode.NOT_ACCEPTABLE,
    413: ErrorCode.BODY_TOO_LARGE,
    414: ErrorCode.URI_TOO_LONG,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}
#: Longest pause before a client over its document budget is answered 429 (`_check_budget`).
BUDGET_REFUSAL_PAUSE = 1.0
#: Strawberry's refusal of a JSON array (several operations in one request), which this server does not run.
BATCHING_REFUSED = "Batching is not enabled"

#: The `Content-Type`s of nearly every POST, accepted as they are (lower-cased) without parsing them.
_PLAIN_JSON = frozenset({JSON, f"{JSON}; charset=utf-8", f"{JSON};charset=utf-8"})

#: The request body `_check_body` read and parsed, with what it parsed to: Strawberry's `decode_json`
#: then answers from it instead of parsing the body a second time (each request runs in its own task,
#: hence its own copy of the context).
_PARSED_BODY: ContextVar[tuple[bytes, Any] | None] = ContextVar("parsed_graphql_body", default=None)


def encode_response(data: object) -> bytes:
    """A GraphQL response as JSON bytes: orjson (several times the standard library's speed on a big tree),
    or `json.dumps` for what orjson refuses (integers past 64 bits, lone surrogates in strings)."""
    try:
        return orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(data, separators=(",", ":")).encode()


class RequestRefused(HTTPException):
    """A refusal of the view with headers of its own (`Allow` for a 405)."""

    def __init__(
        self,
        status_code: int,
        reason: str,
        headers: dict[str, str] | None = None,
        code: ErrorCode | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status_code, reason)
        self.headers = headers or {}
        self.code = code
        self.extensions = extensions or {}


def view_code(exc: HTTPException) -> ErrorCode:
    """The machine-readable code of a refusal of the view."""
    if isinstance(exc, RequestRefused) and exc.code:
        return exc.code
    if exc.reason == BATCHING_REFUSED:
        return ErrorCode.BATCHING_NOT_ENABLED
    return VIEW_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)


def negotiate(accept: str | None) -> str | None:
    """The media type to answer in for this `Accept` header: `application/graphql-response+json`,
    `application/json`, or None when the header allows neither.

    Each candidate takes the quality of the most specific range that matches it (RFC 9110 §12.5.1);
    the higher quality wins. At equal quality a range naming the type outright beats a wildcard; when
    both are named, the spec's own media type wins, and when both come from a wildcard (`*/*`,
    `application/*`), `application/json`, what a client that names neither expects.
    """
    if accept is None or not accept.strip():
        return JSON
    ranges: list[tuple[str, str, float]] = []
    for part in accept.split(","):
        media, *params = part.split(";")
        media = media.strip().lower()
        if media == "*":  # a common shorthand for */*
            media = "*/*"
        main, slash, sub = media.partition("/")
        if not slash:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        ranges.append((main, sub, quality))

    best: tuple[float, int, bool] | None = None
    chosen: str | None = None
    for candidate in (GRAPHQL_RESPONSE_JSON, JSON):
        main, _, sub = candidate.partition("/")
        matches = [
            (2 if (r_main, r_sub) == (main, sub) else 1 if r_sub == "*" else 0, quality)
            for r_main, r_sub, quality in ranges
            if (r_main, r_sub) in ((main, sub), (main, "*"), ("*", "*"))
        ]
        if not matches:
            continue
        specificity, quality = max(matches)
        if quality <= 0:
            continue
        preferred = candidate == GRAPHQL_RESPONSE_JSON if specificity == 2 else candidate == JSON
        key = (quality, specificity, preferred)
        if best is None or key > best:
            best, chosen = key, candidate
    return chosen


def request_error_status(result: ExecutionResult) -> int | None:
    """The status of a result that failed before execution began (400; 500 if the server itself failed
    there), or None for a result of execution.

    Nothing executed when `data` is null and no error has a path: parse and validation errors,
    variables that could not be coerced, and an unknown or ambiguous operation carry no path, whereas a
    field error that nulled the whole `data` always has one.
    """
    if result.data is not None or not result.errors:
        return None
    if any(error.path is not None for error in result.errors):
        return None
    if any((error.extensions or {}).get("code") == ErrorCode.QUERY_TIMEOUT for error in result.errors):
        return None  # the query ran and was cancelled at its deadline: an execution result
    if all(error.message == _UNEXPECTED for error in result.errors):
        return 500
    codes = {(error.extensions or {}).get("code") for error in result.errors}
    if ErrorCode.UNAUTHENTICATED in codes:  # refused by the scope check (app/api/access.py), nothing ran
        return 401
    if ErrorCode.FORBIDDEN in codes:
        return 403
    if ErrorCode.RATE_LIMITED in codes:
        return 429
    return 400


def error_response(
    status: int,
    message: str,
    media_type: str,
    headers: dict[str, str],
    code: ErrorCode = ErrorCode.BAD_REQUEST,
    extensions: dict[str, Any] | None = None,
) -> Response:
    """A refusal as a GraphQL response: `{"errors": [{"message": …, "extensions": {"code": …}}]}`, no
    `data`."""
    body = {"errors": [{"message": message, "extensions": {**(extensions or {}), "code": code}}]}
    response = JSONResponse(body, status_code=status, headers=headers)
    response.headers["content-type"] = f"{media_type}; charset=utf-8"
    response.headers["vary"] = "Accept"
    return response


class GraphQLOverHTTP(GraphQL[Context, None]):
    """Strawberry's ASGI view, speaking GraphQL over HTTP as the spec's draft asks (see the module).

    Sizes are bounded before Strawberry sees a request: a POST body over `max_body_bytes` is refused 413
    from its `Content-Length`, or as soon as the bytes streamed in pass the limit; a GET query string over
    `max_url_bytes` is refused 414. A body (or GET `variables`/`extensions`) that is not JSON or is nested
    deeper than `max_json_depth` is refused 400 (`JSON_TOO_DEEP`)."""

    max_body_bytes = 1024 * 1024
    max_url_bytes = 32 * 1024
    max_json_depth = 64

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        media_type = JSON
        try:
            media_type = self._negotiate(request)
            request.state.graphql_media_type = media_type
            await self._check_body(request)
            response = await self.run(request)
        except HTTPException as exc:
            headers = exc.headers if isinstance(exc, RequestRefused) else {}
            message = exc.reason
            if message == BATCHING_REFUSED:
                message = f"{BATCHING_REFUSED}: send one operation per request (a JSON object, not an array)."
            extensions = exc.extensions if isinstance(exc, RequestRefused) else None
            response = error_response(
                exc.status_code, message, media_type, headers, view_code(exc), extensions
            )
            scope.setdefault("state", {})["refusal"] = exc.reason  # for the edge's log line
        await response(scope, receive, send)

    def _negotiate(self, request: Request) -> str:
        """The media type to answer in, or a 406 when `Accept` allows none the view speaks."""
        if self.should_render_graphql_ide(self.request_adapter_class(request)):
            return JSON  # GraphiQL: Strawberry answers with the page
        if self._get_stream_transport_from_headers(request.headers) is not None:
            return JSON  # a subscription over server-sent events: Strawberry streams it
        accept = request.headers.get("accept")
        media_type = negotiate(accept)
        if media_type is None:
            raise RequestRefused(
                406, f"This endpoint answers in {GRAPHQL_RESPONSE_JSON} or {JSON}; Accept was {accept!r}."
            )
        return media_type

    async def _check_body(self, request: Request) -> None:
        """A POST must carry a JSON object in UTF-8: 415 for another media type, 413 over the size limit,
        400 for another body. A GET's query string is bounded and its JSON parameters checked alike."""
        if request.method != "POST":
            # The server's HTTP protocol refuses longer URLs before they get here (app/edge.py); this
            # holds the limit where the app is served another way (tests, another ASGI server).
            if len(request.scope.get("query_string", b"")) > self.max_url_bytes:
                raise RequestRefused(
                    414, f"The query string is longer than MAX_URL_BYTES ({self.max_url_bytes} bytes)."
                )
            for name in ("variables", "extensions"):
                if raw := request.query_params.get(name):
                    self._check_json(raw, name)
            await self._check_budget(request, request.query_params.get("query"))
            return
        header = request.headers.get("content-type")
        if header is None or header.lower() not in _PLAIN_JSON:  # else no need to parse it (email.message)
            content_type, params = parse_content_type(header or "")
            charset = params.get("charset", "utf-8").strip("'\"").lower()
            if content_type.lower() != JSON or charset not in ("utf-8", "utf8"):
                raise RequestRefused(
                    415, f"A GraphQL POST must be sent as {JSON} in UTF-8; Content-Type was {header!r}."
                )
        # Strawberry reads the same body afterwards: Starlette keeps it on the request.
        try:
            body = await read_capped(request, self.max_body_bytes)
        except BodyTooLarge as exc:
            raise RequestRefused(413, f"The request body is {exc}.") from None
        request._body = body
        if not body.strip():
            raise RequestRefused(400, 'The request body is empty: send a JSON object {"query": ...}.')
        value = self._check_json(body, "body")
        if not isinstance(value, dict | list):
            raise RequestRefused(400, 'The request body must be a JSON object {"query": ...}.')
        _PARSED_BODY.set((body, value))
        if isinstance(value, dict):
            await self._check_budget(request, value.get("query"))

    def decode_json(self, data: str | bytes) -> object:
        """The body `_check_body` parsed already, else Strawberry's parsing."""
        parsed = _PARSED_BODY.get()
        if parsed is not None and parsed[0] is data:
            return parsed[1]
        return super().decode_json(data)

    async def _check_budget(self, request: Request, text: object) -> None:
        """A new document from a client over its preparation budget (`documents.DocumentPreparer`) is
        refused here, 429, before Strawberry reads the request again, and only after a pause of up to
        `BUDGET_REFUSAL_PAUSE` seconds (no longer than its `Retry-After`): a client flooding the server with
        new documents is answered at the pace it should retry at, and costs the event loop next to nothing
        while it waits."""
        documents = self.schema.documents if isinstance(self.schema, AgentTasksSchema) else None
        if documents is None or not isinstance(text, str):
            return
        principal = getattr(request.state, "principal", None)
        refused = documents.over_budget(
            text, client_key(principal, request.client.host if request.client else None)
        )
        if refused is not None:
            extensions = dict(refused.extensions or {})
            extensions.pop("code", None)
            await asyncio.sleep(min(float(extensions["retryAfter"]), BUDGET_REFUSAL_PAUSE))
            raise RequestRefused(
                429,
                refused.message,
                {"Retry-After": str(extensions["retryAfter"])},
                code=ErrorCode.RATE_LIMITED,
                extensions=extensions,
            )

    def _check_json(self, raw: str | bytes, name: str) -> Any:
        """The parsed JSON, refused (400) when it is not JSON or nests deeper than `max_json_depth`. What
        MongoDB could not store (NUL in keys, lone surrogates, NaN…) is left to the services, which name
        the argument at fault in a ValidationError."""
        try:
            value = json.loads(raw)
        except RecursionError:
            raise RequestRefused(
                400,
                f"The {name} is nested deeper than MAX_JSON_DEPTH ({self.max_json_depth} levels).",
                code=ErrorCode.JSON_TOO_DEEP,
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RequestRefused(
                400, f"The {name} is not valid JSON: {reason}.", code=ErrorCode.BAD_JSON
            ) from None
        if storable.too_deep(value, self.max_json_depth):
            raise RequestRefused(
                400,
                f"The {name} is nested deeper than MAX_JSON_DEPTH ({self.max_json_depth} levels).",
                code=ErrorCode.JSON_TOO_DEEP,
            )
        return value

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        # Carried to `create_response`, which sees only the sub-response.
        sub_response.media_type = getattr(request.state, "graphql_media_type", JSON)
        return sub_response

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        """A mutation sent over `GET` for a stream (`Accept: text/event-stream`) is refused 405 like a plain
        one; Strawberry would answer it inside the stream, as an unexpected error."""
        if (
            request_adapter.method == "GET"
            and isinstance(request_data, GraphQLRequestData)
            and request_data.protocol != "http"
            and request_data.query
            and await self._operation_type(request_data, context) is OperationType.MUTATION
        ):
            raise RequestRefused(
                405, "Mutations are not allowed over GET: send them with POST.", {"Allow": "POST"}
            )
        return await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )

    async def _operation_type(
        self, request_data: GraphQLRequestData, context: Context
    ) -> OperationType | None:
        """The type of the operation a request asks for, from the schema's prepared documents (it is
        prepared once; the execution that follows finds it ready); None if it cannot be told."""
        schema = self.schema
        if not isinstance(schema, AgentTasksSchema) or schema.documents is None or not request_data.query:
            return None
        try:
            prepared = await schema.documents.prepare(request_data.query, schema._schema, client_of(context))
        except GraphQLError:
            return None  # over the client's budget: the execution says so
        if prepared.document is None:
            return None
        operation = get_operation_ast(prepared.document, request_data.operation_name)
        return None if operation is None else OperationType(operation.operation.value)

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        try:
            result = await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
        except HTTPException as exc:
            if request_adapter.method == "GET" and isinstance(exc.__cause__, InvalidOperationTypeError):
                raise RequestRefused(405, f"{exc.reason}: send them with POST.", {"Allow": "POST"}) from exc
            raise
        for error in result.errors or ():
            retry_after = (error.extensions or {}).get("retryAfter")
            if retry_after is not None:  # rate limited (app/ratelimit.py): say when to come back
                sub_response.headers["Retry-After"] = str(retry_after)
        if sub_response.media_type == GRAPHQL_RESPONSE_JSON:
            status = request_error_status(result)
            if status is not None:
                sub_response.status_code = status
                request.state.graphql_request_error = True
        return result

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        if getattr(request.state, "graphql_request_error", False):
            response.pop("data", None)  # the spec: a request error has no `data` entry
        return response

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        # Strawberry's `create_response`, with the body encoded by orjson (`encode_json` stays Strawberry's:
        # WebSocket messages must stay text).
        response = Response(encode_response(response_data), status_code=200, media_type=JSON)
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        response.headers["content-type"] = f"{sub_response.media_type or JSON}; charset=utf-8"
        response.headers["vary"] = "Accept"
        return response
