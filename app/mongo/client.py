"""Building the PyMongo async client, and the server-wide secrets kept in the database."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.monitoring import CommandListener

#: Collection of small server-wide settings shared by every server process on the database.
SERVER_CONFIG = "server_config"


def make_client(uri: str, listeners: Sequence[CommandListener] = ()) -> AsyncMongoClient[dict[str, Any]]:
    """A client that returns timezone-aware datetimes (so the API always answers in UTC with an offset)."""
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        uuidRepresentation="standard",
        event_listeners=list(listeners),
        appname="agent-tasks",
    )


async def shared_secret(db: AsyncDatabase[dict[str, Any]], name: str) -> bytes:
    """A random secret created once per database, so every process signs and checks cursors alike.

    `$setOnInsert` with an upsert makes concurrent first starts agree on one value.
    """
    doc = await db[SERVER_CONFIG].find_one_and_update(
        {"_id": name},
        {"$setOnInsert": {"value": secrets.token_hex(32)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    return bytes.fromhex(doc["value"])
