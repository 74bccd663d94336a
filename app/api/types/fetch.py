"""Loading nested objects through the request's loaders and building their Strawberry types.

Field resolvers call these two functions and nothing else, so every nested lookup is batched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import strawberry

from app.api.types.convert import from_doc
from app.store.collections import CollectionSpec

T = TypeVar("T")


async def load_one(info: strawberry.Info, cls: type[T], spec: CollectionSpec, key: Any) -> T | None:
    """The object with seed id `key`, or None when there is no such document (or no key)."""
    if key is None:
        return None
    doc = await info.context.loaders.by_collection(spec).load(key)
    return None if doc is None else from_doc(cls, spec, doc)


async def load_many(
    info: strawberry.Info, cls: type[T], spec: CollectionSpec, keys: Iterable[Any]
) -> list[T]:
    """The objects with these seed ids, in the order given; ids with no document are left out."""
    keys = list(keys)
    if not keys:
        return []
    docs = await info.context.loaders.by_collection(spec).load_many(keys)
    return [from_doc(cls, spec, doc) for doc in docs if doc is not None]
