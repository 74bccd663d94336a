"""Turning a stored document into a Strawberry object, generically, for every document type.

Documents may have been written by other programs in the seeds' shape: fields can be missing, null
where the seed has a default, timestamps can be ISO strings, statuses and priorities capitalised.
`from_doc` tolerates all of that, so such documents read exactly like the server's own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

from app.domain import Status, parse_status
from app.lifecycle.expiry import present
from app.store.collections import AGENT_TASK_STATES, CollectionSpec

T = TypeVar("T")


def as_datetime(value: Any) -> dt.datetime | None:
    """A timezone-aware datetime from a BSON date or an ISO-8601 string; None for anything else."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def _enum_coercer(enum: type[Enum]) -> Callable[[Any], Any]:
    if enum is Status:  # foreign spellings ("canceled", "In-Progress") read as the state machine reads them
        return lambda value: value if value is None else parse_status(value)
    by_value = {str(m.value).lower(): m for m in enum}

    def coerce(value: Any) -> Any:
        if value is None or isinstance(value, enum):
            return value
        return by_value.get(str(value).lower().replace(" ", "_"))

    return coerce


def _coercer(annotation: Any) -> Callable[[Any], Any] | None:
    """How to coerce a stored value for a field annotated `annotation` (None: take it as it is)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = (
        args[0]
        if len(args) == 1 and typing.get_origin(annotation) in (typing.Union, _UnionType)
        else annotation
    )
    if isinstance(base, type) and issubclass(base, Enum):
        return _enum_coercer(base)
    if hasattr(base, "__strawberry_definition__"):
        # A sub-document (e.g. `last_error`): built field by field, like a document.
        return lambda v: from_subdoc(base, v) if isinstance(v, Mapping) else None
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        if hasattr(item, "__strawberry_definition__"):
            return lambda v: (
                [from_subdoc(item, x) for x in v if isinstance(x, Mapping)] if isinstance(v, list) else []
            )
    if base is dt.datetime:
        return as_datetime
    if base is int:
        return lambda v: round(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
    if base is float:
        return lambda v: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
    return None


_UnionType = type(int | None)


def _type_namespace(cls: type) -> dict[str, Any]:
    import sys

    return vars(sys.modules[cls.__module__])


@functools.cache
def _plan(cls: type) -> tuple[tuple[str, bool, Callable[[Any], Any] | None], ...]:
    """(field name, takes the default when null, coercer) for every stored field of a Strawberry type."""
    hints = typing.get_type_hints(cls, localns=_type_namespace(cls))
    plan = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        nullable = type(None) in typing.get_args(hints[f.name])
        plan.append((f.name, has_default and not nullable, _coercer(hints[f.name])))
    return tuple(plan)


_ABSENT = object()


@functools.cache
def _builder(cls: type, id_field: str | None) -> Callable[[Mapping[str, Any]], Any]:
    """A function building `cls` from a document as `from_doc` does, written out field by field once per
    type (as `dataclasses` writes `__init__`): a state has ~35 fields, and a loop over a plan of them
    cost ~20 µs per document, a large share of a big tree's time. `id` and the seed id field (`id_field`,
    of a collection) read `_id` (None when absent); an absent field keeps its default, and so does a null
    one where the field has a default and is not nullable; coercers come from `_plan`."""
    ids = ("id", id_field) if id_field is not None else ()
    namespace: dict[str, Any] = {"cls": cls, "ABSENT": _ABSENT}
    lines = ["def build(doc):", "    get = doc.get", "    kwargs = {}"]
    for index, (name, default_on_null, coerce) in enumerate(_plan(cls)):
        key = "_id" if name in ids else name
        convert = "value"
        if coerce is not None:
            namespace[f"coerce_{index}"] = coerce
            convert = f"coerce_{index}(value)"
        lines.append(f"    value = get({key!r}, {'None' if name in ids else 'ABSENT'})")
        lines.append("    if value is None:")
        lines.append("        pass" if default_on_null else f"        kwargs[{name!r}] = None")
        lines.append("    elif value is not ABSENT:")
        lines.append(f"        kwargs[{name!r}] = {convert}")
    lines.append("    return cls(**kwargs)")
    exec("\n".join(lines), namespace)  # our own code, from the type's own field names
    build: Callable[[Mapping[str, Any]], Any] = namespace["build"]
    return build


def from_subdoc(cls: type[T], doc: Mapping[str, Any]) -> T:
    """Build a sub-document type (no id) from a dict, with the same tolerance as `from_doc`."""
    return from_doc(cls, None, doc)


def from_doc(cls: type[T], spec: CollectionSpec | None, doc: Mapping[str, Any], **extra: Any) -> T:
    """Build `cls` from `doc`: `id` and the seed id field come from `_id`; absent or null → the default.

    A task state past its `expires_at` reads as expired (failed) even before the sweeper has written it.
    """
    if spec is AGENT_TASK_STATES:
        # The one place every read of a state goes through (by id, batched, lists, mutation results).
        doc = present(doc)
    kwargs: dict[str, Any] = {}
    target: type = cls  # (as `type`: mypy cannot tell that every `type[T]` is hashable, as `_plan` needs)
    if not extra:  # the common case: straight-line code made once per type (`_builder`)
        built: T = _builder(target, None if spec is None else spec.id_field)(doc)
        return built
    for name, default_on_null, coerce in _plan(target):
        if name in extra:
            kwargs[name] = extra[name]
            continue
        if spec is not None and (name == "id" or name == spec.id_field):
            value = doc.get("_id")
        elif name in doc:
            value = doc[name]
        else:
            continue
        if value is None and default_on_null:
            continue
        kwargs[name] = coerce(value) if coerce is not None and value is not None else value
    return cls(**kwargs)
