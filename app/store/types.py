"""The types every store function speaks: a document, the database handle, and an optional session.

A `Session` is passed by services that compose several store calls into one transaction
(`app.store.transactions.in_transaction`); None runs the call on its own.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]
Db = AsyncDatabase[Doc]
Collection = AsyncCollection[Doc]
Session = AsyncClientSession | None
#: The `comment` on every command the server sends on its own (sweeps, stamping, leases), not for a
#: request: it shows in MongoDB's logs and profiler, and lets tests count a request's commands exactly.
BACKGROUND = "agent-tasks:background"
