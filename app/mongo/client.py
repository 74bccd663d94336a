"""Building the PyMongo async client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandListener


def make_client(uri: str, listeners: Sequence[CommandListener] = ()) -> AsyncMongoClient[dict[str, Any]]:
    """A client that returns timezone-aware datetimes (so the API always answers in UTC with an offset)."""
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        uuidRepresentation="standard",
        event_listeners=list(listeners),
        appname="agent-tasks",
    )
