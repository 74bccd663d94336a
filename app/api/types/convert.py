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
def _doc_plan(
    cls: type, id_field: str | None
) -> tuple[tuple[str, str, bool, bool, Callable[[Any], Any] | None], ...]:
    """`_plan` with each field's key in the document: (key, field name, is an id, takes the default when
    null, coercer); `id` and the seed id field (`id_field`, of a collection) read `_id` (None when absent)."""
    ids = ("id", id_field) if id_field is not None else ()
    return tuple(
        ("_id" if name in ids else name, name, name in ids, default_on_null, coerce)
        for name, default_on_null, coerce in _plan(cls)
    )


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
    if not extra:  # the common case, with the document's keys worked out once per type (`_doc_plan`)
        get = doc.get
        for key, name, is_id, default_on_null, coerce in _doc_plan(
            target, None if spec is None else spec.id_field
        ):
            value = get(key, _ABSENT)
            if value is _ABSENT:
                if not is_id:
                    continue
                value = None
            if value is None:
                if not default_on_null:
                    kwargs[name] = None
            else:
                kwargs[name] = value if coerce is None else coerce(value)
        return cls(**kwargs)
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
