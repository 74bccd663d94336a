"""Reading a REST request body: size cap, JSON parsing, and the checks that keep a value storable.

A body must be JSON (`NaN`/`Infinity` refused, as for filters) sent as `application/json` (checked for
every POST and PATCH in `errors.json_errors`) and at most `MAX_BODY_BYTES` (the setting), refused from
`Content-Length` before reading, and otherwise counted while it streams in, so reading stops at the limit.
Before any model sees it, `check_storable` walks it
once and refuses what BSON cannot hold — integers outside 64 bits, strings with lone surrogates, keys
with NUL, nesting deeper than MongoDB allows — so such a value is a 400 naming where it is, never a
driver error at write time.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from app.domain import ErrorCode
from app.edge import BodyTooLarge, read_capped
from app.rest.errors import ApiError
from app.store import storable
from app.store.filters import FilterError, JsonTooDeep, parse_filter_json


async def read_json(request: Request) -> Any:
    """The parsed body, or `None` when the body is empty."""
    settings = request.app.state.agent_tasks.settings
    try:
        raw = await read_capped(request, settings.max_body_bytes)
    except BodyTooLarge as exc:
        raise ApiError(ErrorCode.PAYLOAD_TOO_LARGE, f"the body is {exc}", limit=exc.limit) from None
    if not raw.strip():
        return None
    try:
        value = parse_filter_json(raw)
    except JsonTooDeep:
        depth = settings.max_json_depth
        raise ApiError(
            ErrorCode.BAD_JSON, f"the body is nested deeper than MAX_JSON_DEPTH ({depth} levels)", limit=depth
        ) from None
    except FilterError as exc:
        # parse_filter_json words it for filters; for a body the problem is the body.
        raise ApiError(ErrorCode.BAD_JSON, str(exc).replace("filter is not", "the body is not", 1)) from exc
    check_storable(value, max_depth=settings.max_json_depth)
    return value


def check_storable(value: Any, path: str = "body", max_depth: int = storable.MAX_DEPTH) -> None:
    """Refuse a JSON value MongoDB could not store (app/store/storable.py), as a 400 naming where it is."""
    try:
        storable.check_storable(value, path, max_depth)
    except storable.Unstorable as exc:
        raise ApiError(ErrorCode.BAD_JSON, f"the body holds {exc}", field=exc.path) from None
