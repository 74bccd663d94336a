"""Presence (app/live/presence.py): which transactions a heartbeat aborts, and which it never touches.

Real clients on the test's mongod, each named as a server process would be (`app_name`); a process that
"died" is a child Python process SIGKILLed with a transaction open (its kernel closes its connections), or
a registration that lapsed while its client stays connected. End to end, with real servers, it is
tests/test_crash_stall.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import ValidationError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import OperationFailure

from app.live.presence import Presence
from app.mongo.client import app_name, make_client
from app.settings import Settings
from app.store import processes
from tests.support.lifecycle_helpers import held
from tests.support.polling import until

HEARTBEAT = 0.2

#: A process that opens a transaction writing one document, says so, and waits to be killed.
CHILD = """
import sys, time
from pymongo import MongoClient
uri, db, name, doc = sys.argv[1:]
client = MongoClient(uri, appname=name)
session = client.start_session()
session.start_transaction()
client[db].docs.update_one({"_id": doc}, {"$set": {"by": name}}, session=session)
print("open", flush=True)
time.sleep(600)
"""


@asynccontextmanager
async def named_client(uri: str, process_id: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client = make_client(uri, timeout_seconds=10, appname=app_name(process_id))
    try:
        yield client
    finally:
        await client.close()


async def open_write(client: AsyncMongoClient[dict[str, Any]], db_name: str, doc: str) -> AsyncClientSession:
    """A transaction of `client` that has written `doc` and stays open."""
    session = client.start_session()
    await session.start_transaction()
    await client[db_name].docs.update_one({"_id": doc}, {"$set": {"by": "open"}}, session=session)
    return session


def killed_child(uri: str, db_name: str, process_id: str, doc: str) -> None:
    """Run a child process that holds `doc` in a transaction, and SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, uri, db_name, app_name(process_id), doc],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "open"
    finally:
        child.kill()
        child.wait()


async def test_aborts_the_transactions_of_dead_registered_processes_only(settings: Settings, db: Any) -> None:
    uri, name = settings.mongodb_uri, settings.mongodb_db
    assert uri is not None
    await db.docs.insert_many([{"_id": d} for d in ("crashed", "lapsed", "stranger", "own", "alive")])
    async with (
        named_client(uri, "own") as own,
        named_client(uri, "lapsed") as lapsed,
        named_client(uri, "stranger") as stranger,
        named_client(uri, "alive") as alive,
    ):
        presence = Presence(own[name], "own", app_name("own"), heartbeat_seconds=HEARTBEAT, lapse_seconds=3)
        await presence.beat()  # registered: a beat with nobody else registered asks MongoDB nothing more
        assert [d["_id"] async for d in db.server_processes.find()] == ["own"]
        # Registered and connected, but not renewed: lapsed (as a host that went away).
        await processes.register(own[name], "lapsed", app_name("lapsed"), -1, "elsewhere", 1)
        # Registered and renewed, but SIGKILLed: its connections are closed.
        await processes.register(own[name], "crashed", app_name("crashed"), 60, "here", 2)
        # Registered, renewed and connected: alive, however long its transaction has been idle.
        await processes.register(own[name], "alive", app_name("alive"), 60, "here", 3)
        # "stranger" (not registered here: another deployment's process on the same MongoDB) and this
        # process itself: never touched.
        sessions = [
            await open_write(lapsed, name, "lapsed"),
            await open_write(stranger, name, "stranger"),
            await open_write(own, name, "own"),
            await open_write(alive, name, "alive"),
        ]
        killed_child(uri, name, "crashed", "crashed")
        await asyncio.sleep(HEARTBEAT * 1.5)  # every transaction idle a heartbeat long

        assert await presence.beat() == 2
        assert presence.aborted == 2
        async with named_client(uri, "probe") as probe:
            assert {
                d: await held(probe[name].docs, d) for d in ("crashed", "lapsed", "stranger", "own", "alive")
            } == {
                "crashed": False,
                "lapsed": False,
                "stranger": True,
                "own": True,
                "alive": True,
            }
        # The lapsed registration is gone; the crashed one lapses in its own time.
        assert sorted([d["_id"] async for d in db.server_processes.find()]) == ["alive", "crashed", "own"]
        # What the lapsed process's transaction did is undone; it finds out at its next command.
        with pytest.raises(OperationFailure) as caught:
            await sessions[0].commit_transaction()
        assert caught.value.has_error_label("TransientTransactionError")
        for session in sessions[1:]:
            await session.abort_transaction()
            await session.end_session()
        await sessions[0].end_session()
        assert await presence.beat() == 0


async def test_registers_before_it_starts_and_withdraws_when_stopped(settings: Settings, db: Any) -> None:
    assert settings.mongodb_uri is not None
    async with named_client(settings.mongodb_uri, "p1") as client:
        presence = Presence(client[settings.mongodb_db], "p1", app_name("p1"), heartbeat_seconds=HEARTBEAT)
        await presence.start()
        doc = await db.server_processes.find_one({"_id": "p1"})
        assert doc is not None and doc["app_name"] == "agent-tasks/p1" and doc["until"] > doc["renewed_at"]

        async def renewed() -> bool:  # on its next heartbeat, however late a loaded machine makes it
            now = await db.server_processes.find_one({"_id": "p1"})
            return now is not None and now["renewed_at"] > doc["renewed_at"]

        await until(renewed, "the registration's renewal")
        await presence.stop()
        assert await db.server_processes.count_documents({}) == 0


def test_a_lapse_shorter_than_three_heartbeats_is_refused() -> None:
    with pytest.raises(ValidationError, match="PROCESS_LAPSE_SECONDS"):
        Settings(_env_file=None, process_heartbeat_seconds=2, process_lapse_seconds=5)
