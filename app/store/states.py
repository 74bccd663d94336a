"""The `agent_task_states` collection: every MongoDB call the services make on execution states.

One state document per task (same id as the task). Writes are compare-and-set on `version`
(`update_if_version`), so a change computed from a stale read is never applied. Functions take the
caller's session, so a service composes them into one transaction; they hold no rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import bson
import pymongo
from pymongo import ReturnDocument, UpdateOne

from app.domain import Status
from app.store.collections import AGENT_TASK_STATES, CLAIM_INDEX, DEADLINE_INDEXES
from app.store.failures import filter_time_limit
from app.store.types import BACKGROUND, Collection, Db, Doc, Session

#: The order claims hand tasks out in: most urgent first, then oldest, then by id: the claim index's keys
#: after the agent and the status (and before the claim gate), so the index yields it.
CLAIM_ORDER = list(CLAIM_INDEX.keys[2:5])


def _states(db: Db) -> Collection:
    return db[AGENT_TASK_STATES.name]


def version_filter(state: Mapping[str, Any]) -> Doc:
    """The compare-and-set condition: still at the version read (or still without one, if foreign)."""
    return {"version": state["version"]} if "version" in state else {"version": {"$exists": False}}


async def get(db: Db, task_id: Any, session: Session = None) -> Doc | None:
    return await _states(db).find_one({"_id": task_id}, session=session)


async def exists(db: Db, task_id: Any, session: Session = None) -> bool:
    return await _states(db).find_one({"_id": task_id}, {"_id": 1}, session=session) is not None


async def first_taken(db: Db, ids: list[str], session: Session = None) -> str | None:
    """One of `ids` that already has a state, or None."""
    doc = await _states(db).find_one({"_id": {"$in": ids}}, {"_id": 1}, session=session)
    return None if doc is None else doc["_id"]


async def insert(db: Db, docs: list[Doc], session: Session = None) -> None:
    if docs:
        await _states(db).insert_many(docs, session=session)


async def update_if_version(
    db: Db,
    state: Mapping[str, Any],
    changes: Mapping[str, Any],
    new_version: int,
    session: Session = None,
    guard: Mapping[str, Any] | None = None,
) -> Doc | None:
    """`$set` `changes` and `version = new_version` if the document is still at the version of `state`
    (and still matches `guard`, extra field values the caller relies on); the updated document, or None
    when it changed since it was read."""
    return await _states(db).find_one_and_update(
        {**(guard or {}), "_id": state["_id"], **version_filter(state)},
        {"$set": {**changes, "version": new_version}},
        return_document=ReturnDocument.AFTER,
        session=session,
    )


async def update_all_if_version(
    db: Db, writes: Sequence[tuple[Mapping[str, Any], Mapping[str, Any], int]], session: Session = None
) -> list[Doc] | None:
    """`update_if_version` for several documents in one command: for each (state, changes, new_version),
    `$set` the changes (top-level fields) and the version if the document is still at the version of
    `state`. The documents after the update, as MongoDB would return them (the changes round-tripped
    through BSON with the collection's codec options: datetimes to milliseconds), or None when any of them
    changed since it was read (nothing is undone then: the caller's transaction must be aborted)."""
    if not writes:
        return []
    operations = [
        UpdateOne({"_id": state["_id"], **version_filter(state)}, {"$set": {**changes, "version": version}})
        for state, changes, version in writes
    ]
    result = await _states(db).bulk_write(operations, ordered=True, session=session)
    if result.matched_count != len(operations):
        return None
    options = _states(db).codec_options
    return [
        {**state, **bson.decode(bson.encode({**changes, "version": version}), codec_options=options)}
        for state, changes, version in writes
    ]


async def many(db: Db, ids: list[Any], session: Session = None) -> list[Doc]:
    """The states of these ids that exist, in no particular order."""
    if not ids:
        return []
    return [doc async for doc in _states(db).find({"_id": {"$in": ids}}, session=session)]


async def matching(db: Db, query: Mapping[str, Any], ids: list[Any], session: Session = None) -> list[Doc]:
    """The states of these ids that match `query` (a compiled filter), in no particular order."""
    if not ids:
        return []
    cursor = _states(db).find({"$and": [dict(query), {"_id": {"$in": ids}}]}, session=session)
    return [doc async for doc in cursor]


async def ids_matching(db: Db, query: Mapping[str, Any], limit: int, time_limit_ms: int | None) -> list[Any]:
    """The ids of the first `limit` states matching `query` (a client's compiled filter), by id; the query
    runs within `time_limit_ms` (`FilterTooSlow` beyond it; `FilterError` when MongoDB refuses it)."""
    with filter_time_limit(time_limit_ms):
        cursor = _states(db).find(dict(query), {"_id": 1}, sort=[("_id", 1)], limit=limit, batch_size=limit)
        return [doc["_id"] async for doc in cursor]


async def update_many_if_version(
    db: Db, changes: Sequence[tuple[Mapping[str, Any], Mapping[str, Any], int]], session: Session = None
) -> int:
    """`update_if_version` for many states in one round trip: (state read, fields to `$set`, new version)
    each; how many matched (fewer than given: some changed since they were read)."""
    if not changes:
        return 0
    result = await _states(db).bulk_write(
        [
            UpdateOne(
                {"_id": state["_id"], **version_filter(state)}, {"$set": {**fields, "version": version}}
            )
            for state, fields, version in changes
        ],
        ordered=False,
        session=session,
    )
    return result.matched_count


async def awaited_among(db: Db, ids: list[Any], session: Session = None) -> set[Any]:
    """Which of `ids` some task is waiting for (`awaiting_dependency` with it among its dependencies)."""
    if not ids:
        return set()
    cursor = _states(db).find(
        {"dependencies.task_id": {"$in": ids}, "status": Status.AWAITING_DEPENDENCY},
        {"dependencies.task_id": 1},
        session=session,
    )
    wanted = set(ids)
    return {
        d.get("task_id")
        async for doc in cursor
        for d in doc.get("dependencies") or []
        if isinstance(d, dict) and d.get("task_id") in wanted
    }


async def set_workflow(db: Db, ids: list[str], workflow_id: str | None, session: Session = None) -> None:
    """Record that these tasks now belong to another workflow (a subtree moved)."""
    await _states(db).update_many(
        {"_id": {"$in": ids}}, {"$set": {"workflow_id": workflow_id}}, session=session
    )


async def delete(db: Db, ids: list[str], session: Session = None) -> None:
    if ids:
        await _states(db).delete_many({"_id": {"$in": ids}}, session=session)


async def statuses(db: Db, ids: Iterable[Any], session: Session = None) -> dict[Any, Any]:
    """The stored status of each id that exists."""
    keys = list(ids)
    if not keys:
        return {}
    cursor = _states(db).find({"_id": {"$in": keys}}, {"status": 1}, session=session)
    return {doc["_id"]: doc.get("status") async for doc in cursor}


async def agents(db: Db, ids: Iterable[Any], session: Session = None) -> dict[Any, Any]:
    """The stored `agent_name` of each id that has a state (None where it names none)."""
    keys = list(ids)
    if not keys:
        return {}
    cursor = _states(db).find({"_id": {"$in": keys}}, {"agent_name": 1}, session=session)
    return {doc["_id"]: doc.get("agent_name") async for doc in cursor}


async def dependency_layer(db: Db, ids: Iterable[str], session: Session = None) -> dict[str, Doc]:
    """Status and dependencies of these tasks: one breadth-first layer of the dependency graph."""
    cursor = _states(db).find({"_id": {"$in": list(ids)}}, {"status": 1, "dependencies": 1}, session=session)
    return {doc["_id"]: doc async for doc in cursor}


async def awaiting(db: Db, task_ids: list[Any], session: Session = None) -> list[Doc]:
    """The tasks waiting (`awaiting_dependency`) with one of `task_ids` among their dependencies."""
    match = task_ids[0] if len(task_ids) == 1 else {"$in": task_ids}
    cursor = _states(db).find(
        {"dependencies.task_id": match, "status": Status.AWAITING_DEPENDENCY}, session=session
    )
    return [doc async for doc in cursor]


async def first_dependent(
    db: Db, ids: list[str], *, outside: list[str] | None = None, session: Session = None
) -> str | None:
    """A task (not among `outside`) that depends on one of `ids`, or None."""
    query: Doc = {"dependencies.task_id": {"$in": ids}}
    if outside:
        query["_id"] = {"$nin": outside}
    doc = await _states(db).find_one(query, {"_id": 1}, session=session)
    return None if doc is None else doc["_id"]


async def first_child(db: Db, parent_task_id: str, session: Session = None) -> str | None:
    """A task that names `parent_task_id` as its parent (seed 001 sub-tasks), or None."""
    doc = await _states(db).find_one({"parent_task_id": parent_task_id}, {"_id": 1}, session=session)
    return None if doc is None else doc["_id"]


async def claimable(
    db: Db,
    agent_name: str,
    now: dt.datetime,
    *,
    workflow_id: str | None = None,
    task_kinds: list[str] | None = None,
    exclude: Iterable[str] = (),
    limit: int = 1,
    session: Session = None,
) -> list[Doc]:
    """The first `limit` of the agent's pending or retrying, unexpired tasks in `CLAIM_ORDER` (on the claim
    index, named so the planner cannot choose a plan that sorts every pending task: the two statuses are
    merged in order, and the expiry is checked on the few documents read).

    ISO-string expiries (written by other programs) cannot be compared here; the caller checks them.

    The claim gate: a task is not handed out before its `not_before` (a delayed start) or its
    `next_attempt_at` (a retry's backoff). Both are the claim index's last keys, so the scan passes over a
    waiting task on its key without reading the document (`$not $gt` also matches a missing field).
    """
    query: Doc = {
        "agent_name": agent_name,
        "status": {"$in": [Status.PENDING, Status.RETRYING]},
        "not_before": {"$not": {"$gt": now}},
        "next_attempt_at": {"$not": {"$gt": now}},
        "$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}, {"expires_at": {"$type": "string"}}],
    }
    skipped = list(exclude)
    if skipped:
        query["_id"] = {"$nin": skipped}
    if workflow_id is not None:
        query["workflow_id"] = workflow_id
    if task_kinds:
        query["task_kind"] = {"$in": task_kinds}
    cursor = _states(db).find(
        query, sort=CLAIM_ORDER, limit=limit, batch_size=limit, hint=CLAIM_INDEX.name, session=session
    )
    return [doc async for doc in cursor]


def overdue(db: Db, now: dt.datetime, terminal: Iterable[str]) -> Any:
    """A cursor over states not in a `terminal` status (statuses that never expire: finished, paused) whose
    `expires_at` may have passed (soonest first).

    Those statuses are excluded in the server's spelling only, and ISO-string deadlines cannot be
    compared here: the caller sorts those out with the same predicate reads use.
    """
    return _states(db).find(
        {
            "status": {"$nin": sorted(terminal)},
            "$or": [{"expires_at": {"$lte": now}}, {"expires_at": {"$type": "string"}}],
        },
        {"status": 1, "expires_at": 1},
        sort=[("expires_at", 1), ("_id", 1)],
        comment=BACKGROUND,
    )


async def lapsed(db: Db, now: dt.datetime, limit: int) -> list[Any]:
    """Ids of up to `limit` states in progress whose lease ran out (`lease_expires_at` <= now), soonest
    first, on the `lease_expires_at` index."""
    cursor = _states(db).find(
        {"lease_expires_at": {"$lte": now}, "status": Status.IN_PROGRESS},
        {"_id": 1},
        sort=[("lease_expires_at", 1), ("_id", 1)],
        limit=limit,
        comment=BACKGROUND,
    )
    return [doc["_id"] async for doc in cursor]


async def timed_out(
    db: Db, deadline_field: str, statuses: Sequence[str], now: dt.datetime, limit: int
) -> list[Any]:
    """Ids of up to `limit` states in one of `statuses` (named: no other status is read) whose
    `deadline_field` has passed, soonest first, on that deadline's partial index (status, deadline),
    named: on a small collection the planner may otherwise take `status_1` and read every active task.
    (`$type: date` is the index's filter: it makes the query one the partial index may answer.)"""
    cursor = _states(db).find(
        {"status": {"$in": list(statuses)}, deadline_field: {"$type": "date", "$lte": now}},
        {"_id": 1},
        sort=[(deadline_field, 1)],  # (by the index: the statuses' scans merged in deadline order)
        limit=limit,
        hint=DEADLINE_INDEXES[deadline_field].name,
        comment=BACKGROUND,
    )
    return [doc["_id"] async for doc in cursor]


async def sample_counts(
    db: Db, now: dt.datetime, seconds: float
) -> tuple[list[tuple[Any, Any, int]], dict[Any, int]]:
    """For `/metrics`' sampled gauges, within `seconds` (PyMongo's `timeout`: mongod stops too):
    (agent_name, status, count) for every pair present, over the claim index's first two keys (covered:
    no document is read); and how many tasks each agent's claim could start at `now` (`claimable`'s
    match for every agent at once; ISO-string expiries counted as unexpired)."""
    with pymongo.timeout(seconds):
        pairs = await _states(db).aggregate(
            [
                {"$project": {"_id": 0, "agent_name": 1, "status": 1}},
                {"$group": {"_id": {"agent": "$agent_name", "status": "$status"}, "n": {"$sum": 1}}},
            ],
            hint=CLAIM_INDEX.name,
            comment=BACKGROUND,
        )
        counts = [(doc["_id"].get("agent"), doc["_id"].get("status"), int(doc["n"])) async for doc in pairs]
        queues = await _states(db).aggregate(
            [
                {
                    "$match": {
                        "status": {"$in": [Status.PENDING, Status.RETRYING]},
                        "not_before": {"$not": {"$gt": now}},
                        "next_attempt_at": {"$not": {"$gt": now}},
                        "$or": [
                            {"expires_at": None},
                            {"expires_at": {"$gt": now}},
                            {"expires_at": {"$type": "string"}},
                        ],
                    }
                },
                {"$group": {"_id": "$agent_name", "n": {"$sum": 1}}},
            ],
            hint=CLAIM_INDEX.name,
            comment=BACKGROUND,
        )
        claimable = {doc["_id"]: int(doc["n"]) async for doc in queues}
    return counts, claimable
