"""Loading nested objects through the request's loaders and building their Strawberry types.

Field resolvers go through these functions and nothing else, so every nested lookup is batched.

Speed: a nested async resolver costs an asyncio task and several awaits per object, which dominates a
big tree. So the list resolvers `prefetch` what their items' selection asks for (states, outputs, and
the states their dependencies point at) a level at a time, and the item resolvers use `resolve_one`: a
plain function that answers from the loader's cache when the document is already there, and only
otherwise returns the awaitable (graphql-core awaits either). The MongoDB cost is unchanged: one batched
`find` per collection per level.

Fairness: the items of a prefetched list are then completed without an await, and the lists of one
level (every sub-task's `behaviorTasks`) are woken by the same batch, in one turn of the event loop: a
20×25 tree was one ~300 ms stretch during which no other client was served. `paced` hands the items to
graphql-core as an async iterator that gives the loop back every `PACE` items, so the lists of a level
advance side by side a few items per turn and other requests are served in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, TypeVar

import strawberry
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from app.api.types.convert import from_doc
from app.store import collections as c
from app.store.collections import CollectionSpec

T = TypeVar("T")

#: Items of a list completed between two turns of the event loop (see `paced`).
PACE = 5


async def paced(items: list[T]) -> AsyncIterator[T]:
    """The items, giving the event loop a turn every `PACE` items (graphql-core completes an async
    iterator item by item)."""
    for index, item in enumerate(items):
        if index and index % PACE == 0:
            await asyncio.sleep(0)
        yield item


async def load_one(info: strawberry.Info, cls: type[T], spec: CollectionSpec, key: Any) -> T | None:
    """The object with seed id `key`, or None when there is no such document (or no key)."""
    if key is None:
        return None
    doc = await info.context.loaders.by_collection(spec).load(key)
    return None if doc is None else from_doc(cls, spec, doc)


def resolve_one(
    info: strawberry.Info, cls: type[T], spec: CollectionSpec, key: Any
) -> T | Awaitable[T | None] | None:
    """Like `load_one`, but synchronous when the document is already loaded (see the module docstring)."""
    if key is None:
        return None
    known, doc = info.context.loaders.by_collection(spec).peek(key)
    if known:
        return None if doc is None else from_doc(cls, spec, doc)
    return load_one(info, cls, spec, key)


async def load_many(
    info: strawberry.Info, cls: type[T], spec: CollectionSpec, keys: Iterable[Any]
) -> list[T]:
    """The objects with these seed ids, in the order given; ids with no document are left out."""
    keys = list(keys)
    if not keys:
        return []
    docs = await info.context.loaders.by_collection(spec).load_many(keys)
    return [from_doc(cls, spec, doc) for doc in docs if doc is not None]


def selected_names(info: strawberry.Info) -> set[str]:
    """Names of the fields selected on the items of this field (through fragments too)."""
    names: set[str] = set()
    pending: list[Any] = list(info.selected_fields[0].selections) if info.selected_fields else []
    while pending:
        node = pending.pop()
        if isinstance(node, SelectedField):
            names.add(node.name)
        elif isinstance(node, FragmentSpread | InlineFragment):
            pending.extend(node.selections)
    return names


async def prefetch(info: strawberry.Info, ids: list[Any], output_spec: CollectionSpec) -> None:
    """Load, in batches, the states and outputs of these tasks when the query selects them, and the
    states their dependencies point at (so `dependencies { satisfied state }` needs no await either)."""
    if not ids:
        return
    names = selected_names(info)
    loaders = info.context.loaders
    jobs = []
    if "state" in names:
        jobs.append(loaders.state.load_many(ids))
    if "output" in names:
        jobs.append(loaders.by_collection(output_spec).load_many(ids))
    if not jobs:
        return
    results = await asyncio.gather(*jobs)
    if "state" in names:
        dep_ids = {
            d.get("task_id")
            for state in results[0]
            if state
            for d in state.get("dependencies") or []
            if isinstance(d, dict) and d.get("task_id")
        }
        if dep_ids:
            await loaders.state.load_many(list(dep_ids))


__all__ = ["c", "load_many", "load_one", "prefetch", "resolve_one", "selected_names"]
