"""Per-request dataloaders: every nested lookup is batched into one `find` per collection per tick.

One generic loader class serves all seven collections (`ById`), keyed by the seed id stored in `_id`;
`EventsByTaskLoader` batches the nested `events` fields of many tasks into one `aggregate`, and
`StatesByParentLoader` the `subtasks` of many task states into one `find`. `Loaders` holds one instance
of each for a single request (or a single subscription event), so no cache ever outlives the request
that filled it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from aiodataloader import DataLoader

from app.api.types.convert import as_datetime
from app.store import collections as c
from app.store.collections import CollectionSpec
from app.store.events import first_events_of_tasks
from app.store.repository import Document, Store


class DocumentByIdLoader(DataLoader[Any, Document | None]):
    """Documents of one collection by seed id, in key order, None for a missing id."""

    def __init__(self, store: Store, spec: CollectionSpec) -> None:
        # Our own cache map, so `peek` can answer from it without awaiting. (Not `self.cache`: that is
        # aiodataloader's on/off switch, and an empty dict there would turn caching off.)
        self._futures: dict[Any, asyncio.Future[Document | None]] = {}
        super().__init__(cache_map=self._futures)
        self.store = store
        self.spec = spec

    async def batch_load_fn(self, keys: list[Any]) -> list[Document | None]:
        found = await self.store.find_by_ids(self.spec, keys)
        return [found.get(key) for key in keys]

    def peek(self, key: Any) -> tuple[bool, Document | None]:
        """(True, document or None) when `key` was already loaded; (False, None) when it must be awaited."""
        future = self._futures.get(key)
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return False, None
        return True, future.result()


#: (task id, event types or None for all, how many): one nested `events` field of one task.
EventsKey = tuple[str, tuple[str, ...] | None, int]


class EventsByTaskLoader(DataLoader[EventsKey, list[Document]]):
    """The oldest `first` events of a task (of the given types), plural: a list per key, [] for none.

    Keys that share their types and `first` (normally all of a batch: the same field at one level of a
    tree) cost one `aggregate` together; a batch mixing several argument sets costs one per set.
    """

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    @staticmethod
    def key(task_id: str, types: Iterable[str] | None, first: int) -> EventsKey:
        """The key for these arguments; the types are normalised so equal filters share the cache."""
        return (task_id, None if types is None else tuple(sorted({str(t) for t in types})), first)

    async def batch_load_fn(self, keys: list[EventsKey]) -> list[list[Document]]:
        groups: dict[tuple[tuple[str, ...] | None, int], list[str]] = defaultdict(list)
        for task_id, types, first in keys:
            groups[(types, first)].append(task_id)
        answers = await asyncio.gather(
            *(
                first_events_of_tasks(self.store.db, ids, types=types, first=first)
                for (types, first), ids in groups.items()
            )
        )
        found = dict(zip(groups, answers, strict=True))
        return [found[(types, first)].get(task_id, []) for task_id, types, first in keys]


class StatesByParentLoader(DataLoader[str, list[Document]]):
    """The states naming a task as their `parent_task_id` (seed 001 sub-tasks), plural: [] for none.

    One `find` with `parent_task_id: {$in: [...]}` per batch (on the `parent_task_id` index). Each list
    is sorted by created_at, then id, here rather than by MongoDB: states written by other programs may
    hold ISO-string timestamps, which MongoDB would sort before every date.
    """

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    async def batch_load_fn(self, keys: list[str]) -> list[list[Document]]:
        found: dict[str, list[Document]] = defaultdict(list)
        for doc in await self.store.find_by_field(c.AGENT_TASK_STATES, "parent_task_id", keys):
            found[doc["parent_task_id"]].append(doc)
        for children in found.values():
            children.sort(key=_created_then_id)
        return [found.get(key, []) for key in keys]


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)


def _created_then_id(doc: Document) -> tuple[dt.datetime, str]:
    # An unreadable created_at sorts first, like a missing one.
    return (as_datetime(doc.get("created_at")) or _EARLIEST, str(doc["_id"]))


class Loaders:
    """The loaders of one request, one per collection, each made the first time it is used: a
    subscriber's context, which most events never read through, then holds none (~7 KB less per
    subscriber, and an HTTP request builds only the loaders it uses)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def create(cls, store: Store) -> Loaders:
        return cls(store)

    @cached_property
    def meta_task(self) -> DocumentByIdLoader:
        return DocumentByIdLoader(self.store, c.META_WORKFLOW_TASKS)

    @cached_property
    def sub_task(self) -> DocumentByIdLoader:
        return DocumentByIdLoader(self.store, c.SUB_TASKS)

    @cached_property
    def behavior_task(self) -> DocumentByIdLoader:
        return DocumentByIdLoader(self.store, c.BEHAVIOR_TASKS)

    @cached_property
    def task_output(self) -> DocumentByIdLoader:
        return DocumentByIdLoader(self.store, c.TASK_OUTPUTS)

    @cached_property
    def sub_task_output(self) -> DocumentByIdLoader:
        return DocumentByIdLoader(self.store, c.SUB_TASK_OUTPUTS)

    @cached_property
    def behavior_task_output(self) -> DocumentByIdLoader:
        return DocumentByIdLoader(self.store, c.BEHAVIOR_TASK_OUTPUTS)

    @cached_property
    def state(self) -> DocumentByIdLoader:
        return DocumentByIdLoader(self.store, c.AGENT_TASK_STATES)

    @cached_property
    def events_by_task(self) -> EventsByTaskLoader:
        return EventsByTaskLoader(self.store)

    @cached_property
    def states_by_parent(self) -> StatesByParentLoader:
        return StatesByParentLoader(self.store)

    def by_collection(self, spec: CollectionSpec) -> DocumentByIdLoader:
        """The loader for `spec`'s collection."""
        loader: DocumentByIdLoader = getattr(self, _BY_COLLECTION[spec.name])
        return loader


#: The `Loaders` attribute of each collection's by-id loader.
_BY_COLLECTION = {
    c.META_WORKFLOW_TASKS.name: "meta_task",
    c.SUB_TASKS.name: "sub_task",
    c.BEHAVIOR_TASKS.name: "behavior_task",
    c.TASK_OUTPUTS.name: "task_output",
    c.SUB_TASK_OUTPUTS.name: "sub_task_output",
    c.BEHAVIOR_TASK_OUTPUTS.name: "behavior_task_output",
    c.AGENT_TASK_STATES.name: "state",
}
