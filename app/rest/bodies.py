"""Reading a REST request body: size cap, JSON parsing, and the checks that keep a value storable.

A body must be JSON (`NaN`/`Infinity` refused, as for filters) and at most `MAX_BODY_BYTES`, counted
while it streams in, so reading stops at the limit. Before any model sees it, `check_storable` walks it
once and refuses what BSON cannot hold — integers outside 64 bits, strings with lone surrogates, keys
with NUL, nesting deeper than MongoDB allows — so such a value is a 400 naming where it is, never a
driver error at write time.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from app.rest.errors import ApiError
from app.store import storable
from app.store.filters import FilterError, parse_filter_json

MAX_BODY_BYTES = 1024 * 1024
#: MongoDB refuses documents nested deeper than 100 levels; a request body stays well below that.
MAX_BODY_DEPTH = 32


async def read_json(request: Request) -> Any:
    """The parsed body, or `None` when the body is empty."""
    raw = await _read_capped(request)
    if not raw.strip():
        return None
    try:
        value = parse_filter_json(raw)
    except FilterError as exc:
        # parse_filter_json words it for filters; for a body the problem is the body.
        raise ApiError("bad_json", str(exc).replace("filter is not", "the body is not", 1)) from exc
    check_storable(value)
    return value


async def _read_capped(request: Request) -> bytes:
    """The body, refused as soon as it exceeds `MAX_BODY_BYTES`: a chunked body without a length (or
    with a false one) is never read whole into memory first."""
    too_large = ApiError("payload_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def check_storable(value: Any, path: str = "body") -> None:
    """Refuse a JSON value MongoDB could not store (app/store/storable.py), as a 400 naming where it is."""
    try:
        storable.check_storable(value, path, MAX_BODY_DEPTH)
    except storable.Unstorable as exc:
        raise ApiError("bad_json", f"the body holds {exc}", field=exc.path) from None
