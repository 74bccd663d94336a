"""Opaque, signed pagination cursors, and the keyset conditions that resume a sorted list after one.

A cursor is `urlsafe-base64(extended-JSON payload + HMAC-SHA256 tag truncated to 16 bytes)`, without
padding. Extended JSON (`bson.json_util`, relaxed mode) keeps datetimes and ObjectIds intact, so the
payload's sort value compares in MongoDB exactly like the stored one. Clients cannot forge or alter a
cursor; they can only hand back one this server (or a server sharing its secret) issued.

Keyset pagination: a page is sorted by `(field, _id)` and the cursor holds the last document's sort value
and `_id`; `after_filter` selects the documents strictly after it, minding that MongoDB sorts missing
and null values first in ascending order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

__all__ = ["CursorCodec", "CursorError", "SortSpec", "after_filter", "cursor_payload", "sort_keys"]

_TAG_BYTES = 16
_MAX_CURSOR_CHARS = 4096
#: Domain separation: a tag made for something else with the same secret is never a valid cursor tag.
_TAG_CONTEXT = b"agent-tasks cursor v1\x00"
_JSON_OPTIONS = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True, tzinfo=UTC)

NOT_OURS = "cursor was not issued by this server"
MALFORMED = "cursor is malformed; start again without `after`"
OTHER_ORDER = "cursor belongs to another ordering; start again without `after`"


class CursorError(ValueError):
    """A cursor that cannot be used: forged, altered, garbled, or made for another sort order."""


class CursorCodec:
    """Signs payloads into opaque cursor strings and checks them on the way back."""

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray) or not secret:
            raise ValueError("the cursor secret must be non-empty bytes")
        self._secret = bytes(secret)

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._secret, _TAG_CONTEXT + body, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, payload: dict[str, Any]) -> str:
        """The cursor for `payload` (values: str, int, float, bool, None, datetime, ObjectId, …)."""
        body = json_util.dumps(payload, json_options=_JSON_OPTIONS, separators=(",", ":"), sort_keys=True)
        raw = body.encode("utf-8")
        return base64.urlsafe_b64encode(raw + self._tag(raw)).rstrip(b"=").decode("ascii")

    def decode(self, cursor: str) -> dict[str, Any]:
        """The payload of a cursor this codec issued; `CursorError` for anything else."""
        if not isinstance(cursor, str) or not cursor or len(cursor) > _MAX_CURSOR_CHARS:
            raise CursorError(NOT_OURS)
        try:
            data = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CursorError(NOT_OURS) from exc
        # Only the canonical spelling is accepted (unused low bits of the last character must be zero).
        if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != cursor or len(data) <= _TAG_BYTES:
            raise CursorError(NOT_OURS)
        body, tag = data[:-_TAG_BYTES], data[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise CursorError(NOT_OURS)
        try:
            payload = json_util.loads(body.decode("utf-8"), json_options=_JSON_OPTIONS)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CursorError(MALFORMED) from exc
        if not isinstance(payload, dict):
            raise CursorError(MALFORMED)
        return payload


@dataclass(frozen=True)
class SortSpec:
    """A list's order: one stored field (e.g. `_id` or `created_at`) and a direction, ties broken by `_id`."""

    field: str
    direction: int

    def __post_init__(self) -> None:
        if self.direction not in (1, -1) or isinstance(self.direction, bool):
            raise ValueError(f"sort direction must be 1 or -1, got {self.direction!r}")
        if not self.field:
            raise ValueError("sort field must not be empty")

    @property
    def tag(self) -> str:
        """How a cursor records the order it was made for."""
        return f"{self.field}:{self.direction}"


def sort_keys(sort: SortSpec) -> list[tuple[str, int]]:
    """The MongoDB sort: the field, then `_id` in the same direction so the order is total."""
    if sort.field == "_id":
        return [("_id", sort.direction)]
    return [(sort.field, sort.direction), ("_id", sort.direction)]


def cursor_payload(sort: SortSpec, doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the cursor of `doc` holds: the order, the document's sort value (None if missing) and `_id`."""
    return {"s": sort.tag, "v": _get_path(doc, sort.field), "i": doc["_id"]}


def after_filter(sort: SortSpec, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The MongoDB condition selecting the documents strictly after the cursor's document in `sort` order.

    MongoDB sorts a missing or null field before every other value when ascending (after them when
    descending); `{field: None}` matches both missing and null, `{field: {"$ne": None}}` neither. Range
    operators never match null (type bracketing), hence the explicit null branches.
    """
    if not isinstance(payload, Mapping) or "s" not in payload or "i" not in payload:
        raise CursorError(MALFORMED)
    if payload["s"] != sort.tag:
        raise CursorError(OTHER_ORDER)
    last_id = payload["i"]
    after = "$gt" if sort.direction == 1 else "$lt"
    if sort.field == "_id":
        return {"_id": {after: last_id}}
    field, value = sort.field, payload.get("v")
    if value is None:
        if sort.direction == 1:
            return {"$or": [{field: None, "_id": {"$gt": last_id}}, {field: {"$ne": None}}]}
        return {field: None, "_id": {"$lt": last_id}}
    if sort.direction == 1:
        return {"$or": [{field: {"$gt": value}}, {field: value, "_id": {"$gt": last_id}}]}
    return {"$or": [{field: {"$lt": value}}, {field: value, "_id": {"$lt": last_id}}, {field: None}]}


def _get_path(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
