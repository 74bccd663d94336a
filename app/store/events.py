"""The `task_events` outbox: appending events inside a change's transaction, stamping their commit-order
position afterwards, and reading them in that order.

## Why positions are stamped after commit

A reader that resumes after the last event it saw must get every event that committed later, exactly
once, even when a slow transaction commits after a fast one that started later. So events must be
ordered by *commit*, and no number handed out inside a transaction is: a transaction does not know when
(or whether) it will commit. The first design took numbers from one counter document incremented in
every transaction — correct, because the conflicts on that document serialized every write in the
system; throughput fell as agents were added (151 transitions/s with one client, 17/s with 64).

MongoDB already has a commit order: the oplog. Every change-stream event carries the `clusterTime` of
the oplog entry that committed it, and a transaction's inserts share their commit's `clusterTime` and
arrive in the order they were made. So:

1. `append_events` inserts each event with an ObjectId `_id` and `seq: null`, in the writer's
   transaction (the outbox: the event exists exactly when its change committed). No shared document.
2. The event hub (`app.live.hub`, one per server process) watches the inserts and gives each event its
   position: `seq = position(clusterTime, n)`, an ObjectId made of the commit time's seconds and
   increment and `n`, the event's index within its commit. Every process computes the same position for
   the same event and writes it with `stamp`, in stream order, with `w: majority`, before handing the
   events to its writers and subscribers. The first write sets it; the others match the position
   already there and change nothing (why every process stamps rather than one: `app.live.hub`).
3. Readers only see stamped events, ordered by `seq`, and read from one snapshot (`snapshot` read
   concern): because each process writes stamps in commit order, a stamp is stored only after every
   earlier event's stamp, so whatever snapshot a reader sees holds a prefix of the commit order, and
   resuming after the last `seq` it saw never skips an event.

An event's cursor is its `seq` in hex. A writer waits (briefly) for its events to be stamped before
answering, so what a mutation returns carries its cursors and a read right after it sees them.

## Who did it

Every event records its **actor** (`{kind, id, name}`: the API key, the JWT subject, anonymous, or the
server's own background job) and the **request id** (`X-Request-ID`, the one in the server's log lines)
of the request that wrote it. `append_events` takes both from the context of the call
(`app.principal.current_principal`, set by the authentication middleware or by a background job, and
asgi-correlation-id's request id), so no service has to pass them down. `taskEvents(actorId:)` reads
them back through the `(actor.id, seq)` index.

An event that no process saw committed (every server down at that moment, or a change stream that lost
its history) stays unstamped; `orphans` finds it after a grace period, and the hub stamps it through a
`_CLOCK` marker event: stamped when the marker's commit is reached in the stream, with the marker's
position, so it lands after everything already stamped and before everything committed later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from asgi_correlation_id import correlation_id
from bson import ObjectId, Timestamp
from pymongo import UpdateOne, WriteConcern
from pymongo.read_concern import ReadConcern

from app.principal import SERVER, current_principal
from app.store.collections import TASK_EVENTS
from app.store.cursors import NOT_OURS, CursorError
from app.store.types import BACKGROUND, Db, Doc, Session

Document = Doc
#: Below every position: "from the beginning".
ORIGIN = ObjectId(b"\x00" * 12)
#: The marker event type the orphan sweep inserts (never shown to clients; deleted once used).
CLOCK = "_CLOCK"
_STAMPED = {"$gt": ORIGIN}


async def append_events(db: Db, session: Session, events: list[Doc]) -> None:
    """Insert `events` (unstamped) in the caller's transaction; sets each event's `_id` and `seq`, and its
    `actor` and `request_id` from the call's context unless the event has them already."""
    if not events:
        return
    actor = (current_principal.get() or SERVER).actor
    request_id = correlation_id.get()
    for event in events:
        event.setdefault("_id", ObjectId())
        event.setdefault("actor", actor)
        event.setdefault("request_id", request_id)
        event["seq"] = None
    await db[TASK_EVENTS.name].insert_many(events, session=session)


async def any_about_tasks(db: Db, task_ids: list[Any], session: Session = None) -> bool:
    """Whether any event is about one of these tasks (stamped or not)."""
    found = await db[TASK_EVENTS.name].find_one({"task_id": {"$in": task_ids}}, {"_id": 1}, session=session)
    return found is not None


async def delete_about_tasks(db: Db, task_ids: list[Any], session: Session = None) -> None:
    """Delete every event about these tasks (the demo's reset puts its history back)."""
    await db[TASK_EVENTS.name].delete_many({"task_id": {"$in": task_ids}}, session=session)


def position(cluster_time: Timestamp, n: int) -> ObjectId:
    """The commit-order position of the `n`-th event of the commit at `cluster_time`: 4 bytes of
    seconds, 4 of increment, 4 of index, so ObjectId order (bytewise) is commit order."""
    return ObjectId(
        cluster_time.time.to_bytes(4, "big") + cluster_time.inc.to_bytes(4, "big") + n.to_bytes(4, "big")
    )


def encode_event_cursor(seq: ObjectId) -> str:
    return str(seq)


def decode_event_cursor(cursor: str) -> ObjectId:
    """The position a cursor stands for; anything but 24 hex digits is not one of ours."""
    if len(cursor) != 24 or not ObjectId.is_valid(cursor):
        raise CursorError(NOT_OURS)
    return ObjectId(cursor)


def events_filter(
    *,
    task_id: str | None = None,
    workflow_id: str | None = None,
    agent_id: str | None = None,
    actor_id: str | None = None,
    types: Iterable[str] | None = None,
) -> Document:
    """The MongoDB filter for the events matching every criterion given (None: no criterion).

    An empty `types` matches no event, like the `[...]` list arguments of the other list fields.
    """
    query: Document = {}
    if task_id is not None:
        query["task_id"] = task_id
    if workflow_id is not None:
        query["workflow_id"] = workflow_id
    if agent_id is not None:
        query["agent_id"] = agent_id
    if actor_id is not None:
        query["actor.id"] = actor_id
    if types is not None:
        query["type"] = {"$in": sorted({str(t) for t in types})}
    return query


async def find_events(
    db: Db, query: Mapping[str, Any], *, after: ObjectId | None, limit: int
) -> list[Document]:
    """Up to `limit` stamped events matching `query`, in commit order, strictly after position `after`.

    Read from one snapshot, so the answer is a prefix of the commit order (see the module docstring).
    Served by the `(task_id, seq)`, `(workflow_id, seq)`, `(agent_id, seq)`, `(actor.id, seq)` or
    `(seq, _id)` index.
    """
    mongo_filter: Document = {**query, "seq": {"$gt": after if after is not None else ORIGIN}}
    async with db.client.start_session(snapshot=True) as session:
        # limit = batch size: the whole answer comes in the first batch, never a getMore round trip.
        cursor = db[TASK_EVENTS.name].find(
            mongo_filter, sort=[("seq", 1)], limit=limit, batch_size=limit, session=session
        )
        return [doc async for doc in cursor]


async def count_events(db: Db, query: Mapping[str, Any], *, after: ObjectId | None, limit: int) -> int:
    """How many stamped events match `query` after position `after`, counting no further than `limit`
    (so the answer costs at most `limit` index entries, however long the history)."""
    mongo_filter: Document = {**query, "seq": {"$gt": after if after is not None else ORIGIN}}
    return await db[TASK_EVENTS.name].count_documents(mongo_filter, limit=limit)


async def first_events_of_tasks(
    db: Db, task_ids: Sequence[str], *, types: Iterable[str] | None, first: int
) -> dict[str, list[Document]]:
    """The `first` oldest stamped events of each task (of `types`, when given), in ONE `aggregate`.

    A `find` cannot limit per task, so the events are grouped by task and `$topN` keeps each task's
    oldest `first`; it holds at most `first` events per task in memory, unlike `$push` + `$slice`.
    Tasks without events are absent from the answer.
    """
    ids = list(dict.fromkeys(task_ids))
    if not ids or first <= 0:
        return {}
    match = events_filter(types=types)
    match["task_id"] = {"$in": ids}
    match["seq"] = _STAMPED
    pipeline: list[Document] = [
        {"$match": match},
        # Walks the (task_id, seq) index in order, so no blocking sort is needed before grouping.
        {"$sort": {"task_id": 1, "seq": 1}},
        {
            "$group": {
                "_id": "$task_id",
                "events": {"$topN": {"n": first, "sortBy": {"seq": 1}, "output": "$$ROOT"}},
            }
        },
    ]
    # One group per task at most: a batch one larger than that lets the server answer everything in the
    # first batch and close the cursor, so there is never a getMore round trip.
    cursor = await db[TASK_EVENTS.name].aggregate(pipeline, batchSize=len(ids) + 1)
    return {group["_id"]: group["events"] async for group in cursor}


async def latest_position(db: Db) -> ObjectId:
    """The position of the newest stamped event (ORIGIN when there is none)."""
    coll = db[TASK_EVENTS.name].with_options(read_concern=ReadConcern("majority"))
    doc = await coll.find_one({"seq": _STAMPED}, {"seq": 1}, sort=[("seq", -1)])
    return doc["seq"] if doc else ORIGIN


class Stamped(NamedTuple):
    """What a `stamp` call found: events now holding the position given (`matched`), and how many of
    them this call set (`modified`; the others had it already, set by another process)."""

    matched: int
    modified: int


async def stamp(db: Db, stamps: Sequence[tuple[Any, ObjectId]]) -> Stamped:
    """Give each event `_id` its position, in order, unless it has one; majority-acknowledged, so a
    snapshot read after this returns sees them. An event that already holds the same position counts as
    matched and is not written again (every server process stamps every event, with the same position)."""
    if not stamps:
        return Stamped(0, 0)
    coll = db[TASK_EVENTS.name].with_options(write_concern=WriteConcern("majority"))
    result = await coll.bulk_write(
        [UpdateOne({"_id": _id, "seq": {"$in": [None, seq]}}, {"$set": {"seq": seq}}) for _id, seq in stamps],
        comment=BACKGROUND,
    )
    return Stamped(result.matched_count, result.modified_count)


async def positions_of(db: Db, ids: list[Any]) -> dict[Any, ObjectId | None]:
    """The stored position of each of these events."""
    cursor = db[TASK_EVENTS.name].find({"_id": {"$in": ids}}, {"seq": 1}, comment=BACKGROUND)
    return {doc["_id"]: doc.get("seq") async for doc in cursor}


async def orphans(db: Db, older_than: dt.datetime, limit: int = 1000) -> list[Any]:
    """Ids of events still unstamped that were appended before `older_than` (oldest first): events whose
    commit no change stream saw. Markers are left out."""
    cursor = db[TASK_EVENTS.name].find(
        {"seq": None, "_id": {"$lt": ObjectId.from_datetime(older_than)}, "type": {"$ne": CLOCK}},
        {"_id": 1},
        sort=[("seq", 1), ("_id", 1)],
        limit=limit,
        comment=BACKGROUND,
    )
    return [doc["_id"] async for doc in cursor]


async def insert_clock(db: Db, orphan_ids: list[Any]) -> None:
    """Insert a `_CLOCK` marker naming events to stamp once its commit is reached in the stream."""
    await db[TASK_EVENTS.name].insert_one(
        {"_id": ObjectId(), "type": CLOCK, "seq": None, "orphans": orphan_ids}
    )


async def remove_clock(db: Db, marker_id: Any) -> None:
    await db[TASK_EVENTS.name].delete_one({"_id": marker_id, "type": CLOCK})


async def watch_changes(db: Db, *, resume_after: Any = None) -> Any:
    """A change stream, in commit order, of the events inserted into `task_events`, resumed after a
    token. (Stamps, being updates, are left out: every process writes its own.)"""
    return await db[TASK_EVENTS.name].watch(
        [{"$match": {"operationType": "insert"}}], resume_after=resume_after
    )


async def by_ids(db: Db, ids: list[Any], session: Session = None) -> list[Doc]:
    """The events with these ids, in the order of `ids` (missing ones left out)."""
    found = {e["_id"]: e async for e in db[TASK_EVENTS.name].find({"_id": {"$in": ids}}, session=session)}
    return [found[i] for i in ids if i in found]
