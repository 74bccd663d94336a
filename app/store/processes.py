"""The server processes registered on a database (`server_processes`), and the transactions they have open.

Each process registers itself with a heartbeat (`register`, renewed; `until` is when it lapses) under the
`appName` its MongoDB clients carry (`app.mongo.client.make_client`). What MongoDB says about those names
(`open_transactions`, `connected`) and `kill_sessions` are what `app.live.presence` needs to abort the
transactions a dead process left open; the rules are there.

MongoDB's `$currentOp` and `killSessions` run with the process's own rights: with access control, a user
sees and kills only its own sessions, so every process must log in as the same user (or one with the
`inprog` and `killAnySession` privileges).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from bson import Binary

from app.store.collections import SERVER_PROCESSES
from app.store.types import BACKGROUND, Db


@dataclass(frozen=True)
class Registration:
    """A registered server process: its id, the `appName` of its clients, where it runs, until when its
    last heartbeat vouches for it and whether that time has passed (by the primary's clock)."""

    id: str
    app_name: str
    until: dt.datetime
    host: str = ""
    pid: int = 0
    lapsed: bool = False


@dataclass(frozen=True)
class OpenTransaction:
    """A transaction open on the server asked: whose (`app_name`), its session's id (for `kill_sessions`),
    and how long it has been idle between two commands (0 while one runs)."""

    app_name: str
    session_id: Any
    inactive_seconds: float


async def register(db: Db, process_id: str, app_name: str, seconds: float, host: str, pid: int) -> None:
    """Write (or renew) a process's registration, valid for `seconds` from now.

    Times are the primary's (`$$NOW`), here and in `others`, so processes on hosts whose clocks differ
    still agree on who lapsed."""
    await db[SERVER_PROCESSES.name].update_one(
        {"_id": process_id},
        [
            {
                "$set": {
                    "app_name": app_name,
                    "host": host,
                    "pid": pid,
                    "until": {"$add": ["$$NOW", round(seconds * 1000)]},
                    "renewed_at": "$$NOW",
                    "started_at": {"$ifNull": ["$started_at", "$$NOW"]},
                }
            }
        ],
        upsert=True,
        comment=BACKGROUND,
    )


async def others(db: Db, process_id: str) -> list[Registration]:
    """Every registration but this process's own."""
    cursor = db[SERVER_PROCESSES.name].find(
        {"_id": {"$ne": process_id}, "until": {"$type": "date"}},
        {"app_name": 1, "until": 1, "host": 1, "pid": 1, "lapsed": {"$lt": ["$until", "$$NOW"]}},
        comment=BACKGROUND,
    )
    return [
        Registration(
            id=doc["_id"],
            app_name=str(doc.get("app_name", "")),
            until=doc["until"],
            host=str(doc.get("host", "")),
            pid=int(doc.get("pid") or 0),
            lapsed=bool(doc.get("lapsed")),
        )
        async for doc in cursor
    ]


async def forget(db: Db, registration: Registration) -> bool:
    """Remove a registration as it was read (a renewal since keeps it); whether this call removed it."""
    result = await db[SERVER_PROCESSES.name].delete_one(
        {"_id": registration.id, "until": registration.until}, comment=BACKGROUND
    )
    return result.deleted_count == 1


async def unregister(db: Db, process_id: str) -> None:
    """Remove a process's own registration (on a clean shutdown)."""
    await db[SERVER_PROCESSES.name].delete_one({"_id": process_id}, comment=BACKGROUND)


async def open_transactions(db: Db, app_names: list[str]) -> list[OpenTransaction]:
    """The transactions open on the server (idle between two commands, or running one) of clients with
    these `appName`s."""
    pipeline: list[dict[str, Any]] = [
        {"$currentOp": {"allUsers": False, "idleSessions": True, "idleConnections": False}},
        {
            "$match": {
                "appName": {"$in": app_names},
                "transaction": {"$exists": True},
                "lsid.id": {"$exists": True},
            }
        },
        {"$project": {"appName": 1, "lsid.id": 1, "inactive": "$transaction.timeInactiveMicros"}},
    ]
    cursor = await db.client.admin.aggregate(pipeline, comment=BACKGROUND)
    return [
        OpenTransaction(doc["appName"], doc["lsid"]["id"], float(doc.get("inactive") or 0) / 1e6)
        async for doc in cursor
    ]


async def connected(db: Db, app_names: list[str]) -> set[str]:
    """Which of these `appName`s have a connection open to the server asked (idle ones included)."""
    pipeline: list[dict[str, Any]] = [
        {"$currentOp": {"allUsers": False, "idleSessions": False, "idleConnections": True}},
        {"$match": {"type": "op", "appName": {"$in": app_names}}},
        {"$group": {"_id": "$appName"}},
    ]
    cursor = await db.client.admin.aggregate(pipeline, comment=BACKGROUND)
    return {doc["_id"] async for doc in cursor}


async def kill_sessions(db: Db, session_ids: list[Any]) -> None:
    """Abort whatever these sessions run and hold (their transactions); a session already gone is fine."""
    if session_ids:
        # As read back (a UUID, by the client's uuidRepresentation), sent as BSON's UUID: a command's
        # own encoding knows no representation.
        ids = [Binary.from_uuid(i) if isinstance(i, uuid.UUID) else i for i in session_ids]
        await db.client.admin.command("killSessions", [{"id": session_id} for session_id in ids])


async def through_mongos(db: Db) -> bool:
    """Whether the client talks to a sharded cluster's router (whose `$currentOp` does not show the
    connections of our processes, only its own to the shards)."""
    hello = await db.client.admin.command("hello")
    return hello.get("msg") == "isdbgrid"
