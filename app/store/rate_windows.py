"""Fixed-window counters for the rate limits (`app/ratelimit.py`), in `rate_limit_counters`.

One document per caller, scope and window, `_id` naming all three: a hit is one `findOneAndUpdate` that
upserts it and increments `count`, so every server process on the database counts into the same window.
The document carries the window's end in `expire_at`, on a TTL index, so MongoDB removes finished windows
by itself (its TTL monitor runs every minute: a finished window may linger that long, never counted again
since the next window has another `_id`).

MUST: an increment is atomic (one document, one update); two processes upserting the same new window at
once may collide on `_id` (DuplicateKeyError) — the loser retries once and then finds the document.
"""

from __future__ import annotations

import datetime as dt

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.store.collections import RATE_LIMIT_COUNTERS
from app.store.types import Db


async def hit(db: Db, key: str, window_end: dt.datetime) -> int:
    """Count one hit in the window `key` (which ends at `window_end`); the window's count after it."""
    collection = db[RATE_LIMIT_COUNTERS.name]
    for attempt in (1, 2):
        try:
            doc = await collection.find_one_and_update(
                {"_id": key},
                {"$inc": {"count": 1}, "$setOnInsert": {"expire_at": window_end}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            if attempt == 2:
                raise
            continue  # another process created this window a moment ago: increment it
        assert doc is not None  # an upsert returning the document after it always has one
        return int(doc["count"])
    raise AssertionError("unreachable")  # pragma: no cover
