"""Small server-wide settings kept in the database (`server_config`), shared by every server process."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, ServerSelectionTimeoutError

from app.store.collections import SERVER_CONFIG
from app.store.types import BACKGROUND, Db


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


async def ping(db: Db, seconds: float | None = None) -> None:
    """Raise unless MongoDB (the primary) answers within `seconds` (the readiness check).

    The asyncio deadline is the hard bound: PyMongo's own can run over it by a retry (a ping on a
    connection that just broke is retried, and took twice `seconds` in all)."""
    try:
        async with asyncio.timeout(seconds):
            with pymongo.timeout(seconds):
                await db.command("ping")
    except TimeoutError as exc:
        raise ServerSelectionTimeoutError(f"MongoDB did not answer a ping within {seconds:g} s") from exc


async def take_lease(db: Db, name: str, owner: str, seconds: float) -> bool:
    """Take or renew the lease `name` for `owner` until `seconds` from now; False while another owner
    holds an unexpired one. (Server processes share a clock closely enough for leases of seconds.)"""
    now = dt.datetime.now(dt.UTC)
    try:
        doc = await db[SERVER_CONFIG.name].find_one_and_update(
            {"_id": name, "$or": [{"owner": owner}, {"until": {"$lt": now}}]},
            {"$set": {"owner": owner, "until": now + dt.timedelta(seconds=seconds)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            comment=BACKGROUND,
        )
    except DuplicateKeyError:  # held by another owner: the upsert collided with the existing lease
        return False
    return doc is not None and doc.get("owner") == owner


async def release_lease(db: Db, name: str, owner: str) -> None:
    """Give the lease up (if `owner` holds it), so another process can take it at once."""
    await db[SERVER_CONFIG.name].update_one(
        {"_id": name, "owner": owner},
        {"$set": {"until": dt.datetime.fromtimestamp(0, dt.UTC)}},
        comment=BACKGROUND,
    )
