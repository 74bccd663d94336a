"""Running a unit of work in a MongoDB transaction, retried on transient errors.

PyMongo's `with_transaction` retries the callback on `TransientTransactionError` (e.g. a write conflict
with a concurrent transaction) and the commit on `UnknownTransactionCommitResult`, so a callback must be
safe to run again: it re-reads what it needs and decides afresh. Exceptions it raises abort the
transaction and propagate unchanged.

The whole unit, retries included, runs within the client's operation timeout (`MONGODB_TIMEOUT_SECONDS`):
`with_transaction` alone would retry for up to 120 s, and each operation inside would get a fresh timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pymongo
from pymongo import ReadPreference, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern

T = TypeVar("T")


async def in_transaction(
    db: AsyncDatabase[dict[str, Any]], work: Callable[[AsyncClientSession], Awaitable[T]]
) -> T:
    """Run `work(session)` in a snapshot transaction with majority commit; return what it returns."""
    with pymongo.timeout(db.client.options.timeout):
        async with db.client.start_session() as session:
            return await session.with_transaction(
                work,
                read_concern=ReadConcern("snapshot"),
                write_concern=WriteConcern("majority"),
                read_preference=ReadPreference.PRIMARY,
            )
