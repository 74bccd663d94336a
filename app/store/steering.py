"""Concurrency limits, claim policies and fair-claim bookkeeping: every MongoDB call they make.

`concurrency_limits` holds one document per limit (`_id` "agent:<name>", "workflow:<id>" or "key:<k>");
`claim_policies` one per agent that is not FIFO; `claim_served` when a fair claim last served each
(agent, group). Running counts are counted, never stored: the tasks `in_progress` under a limit, on the
indexes named in `app.store.collections` (a count of index keys). Functions take the caller's session so
the claim composes them into its transaction; they hold no rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import pymongo
from pymongo import ReturnDocument

from app.domain import Status
from app.store.collections import (
    AGENT_TASK_STATES,
    CLAIM_POLICIES,
    CLAIM_SERVED,
    CONCURRENCY_LIMITS,
    CONCURRENCY_SLOTS,
    FAIR_BY_KEY_INDEX,
    FAIR_BY_WORKFLOW_INDEX,
    RUNNING_BY_AGENT,
    RUNNING_BY_KEY,
    RUNNING_BY_WORKFLOW,
    START_RATE_LIMITS,
    START_WINDOWS,
)
from app.store.types import BACKGROUND, Db, Doc, Session

#: The state field each limit scope counts on.
SCOPE_FIELDS = {"agent": "agent_name", "workflow": "workflow_id", "key": "concurrency_key"}
#: The state field each fair policy groups by, and the index its probes run on.
GROUP_INDEXES = {"workflow_id": FAIR_BY_WORKFLOW_INDEX, "concurrency_key": FAIR_BY_KEY_INDEX}
_RUNNING_INDEX = {"agent": RUNNING_BY_AGENT, "workflow": RUNNING_BY_WORKFLOW, "key": RUNNING_BY_KEY}
#: The state field holding the slot a claim took under each scope's limit.
SLOT_FIELDS = {"agent": "slot_agent", "workflow": "slot_workflow", "key": "slot_key"}
#: Separates the agent from the group in a `claim_served` id (not allowed in neither: control character).
SEP = "\x1f"


def limit_id(scope: str, key: str) -> str:
    return f"{scope}:{key}"


# ----------------------------------------------------------------------- limits and policies


async def all_limits(db: Db, cap: int) -> list[Doc]:
    """Every limit (at most `cap`; the settings bound how many may be set)."""
    cursor = db[CONCURRENCY_LIMITS.name].find({}, {"max": 1, "scope": 1, "key": 1}, limit=cap)
    return [doc async for doc in cursor]


async def count_limits(db: Db) -> int:
    return await db[CONCURRENCY_LIMITS.name].count_documents({})


async def set_limit(db: Db, scope: str, key: str, maximum: int, now: dt.datetime) -> Doc:
    doc = await db[CONCURRENCY_LIMITS.name].find_one_and_update(
        {"_id": limit_id(scope, key)},
        {"$set": {"scope": scope, "key": key, "max": maximum, "updated_at": now}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    assert doc is not None  # an upsert returning the document after it always has one
    return doc


async def clear_limit(db: Db, scope: str, key: str) -> bool:
    result = await db[CONCURRENCY_LIMITS.name].delete_one({"_id": limit_id(scope, key)})
    return result.deleted_count == 1


async def touch_slot(db: Db, lid: str, slot: int, session: Session) -> None:
    """The slot guard: two claims taking the same slot of a limit write the same document."""
    await db[CONCURRENCY_SLOTS.name].update_one(
        {"_id": f"{lid}#{slot}"}, {"$inc": {"touches": 1}}, upsert=True, session=session
    )


def _running_query(scope: str, key: str) -> Doc:
    query: Doc = {SCOPE_FIELDS[scope]: key, "status": Status.IN_PROGRESS}
    if scope == "key":
        query["concurrency_key"] = {"$eq": key, "$type": "string"}
    return query


async def running(db: Db, scope: str, key: str, session: Session = None) -> int:
    """Tasks in progress under one limit: a count of keys on the scope's index."""
    return await db[AGENT_TASK_STATES.name].count_documents(
        _running_query(scope, key), hint=_RUNNING_INDEX[scope].name, session=session
    )


async def slots(db: Db, scope: str, key: str, cap: int, session: Session) -> list[Any]:
    """The slot of each task in progress under one limit (None: it holds none), at most `cap`, read from
    the scope's index keys."""
    field_name = SLOT_FIELDS[scope]
    cursor = db[AGENT_TASK_STATES.name].find(
        _running_query(scope, key),
        {field_name: 1, "_id": 0},
        hint=_RUNNING_INDEX[scope].name,
        limit=cap,
        session=session,
    )
    return [doc.get(field_name) async for doc in cursor]


async def all_rates(db: Db, cap: int) -> list[Doc]:
    """Every start rate limit (at most `cap`)."""
    cursor = db[START_RATE_LIMITS.name].find({}, {"max": 1, "per_seconds": 1}, limit=cap)
    return [doc async for doc in cursor]


async def count_rates(db: Db) -> int:
    return await db[START_RATE_LIMITS.name].count_documents({})


async def set_rate(db: Db, scope: str, key: str, maximum: int, per_seconds: int, now: dt.datetime) -> None:
    await db[START_RATE_LIMITS.name].update_one(
        {"_id": limit_id(scope, key)},
        {"$set": {"scope": scope, "key": key, "max": maximum, "per_seconds": per_seconds, "updated_at": now}},
        upsert=True,
    )


async def clear_rate(db: Db, scope: str, key: str) -> bool:
    result = await db[START_RATE_LIMITS.name].delete_one({"_id": limit_id(scope, key)})
    return result.deleted_count == 1


def window_prefix(lid: str, window: int) -> str:
    return f"{lid}@{window}#"


async def window_starts(db: Db, lid: str, window: int, cap: int, session: Session = None) -> set[int]:
    """The starts a rate limit allowed in one window (their numbers), at most `cap`: a range of `_id`s."""
    prefix = window_prefix(lid, window)
    cursor = db[START_WINDOWS.name].find(
        {"_id": {"$gte": prefix, "$lt": prefix[:-1] + "$"}}, {"_id": 1}, limit=cap, session=session
    )
    out: set[int] = set()
    async for doc in cursor:
        tail = str(doc["_id"])[len(prefix) :]
        if tail.isdigit():
            out.add(int(tail))
    return out


async def take_start(
    db: Db, lid: str, window: int, number: int, expire_at: dt.datetime, session: Session
) -> None:
    """Record the window's `number`-th start (a claim taking the same one at once write-conflicts)."""
    await db[START_WINDOWS.name].insert_one(
        {"_id": f"{window_prefix(lid, window)}{number}", "expire_at": expire_at}, session=session
    )


async def all_policies(db: Db, cap: int) -> list[Doc]:
    cursor = db[CLAIM_POLICIES.name].find({}, {"policy": 1}, limit=cap)
    return [doc async for doc in cursor]


async def policy(db: Db, agent_name: str) -> str | None:
    """The agent's stored claim policy (None: none, FIFO)."""
    doc = await db[CLAIM_POLICIES.name].find_one({"_id": agent_name}, {"policy": 1})
    return None if doc is None else str(doc.get("policy"))


async def set_policy(db: Db, agent_name: str, policy: str, now: dt.datetime) -> None:
    if policy == "FIFO":  # the default: no document
        await db[CLAIM_POLICIES.name].delete_one({"_id": agent_name})
        return
    await db[CLAIM_POLICIES.name].update_one(
        {"_id": agent_name}, {"$set": {"policy": policy, "updated_at": now}}, upsert=True
    )


# ----------------------------------------------------------------------- fair claims


async def group_heads(
    db: Db,
    agent_name: str,
    group_field: str,
    priority_rank: Any,
    gate: Doc,
    exclude: Iterable[str],
    cap: int,
    session: Session = None,
) -> list[Doc]:
    """The oldest claimable task of each group (`group_field`'s value) with work of this priority, at most
    `cap` groups: one probe per group on the fair index, each after the last group found (null first,
    then the strings in order). `gate` is the claim query's remaining conditions (claim gate, expiry)."""
    collection = db[AGENT_TASK_STATES.name]
    skipped = list(exclude)
    heads: list[Doc] = []
    after: Any = _START
    while len(heads) < cap:
        query: Doc = {
            "agent_name": agent_name,
            "status": {"$in": [Status.PENDING, Status.RETRYING]},
            "priority_rank": priority_rank,
            **gate,
        }
        if skipped:
            query["_id"] = {"$nin": skipped}
        if after is _NULL:  # after the null group: the strings (type bracketing keeps out the rest)
            query[group_field] = {"$gte": ""}
        elif after is not _START:
            query[group_field] = {"$gt": after}
        doc = await collection.find_one(
            query,
            sort=[(group_field, 1), ("created_at", 1), ("_id", 1)],
            hint=GROUP_INDEXES[group_field].name,
            session=session,
        )
        if doc is None:
            if after is _START:  # nothing at all, or only non-string groups: try the strings
                after = _NULL
                continue
            break
        heads.append(doc)
        value = doc.get(group_field)
        if value is None:
            after = _NULL
        elif isinstance(value, str):
            after = value
        else:  # a foreign non-string group value: stop rather than loop on it
            break
    return heads


async def group_next(
    db: Db,
    agent_name: str,
    group_field: str,
    group: Any,
    priority_rank: Any,
    gate: Doc,
    exclude: Iterable[str],
    limit: int,
    session: Session = None,
) -> list[Doc]:
    """The oldest `limit` claimable tasks of one group at one priority."""
    query: Doc = {
        "agent_name": agent_name,
        "status": {"$in": [Status.PENDING, Status.RETRYING]},
        "priority_rank": priority_rank,
        group_field: group,
        **gate,
    }
    skipped = list(exclude)
    if skipped:
        query["_id"] = {"$nin": skipped}
    cursor = db[AGENT_TASK_STATES.name].find(
        query,
        sort=[("created_at", 1), ("_id", 1)],
        limit=limit,
        hint=GROUP_INDEXES[group_field].name,
        session=session,
    )
    return [doc async for doc in cursor]


async def priorities(db: Db, agent_name: str, gate: Doc, session: Session = None) -> AsyncIterator[Any]:
    """The priority ranks the agent has claimable work of, most urgent first: one probe per rank, each
    sent only when the caller asks for the next one."""
    collection = db[AGENT_TASK_STATES.name]
    last: Any = None
    for _ in range(16):  # there are 4 ranks; foreign values at most add a few
        query: Doc = {"agent_name": agent_name, "status": {"$in": [Status.PENDING, Status.RETRYING]}, **gate}
        if last is not None:
            query["priority_rank"] = {"$lt": last}
        doc = await collection.find_one(
            query,
            {"priority_rank": 1},
            sort=[("priority_rank", -1)],
            hint=FAIR_BY_WORKFLOW_INDEX.name,
            session=session,
        )
        if doc is None or not isinstance(doc.get("priority_rank"), int | float):
            return
        last = doc["priority_rank"]
        yield last


async def count_claimable(db: Db, agent_name: str, gate: Doc, where: Doc, cap: int) -> int:
    """How many of the agent's tasks are claimable now (`where` narrows them), counting up to `cap`."""
    query: Doc = {
        "agent_name": agent_name,
        "status": {"$in": [Status.PENDING, Status.RETRYING]},
        **gate,
        **where,
    }
    field_name = next(iter(where), "workflow_id")
    return await db[AGENT_TASK_STATES.name].count_documents(
        query, limit=cap, hint=GROUP_INDEXES.get(field_name, FAIR_BY_WORKFLOW_INDEX).name
    )


async def served(db: Db, agent_name: str, groups: Iterable[Any], session: Session = None) -> dict[Any, Doc]:
    """When each group was last served to this agent (groups never served are absent)."""
    ids = {served_id(agent_name, g): g for g in groups}
    cursor = db[CLAIM_SERVED.name].find({"_id": {"$in": list(ids)}}, session=session)
    return {ids[doc["_id"]]: doc async for doc in cursor}


async def mark_served(db: Db, agent_name: str, group: Any, now: dt.datetime, session: Session) -> None:
    await db[CLAIM_SERVED.name].update_one(
        {"_id": served_id(agent_name, group)},
        {
            "$set": {"agent_name": agent_name, "group": group, "served_at": now},
            "$inc": {"served": 1},
        },
        upsert=True,
        session=session,
    )


def served_id(agent_name: str, group: Any) -> str:
    return f"{agent_name}{SEP}{'' if group is None else group}"


# ----------------------------------------------------------------------- /metrics


async def sample_settings(db: Db, cap: int) -> tuple[list[Doc], int, list[Doc], int]:
    """The first `cap` concurrency limits and start rate limits (by id) and how many of each are set, in
    one command: an aggregation on `concurrency_limits` with `$unionWith` on `start_rate_limits`."""

    def listed(fields: Doc, kind: str) -> list[Doc]:
        items = [{"$sort": {"_id": 1}}, {"$limit": cap}, {"$project": fields}]
        return [{"$facet": {"n": [{"$count": "n"}], "items": items}}, {"$set": {"kind": kind}}]

    cursor = await db[CONCURRENCY_LIMITS.name].aggregate(
        [
            *listed({"max": 1}, "limits"),
            {
                "$unionWith": {
                    "coll": START_RATE_LIMITS.name,
                    "pipeline": listed({"max": 1, "per_seconds": 1}, "rates"),
                }
            },
        ],
        comment=BACKGROUND,
    )
    out: dict[str, tuple[list[Doc], int]] = {"limits": ([], 0), "rates": ([], 0)}
    async for doc in cursor:
        counted = doc.get("n") or [{}]
        out[doc["kind"]] = (list(doc.get("items") or []), int(counted[0].get("n", 0)))
    return (*out["limits"], *out["rates"])


def _due(now: dt.datetime) -> Doc:
    """The claim gate (`steering._gate`) as an expression: pending or retrying, due, not expired."""
    return {
        "$and": [
            {"$in": ["$status", [Status.PENDING, Status.RETRYING]]},
            {"$not": [{"$gt": ["$not_before", now]}]},
            {"$not": [{"$gt": ["$next_attempt_at", now]}]},
            {
                "$or": [
                    {"$eq": [{"$ifNull": ["$expires_at", None]}, None]},
                    {"$gt": ["$expires_at", now]},
                    {"$eq": [{"$type": "$expires_at"}, "string"]},
                ]
            },
        ]
    }


async def sample_counts(
    db: Db, keys: Mapping[str, Iterable[str]], now: dt.datetime
) -> dict[str, tuple[int, int]]:
    """(tasks in progress, tasks claimable now) under each limit, limit id → counts, in one aggregation:
    the unfinished tasks of the limits' agents, workflows and keys (`keys`: scope → keys), counted per
    scope in a `$facet`. It reads every unfinished task under those keys (the agent and workflow indexes;
    for concurrency keys, the tasks by status): callers sample it, they do not run it per request."""
    by_scope = {scope: sorted(set(values)) for scope, values in keys.items() if values}
    if not by_scope:
        return {}
    due = _due(now)
    facets: Doc = {}
    for scope, values in by_scope.items():
        field_name = SCOPE_FIELDS[scope]
        facets[scope] = [
            {"$match": {field_name: {"$in": values}}},
            {
                "$group": {
                    "_id": f"${field_name}",
                    "running": {"$sum": {"$cond": [{"$eq": ["$status", Status.IN_PROGRESS]}, 1, 0]}},
                    "ready": {"$sum": {"$cond": [due, 1, 0]}},
                }
            },
        ]
    projected = dict.fromkeys(
        ("status", "not_before", "next_attempt_at", "expires_at", *SCOPE_FIELDS.values()), 1
    )
    cursor = await db[AGENT_TASK_STATES.name].aggregate(
        [
            {
                "$match": {
                    "status": {"$in": [Status.IN_PROGRESS, Status.PENDING, Status.RETRYING]},
                    "$or": [{SCOPE_FIELDS[scope]: {"$in": values}} for scope, values in by_scope.items()],
                }
            },
            {"$project": {"_id": 0, **projected}},
            {"$facet": facets},
        ],
        comment=BACKGROUND,
    )
    out: dict[str, tuple[int, int]] = {}
    async for doc in cursor:
        for scope in by_scope:
            for group in doc.get(scope) or []:
                out[limit_id(scope, str(group["_id"]))] = (int(group["running"]), int(group["ready"]))
    return out


async def sample_starts(db: Db, windows: Mapping[str, int]) -> dict[str, int]:
    """The starts each rate limit allowed in one window (`windows`: limit id → window), limit id → count, in
    one aggregation over the windows' ranges of `_id`s (the `_id` index)."""
    if not windows:
        return {}
    ranges = {lid: window_prefix(lid, window) for lid, window in windows.items()}

    def within(prefix: str) -> Doc:
        return {"$and": [{"$gte": ["$_id", prefix]}, {"$lt": ["$_id", prefix[:-1] + "$"]}]}

    cursor = await db[START_WINDOWS.name].aggregate(
        [
            {"$match": {"$or": [{"_id": {"$gte": p, "$lt": p[:-1] + "$"}} for p in ranges.values()]}},
            {
                "$group": {
                    "_id": {
                        "$switch": {
                            "branches": [{"case": within(p), "then": lid} for lid, p in ranges.items()],
                            "default": None,
                        }
                    },
                    "n": {"$sum": 1},
                }
            },
        ],
        comment=BACKGROUND,
    )
    return {doc["_id"]: int(doc["n"]) async for doc in cursor if doc["_id"] is not None}


def sampling(seconds: float) -> AbstractContextManager[None]:
    """Bound the commands run inside it to `seconds` in all (PyMongo's `timeout`: mongod stops too)."""
    return pymongo.timeout(seconds)


class _Marker:
    pass


_START, _NULL = _Marker(), _Marker()
