"""The `api_keys` collection: one document per API key, with the SHA-256 of its secret (never the secret)."""

from __future__ import annotations

import datetime as dt

from app.store.collections import API_KEYS
from app.store.types import Db, Doc


async def insert(db: Db, doc: Doc) -> None:
    await db[API_KEYS.name].insert_one(doc)


async def by_hash(db: Db, secret_hash: str) -> Doc | None:
    return await db[API_KEYS.name].find_one({"hash": secret_hash})


async def by_id(db: Db, key_id: str) -> Doc | None:
    return await db[API_KEYS.name].find_one({"_id": key_id}, {"hash": 0})


async def list_all(db: Db) -> list[Doc]:
    """Every key, newest first, without the hashes."""
    return await db[API_KEYS.name].find({}, {"hash": 0}).sort("created_at", -1).to_list(None)


async def revoke(db: Db, key_id: str, now: dt.datetime) -> Doc | None:
    """Mark the key revoked (the first revocation's time is kept); None when there is no such key."""
    await db[API_KEYS.name].update_one({"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": now}})
    return await by_id(db, key_id)


async def touch(db: Db, key_id: str, now: dt.datetime, older_than: dt.datetime) -> None:
    """Set `last_used_at`, unless it was set after `older_than` (so a busy key costs one write a minute)."""
    await db[API_KEYS.name].update_one(
        {"_id": key_id, "$or": [{"last_used_at": None}, {"last_used_at": {"$lt": older_than}}]},
        {"$set": {"last_used_at": now}},
    )
