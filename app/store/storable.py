"""What MongoDB can store exactly as a client sent it, and JSON can show again: one check for every write.

Client JSON can carry things BSON or a later JSON read cannot: an unpaired surrogate (`"\\ud800"`, not
UTF-8), a NUL in an object key, an integer beyond 64 bits, NaN or Infinity (stored, then every read of the
document would be invalid JSON), or nesting deep enough to exhaust a recursive encoder. `check_storable`
refuses them with the path of the offending value; REST, GraphQL and the event recorders each turn that
into their own error shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import bson

MAX_DEPTH = 32  # well below BSON's own limit (100), which would otherwise surface as a driver error
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class Unstorable(ValueError):
    """A value that cannot be stored as sent; `path` says where it is."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{message} at {path}")
        self.path = path


def check_storable(value: Any, path: str = "body", max_depth: int = MAX_DEPTH) -> None:
    """Refuse `value` if MongoDB could not store it as sent (see the module docstring). Iterative, so a
    hostile nesting depth cannot exhaust the stack here."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > max_depth:
            raise Unstorable(f"nested deeper than {max_depth} levels", where)
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise Unstorable("a number that is not finite", where)
        elif isinstance(item, int):
            if not _INT64_MIN <= item <= _INT64_MAX:
                raise Unstorable("an integer outside the 64-bit range", where)
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, dict):
            for key, v in item.items():
                if not isinstance(key, str):
                    raise Unstorable("an object key that is not a string", where)
                _check_text(key, where)
                if "\x00" in key:
                    raise Unstorable("object keys must not contain NUL", where)
                stack.append((v, f"{where}.{key}", depth + 1))
        elif not _is_bson_scalar(item):
            raise Unstorable(f"a value of type {type(item).__name__}", where)


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether `value` nests lists and objects deeper than `max_depth` (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Unstorable("text with an unpaired surrogate", where) from None


def _is_bson_scalar(item: Any) -> bool:
    # Values the server itself puts in documents (timestamps, ids), never sent as JSON by a client.
    import datetime as dt

    from bson import ObjectId

    return isinstance(item, dt.datetime | ObjectId)


def encoded_size(doc: Mapping[str, Any]) -> int:
    """How many bytes `doc` takes stored (BSON-encoded)."""
    return len(bson.encode(dict(doc)))
