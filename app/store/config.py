"""Small server-wide settings kept in the database (`server_config`), shared by every server process."""

from __future__ import annotations

import secrets

from pymongo import ReturnDocument

from app.store.collections import SERVER_CONFIG
from app.store.types import Db


async def shared_secret(db: Db, name: str) -> bytes:
    """A random secret created once per database, so every process signs and checks cursors alike.

    `$setOnInsert` with an upsert makes concurrent first starts agree on one value.
    """
    doc = await db[SERVER_CONFIG.name].find_one_and_update(
        {"_id": name},
        {"$setOnInsert": {"value": secrets.token_hex(32)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    assert doc is not None  # an upsert returning the document after always finds one
    return bytes.fromhex(doc["value"])


async def ping(db: Db) -> None:
    """Raise unless MongoDB answers (the health check)."""
    await db.command("ping")
