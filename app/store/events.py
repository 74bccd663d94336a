"""Reads of the `task_events` outbox: a filtered list in commit order resumed after a cursor, and the first
events of many tasks at once (for the nested `events` fields, batched by a dataloader).

Events are numbered in commit order: `append_events` takes their `_id`s from a counter incremented inside
the writing transaction. Two transactions that both append events conflict on that counter, so the one
that commits second always gets the larger numbers, and a client resuming after the last `_id` it saw
never skips an event that committed late. (ObjectIds would not do: they are made when a transaction
runs, not when it commits.) An event's cursor is its number in decimal; a client resumes exactly after
the last event it saw. Every read here is served by one of the `(task_id, _id)`,
`(workflow_id, _id)` or `(agent_id, _id)` indexes (or `_id` itself when no filter is given), so a page costs
the same however far the client has read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from app.store.collections import COUNTERS, TASK_EVENTS
from app.store.cursors import NOT_OURS, CursorError
from app.store.types import Db, Doc, Session

Document = Doc


async def append_events(
    db: AsyncDatabase[Document], session: AsyncClientSession | None, events: list[Document]
) -> None:
    """Number `events` in order and insert them, in the caller's transaction. Sets each event's `_id`.

    The counter is incremented last-but-one, just before the insert, so a transaction holds it (and makes
    concurrent appenders wait and retry) for as short a time as possible.
    """
    if not events:
        return
    counter = await db[COUNTERS.name].find_one_and_update(
        {"_id": TASK_EVENTS.name},
        {"$inc": {"value": len(events)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    first = counter["value"] - len(events) + 1
    for n, event in enumerate(events):
        event["_id"] = first + n
    await db[TASK_EVENTS.name].insert_many(events, session=session)


def decode_event_cursor(cursor: str) -> int:
    """The event number a cursor stands for; anything but a positive decimal number is not one of ours."""
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18 or int(cursor) < 1:
        raise CursorError(NOT_OURS)
    return int(cursor)


def events_filter(
    *,
    task_id: str | None = None,
    workflow_id: str | None = None,
    agent_id: str | None = None,
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
    if types is not None:
        query["type"] = {"$in": sorted({str(t) for t in types})}
    return query


async def find_events(
    db: AsyncDatabase[Document], query: Mapping[str, Any], *, after: int | None, limit: int
) -> list[Document]:
    """Up to `limit` events matching `query`, oldest first, strictly after the event `after`."""
    mongo_filter: Document = dict(query)
    if after is not None:
        mongo_filter["_id"] = {"$gt": after}
    # limit = batch size: the whole answer comes in the first batch, never a getMore round trip.
    cursor = db[TASK_EVENTS.name].find(mongo_filter, sort=[("_id", 1)], limit=limit, batch_size=limit)
    return [doc async for doc in cursor]


async def first_events_of_tasks(
    db: AsyncDatabase[Document], task_ids: Sequence[str], *, types: Iterable[str] | None, first: int
) -> dict[str, list[Document]]:
    """The `first` oldest events of each task (of `types`, when given), in ONE `aggregate`.

    A `find` cannot limit per task, so the events are grouped by task and `$topN` keeps each task's
    oldest `first`; it holds at most `first` events per task in memory, unlike `$push` + `$slice`.
    Tasks without events are absent from the answer.
    """
    ids = list(dict.fromkeys(task_ids))
    if not ids or first <= 0:
        return {}
    match = events_filter(types=types)
    match["task_id"] = {"$in": ids}
    pipeline: list[Document] = [
        {"$match": match},
        # Walks the (task_id, _id) index in order, so no blocking sort is needed before grouping.
        {"$sort": {"task_id": 1, "_id": 1}},
        {
            "$group": {
                "_id": "$task_id",
                "events": {"$topN": {"n": first, "sortBy": {"_id": 1}, "output": "$$ROOT"}},
            }
        },
    ]
    # One group per task at most: a batch one larger than that lets the server answer everything in the
    # first batch and close the cursor, so there is never a getMore round trip.
    cursor = await db[TASK_EVENTS.name].aggregate(pipeline, batchSize=len(ids) + 1)
    return {group["_id"]: group["events"] async for group in cursor}


async def latest_event_id(db: AsyncDatabase[Document]) -> int:
    """The number of the newest committed event (0 when there is none)."""
    doc = await db[TASK_EVENTS.name].find_one({}, {"_id": 1}, sort=[("_id", -1)])
    return doc["_id"] if doc else 0


async def watch_inserts(db: Db, *, resume_after: Any = None) -> Any:
    """A change stream of the events inserted into `task_events`, in commit order, resumed after a token."""
    return await db[TASK_EVENTS.name].watch(
        [{"$match": {"operationType": "insert"}}], resume_after=resume_after
    )


async def by_ids(db: Db, ids: list[Any], session: Session = None) -> list[Doc]:
    """The events with these ids, in the order of `ids` (missing ones left out)."""
    found = {e["_id"]: e async for e in db[TASK_EVENTS.name].find({"_id": {"$in": ids}}, session=session)}
    return [found[i] for i in ids if i in found]
