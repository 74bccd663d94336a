"""Building the PyMongo async client, and the start-up check that the deployment is usable."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pymongo
from pymongo import AsyncMongoClient
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.monitoring import CommandListener

#: The `appName` of this server's MongoDB clients; a server process adds its own id (`app_name`).
APP_NAME = "agent-tasks"


def app_name(process_id: str) -> str:
    """The `appName` a server process's clients carry: MongoDB shows it with each of their connections and
    open transactions, which is how another process finds those of one that died (app/live/presence.py)."""
    return f"{APP_NAME}/{process_id}"


class MongoUnavailable(RuntimeError):
    """MongoDB cannot be used by this server; the message says why and what to do, in one sentence."""


def make_client(
    uri: str,
    listeners: Sequence[CommandListener] = (),
    *,
    timeout_seconds: float | None = None,
    server_selection_timeout_seconds: float | None = None,
    appname: str = APP_NAME,
) -> AsyncMongoClient[dict[str, Any]]:
    """A client that returns timezone-aware datetimes (so the API always answers in UTC with an offset).

    `timeout_seconds` is PyMongo's client-side operation timeout (`timeoutMS`): every operation, its
    server selection, connection checkout and round trips included, ends within it, and each command
    carries the `maxTimeMS` left, so mongod stops working on it too. `server_selection_timeout_seconds`
    bounds the wait for a usable server (PyMongo's default is 30 s), so an unreachable MongoDB fails a
    request in that time. Options given in the URI win over these, except `appname`, which names the
    client to MongoDB: a server process's own name must reach MongoDB (app/live/presence.py).

    Raises `MongoUnavailable` when the URI itself is unusable (not a MongoDB URI, an unknown option…)."""
    options: dict[str, Any] = {}
    if timeout_seconds is not None:
        options["timeoutMS"] = round(timeout_seconds * 1000)
    if server_selection_timeout_seconds is not None:
        options["serverSelectionTimeoutMS"] = round(server_selection_timeout_seconds * 1000)
    # Read without resolving anything (parse_uri would look a mongodb+srv:// name up in DNS).
    uri_options = {key.lower() for key in parse_qs(urlsplit(uri).query)}
    try:
        return AsyncMongoClient(
            uri,
            tz_aware=True,
            uuidRepresentation="standard",
            event_listeners=list(listeners),
            appname=appname,
            **{key: value for key, value in options.items() if key.lower() not in uri_options},
        )
    except ConfigurationError as exc:
        raise MongoUnavailable(
            f"MONGODB_URI is not a usable MongoDB connection string ({_first_line(exc)}); fix it, or leave it"
            " unset to use the embedded MongoDB."
        ) from exc


async def check_deployment(client: AsyncMongoClient[dict[str, Any]], seconds: float) -> None:
    """Wait (at most `seconds`) for a writable primary and check it can run this server: a replica
    set or a sharded cluster, since transactions and change streams need one.

    Raises `MongoUnavailable` with one sentence saying what to do, instead of the driver's traceback later
    (the driver alone would wait 30 s for each operation and then fail somewhere inside start-up)."""
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                with pymongo.timeout(max(deadline - time.monotonic(), 0.001)):
                    hello = await client.admin.command("hello")
                break
            except (ServerSelectionTimeoutError, AutoReconnect):
                # Server selection gives up after its own (shorter) timeout: try again until ours ends.
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.05)
    except ExecutionTimeout as exc:  # connected, but `hello` itself ran out of time
        raise _no_answer(client, exc, seconds) from exc
    except OperationFailure as exc:  # it answered, but refused (authentication, authorization…)
        raise MongoUnavailable(
            f"MongoDB refused the connection ({_first_line(exc)}); fix the credentials or options in"
            " MONGODB_URI."
        ) from exc
    except ConfigurationError as exc:  # e.g. a mongodb+srv:// name that does not resolve
        raise MongoUnavailable(
            f"MONGODB_URI cannot be used ({_first_line(exc)}); fix it, or leave it unset to use the embedded"
            " MongoDB."
        ) from exc
    except PyMongoError as exc:  # no server selected in time: unreachable, no primary, wrong set name…
        raise _no_answer(client, exc, seconds) from exc
    if not hello.get("setName") and hello.get("msg") != "isdbgrid":
        where = ", ".join(
            f"{host}:{port}" for host, port in client.topology_description.server_descriptions()
        )
        raise MongoUnavailable(
            f"MongoDB at {where} is a standalone server, but agent-tasks needs a replica set (transactions"
            " and change streams); restart mongod with --replSet rs0 and run rs.initiate() once (one node is"
            " enough), or use Atlas, or leave MONGODB_URI unset to use the embedded MongoDB."
        )


def _no_answer(
    client: AsyncMongoClient[dict[str, Any]], exc: PyMongoError, timeout: float
) -> MongoUnavailable:
    return MongoUnavailable(
        f"MongoDB did not answer within {timeout:g} s ({_unreachable_reason(client, exc)}); start it or fix"
        " MONGODB_URI (unset: the embedded MongoDB), or raise MONGODB_STARTUP_TIMEOUT_SECONDS."
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# "(configured timeouts: socketTimeoutMS: …)" that PyMongo appends to network errors.
_CONFIGURED = re.compile(r"\s*\(configured timeouts:[^)]*\)")


def _unreachable_reason(client: AsyncMongoClient[dict[str, Any]], exc: PyMongoError) -> str:
    """Why no server answered, short: each server's last error, else the driver's summary."""
    reasons = [
        _CONFIGURED.sub("", str(description.error))
        for description in client.topology_description.server_descriptions().values()
        if description.error is not None
    ]
    if reasons:
        return "; ".join(reasons)
    return _CONFIGURED.sub("", str(exc)).split(", Timeout:")[0]
