"""The `idempotency_keys` collection: the answers kept for mutations sent with an idempotency key."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app.store.collections import IDEMPOTENCY_KEYS
from app.store.types import Db, Doc, Session


async def get(db: Db, key: str, session: Session = None) -> Doc | None:
    return await db[IDEMPOTENCY_KEYS.name].find_one({"_id": key}, session=session)


async def insert(
    db: Db,
    key: str,
    operation: str,
    answer: dict[str, Any],
    now: dt.datetime,
    session: Session = None,
    payload_hash: str | None = None,
) -> None:
    """Keep `answer` (and the request's fingerprint) under `key`; a concurrent insert of the same key
    conflicts on `_id`."""
    doc = {"_id": key, "operation": operation, "answer": answer, "created_at": now}
    if payload_hash is not None:
        doc["payload_hash"] = payload_hash
    await db[IDEMPOTENCY_KEYS.name].insert_one(doc, session=session)
