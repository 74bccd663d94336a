"""The MongoDB side of retention (`app/lifecycle/retention.py` has the rules): finding finished workflows
and standalone tasks, gathering everything that belongs to one, removing it (or counting what would go),
and the storage figures of each collection.

A "root" is what retention removes as a whole: a meta workflow task's state (with its sub-tasks, behavior
tasks, their outputs, states and events) or a standalone task's state. Roots are found on the partial
index `task_kind_1_updated_at_1__id_1` (terminal states only, `app/store/collections.py`), in the order
they last changed, paged by `(updated_at, _id)` so that roots kept back (a live task inside) never hold
up the ones behind them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.domain import TERMINAL, TaskKind
from app.store import collections as c
from app.store.failures import filter_time_limit
from app.store.types import BACKGROUND, Db, Doc, Session

#: The kinds of state a root may have.
ROOT_KINDS = (TaskKind.META_WORKFLOW.value, TaskKind.STANDALONE.value)
_TERMINAL = sorted(TERMINAL)

#: The collections a removal touches, in the order their counts are reported.
PURGED_COLLECTIONS = (
    c.META_WORKFLOW_TASKS.name,
    c.SUB_TASKS.name,
    c.BEHAVIOR_TASKS.name,
    c.TASK_OUTPUTS.name,
    c.SUB_TASK_OUTPUTS.name,
    c.BEHAVIOR_TASK_OUTPUTS.name,
    c.AGENT_TASK_STATES.name,
    c.TASK_EVENTS.name,
)


def _states(db: Db) -> Any:
    return db[c.AGENT_TASK_STATES.name]


async def finished_roots(
    db: Db,
    before: dt.datetime,
    limit: int,
    after: tuple[dt.datetime, Any] | None = None,
) -> list[Doc]:
    """Up to `limit` terminal roots last changed before `before`, oldest first, after the `(updated_at,
    _id)` position `after` (the last one of the previous page)."""
    query: Doc = {
        "status": {"$in": _TERMINAL},
        "task_kind": {"$in": list(ROOT_KINDS)},
        "updated_at": {"$lt": before},
    }
    if after is not None:
        at, last_id = after
        query = {
            "$and": [
                query,
                {"$or": [{"updated_at": {"$gt": at}}, {"updated_at": at, "_id": {"$gt": last_id}}]},
            ]
        }
    cursor = (
        _states(db)
        .find(query, {"_id": 1, "task_kind": 1, "updated_at": 1}, comment=BACKGROUND)
        .sort([("updated_at", 1), ("_id", 1)])
        .hint(c.RETENTION_INDEX.name)
        .limit(limit)
    )
    return [doc async for doc in cursor]


async def matching_roots(
    db: Db, query: Mapping[str, Any], limit: int, time_limit_ms: int | None = None
) -> list[Doc]:
    """Up to `limit` roots (any status) whose state matches `query` (an allow-listed, compiled filter),
    by id, within `time_limit_ms` (FILTER_MAX_TIME_MS: `FilterTooSlow` past it)."""
    roots: Doc = {"task_kind": {"$in": list(ROOT_KINDS)}}
    full = {"$and": [dict(query), roots]} if query else roots
    with filter_time_limit(time_limit_ms):
        cursor = (
            _states(db)
            .find(full, {"_id": 1, "task_kind": 1, "updated_at": 1, "status": 1})
            .sort("_id", 1)
            .limit(limit)
        )
        return [doc async for doc in cursor]


async def states_of(db: Db, workflow_id: Any, session: Session) -> list[Doc]:
    """The states of a workflow: its meta task's and every state naming it as `workflow_id`."""
    cursor = _states(db).find(
        {"$or": [{"_id": workflow_id}, {"workflow_id": workflow_id}]},
        {"_id": 1, "status": 1, "updated_at": 1},
        session=session,
    )
    return [doc async for doc in cursor]


async def state(db: Db, task_id: Any, session: Session) -> Doc | None:
    return await _states(db).find_one({"_id": task_id}, {"status": 1, "updated_at": 1}, session=session)


async def hierarchy_ids(db: Db, workflow_id: Any, session: Session) -> dict[str, list[Any]]:
    """The ids of a meta task's hierarchy documents, by collection: itself, its sub-tasks (by their
    parent id, whatever its list says) and their behavior tasks."""
    sub_ids = [
        d["_id"]
        async for d in db[c.SUB_TASKS.name].find({"task_id": workflow_id}, {"_id": 1}, session=session)
    ]
    behavior_ids = (
        [
            d["_id"]
            async for d in db[c.BEHAVIOR_TASKS.name].find(
                {"sub_task_id": {"$in": sub_ids}}, {"_id": 1}, session=session
            )
        ]
        if sub_ids
        else []
    )
    return {
        c.META_WORKFLOW_TASKS.name: [workflow_id],
        c.SUB_TASKS.name: sub_ids,
        c.BEHAVIOR_TASKS.name: behavior_ids,
    }


async def has_child(db: Db, task_id: Any, session: Session) -> bool:
    """Whether a task names `task_id` as its parent (seed 001 sub-tasks) at all: a standalone parent is
    removed after its children."""
    found = await _states(db).find_one({"parent_task_id": task_id}, {"_id": 1}, session=session)
    return found is not None


async def active_dependent(db: Db, ids: list[Any], session: Session) -> Any:
    """An unfinished task outside `ids` that depends on one of them, or None."""
    found = await _states(db).find_one(
        {"dependencies.task_id": {"$in": ids}, "_id": {"$nin": ids}, "status": {"$nin": _TERMINAL}},
        {"_id": 1},
        session=session,
    )
    return None if found is None else found["_id"]


async def event_task_ids(db: Db, workflow_id: Any, task_ids: list[Any], session: Session) -> list[Any]:
    """`task_ids` plus the tasks a workflow's events name that no longer have a state (deleted earlier
    with `delete…Task`); a task moved to another workflow keeps its events."""
    named = await db[c.TASK_EVENTS.name].distinct(
        "task_id", {"workflow_id": workflow_id, "task_id": {"$nin": task_ids}}, session=session
    )
    if not named:
        return task_ids
    alive = {d["_id"] async for d in _states(db).find({"_id": {"$in": named}}, {"_id": 1}, session=session)}
    return task_ids + [t for t in named if t not in alive]


async def remove(
    db: Db, ids: Mapping[str, Iterable[Any]], event_task_ids: list[Any], session: Session, *, dry_run: bool
) -> dict[str, int]:
    """Delete (or with `dry_run`, count) the documents `ids` names per collection, plus every event
    about `event_task_ids`; how many per collection (every one of `PURGED_COLLECTIONS`)."""
    counts: dict[str, int] = {}
    for name in PURGED_COLLECTIONS:
        if name == c.TASK_EVENTS.name:
            query: Doc = {"task_id": {"$in": event_task_ids}}
        else:
            wanted = list(ids.get(name, ()))
            if not wanted:
                counts[name] = 0
                continue
            query = {"_id": {"$in": wanted}}
        if dry_run:
            counts[name] = await db[name].count_documents(query, session=session)
        else:
            counts[name] = (await db[name].delete_many(query, session=session)).deleted_count
    return counts


@dataclass(frozen=True)
class CollectionStorage:
    """One collection's figures from MongoDB's `$collStats` (bytes as MongoDB reports them)."""

    name: str
    documents: int
    size_bytes: int
    storage_bytes: int
    index_bytes: int


async def storage(db: Db) -> list[CollectionStorage]:
    """The storage figures of every collection the server keeps (`collections.ALL`), by name."""
    out: list[CollectionStorage] = []
    for spec in sorted(c.ALL, key=lambda s: s.name):
        cursor = await db[spec.name].aggregate([{"$collStats": {"storageStats": {}}}])
        docs = [doc async for doc in cursor]
        stats: Doc = docs[0].get("storageStats", {}) if docs else {}
        out.append(
            CollectionStorage(
                name=spec.name,
                documents=int(stats.get("count", 0)),
                size_bytes=int(stats.get("size", 0)),
                storage_bytes=int(stats.get("storageSize", 0)),
                index_bytes=int(stats.get("totalIndexSize", 0)),
            )
        )
    return out
