"""What a failed MongoDB call means for the client that caused it.

PyMongo raises one family of exceptions for very different situations. The API layers ask `classify`
which one a failure is, and answer each the same way in GraphQL and REST:

* **unavailable** (`DATABASE_UNAVAILABLE`, REST 503 with `Retry-After`): no server could be selected
  within `MONGODB_SERVER_SELECTION_TIMEOUT_SECONDS`, the connection broke, or the primary stepped down or
  is shutting down. Nothing about the request is wrong; it can be sent again.
* **timeout** (`DATABASE_TIMEOUT`, REST 504): MongoDB answered, but the operation did not finish within
  `MONGODB_TIMEOUT_SECONDS`. A write may or may not have been committed: send it again with the same
  idempotency key.

A query built from a client's filter is run under `filter_time_limit`, which turns its running out of
time into `FilterTooSlow`, and MongoDB's refusal of the filter itself (a case the validator in
`app.store.filters` did not foresee) into a `FilterError` quoting MongoDB, so neither is a server error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import pymongo
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError, ServerSelectionTimeoutError

from app.domain import ErrorCode
from app.store.filters import FilterError
from app.store.types import Db

__all__ = [
    "DatabaseFailure",
    "FilterTooSlow",
    "classify",
    "describe",
    "filter_time_limit",
    "require_database",
]

#: Server error codes that mean "this server cannot serve you now" (not "your request is wrong"):
#: HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress, PrimarySteppedDown,
#: InterruptedAtShutdown, InterruptedDueToReplStateChange, NotWritablePrimary, NotPrimaryNoSecondaryOk,
#: NotPrimaryOrSecondary, SocketException.
_UNAVAILABLE_CODES = frozenset({6, 7, 89, 91, 189, 11600, 11602, 10107, 13435, 13436, 9001})
#: WriteConcernTimeout: the write was not replicated to a majority in time.
_WRITE_CONCERN_TIMEOUT = 64
#: Codes with which MongoDB refuses a query's filter as malformed: BadValue, FailedToParse, TypeMismatch,
#: InvalidOptions, and the invalid-regular-expression codes (51091 invalid, 51109/51110 a NUL byte or
#: bad options).
_BAD_QUERY_CODES = frozenset({2, 9, 14, 72, 51091, 51108, 51109, 51110})


@dataclass(frozen=True)
class DatabaseFailure:
    """A MongoDB failure the client is told about: which kind, and one sentence for it."""

    kind: Literal["unavailable", "timeout"]
    message: str

    @property
    def code(self) -> ErrorCode:
        """GraphQL's `extensions.code`; REST answers `code.rest`."""
        return ErrorCode.DATABASE_UNAVAILABLE if self.kind == "unavailable" else ErrorCode.DATABASE_TIMEOUT


UNAVAILABLE = DatabaseFailure(
    "unavailable", "The database is unavailable right now; nothing was done. Try again in a few seconds."
)
TIMEOUT = DatabaseFailure(
    "timeout",
    "The database did not finish the operation in time. Try again; a write may or may not have been"
    " applied, so send it again with the same idempotency key.",
)


def classify(exc: BaseException) -> DatabaseFailure | None:
    """The failure to report for `exc` (also when it is the cause of another exception); None when `exc`
    is not a MongoDB availability or timeout failure (a bug, or a refusal handled elsewhere)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PyMongoError):
            return _classify_pymongo(current)
        current = current.__cause__ or current.__context__
    return None


def describe(exc: BaseException) -> str:
    """The driver's message for a log line, without the topology dump PyMongo appends to it."""
    text = str(exc).split(", Timeout:")[0].split(" (configured timeouts:")[0].strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def _classify_pymongo(exc: PyMongoError) -> DatabaseFailure | None:
    # Server selection timing out is "no server", not "too slow", although PyMongo flags it a timeout.
    if isinstance(exc, ServerSelectionTimeoutError):
        return UNAVAILABLE
    if isinstance(exc, OperationFailure) and exc.code in _UNAVAILABLE_CODES:
        return UNAVAILABLE
    if exc.timeout or getattr(exc, "code", None) == _WRITE_CONCERN_TIMEOUT:
        return TIMEOUT  # client-side timeoutMS, maxTimeMS expired, a network or replication timeout
    if isinstance(exc, ConnectionFailure):  # refused or dropped connections, no primary
        return UNAVAILABLE
    if exc.has_error_label("TransientTransactionError"):
        # A transaction still conflicting (another one holds its documents) when the deadline of its
        # retries came: it did not finish in time.
        return TIMEOUT
    if exc.has_error_label("RetryableWriteError"):
        return UNAVAILABLE  # still failing once the driver's retries (within the timeout) were spent
    return None


async def require_database(db: Db, seconds: float) -> None:
    """Fail within `seconds` (ServerSelectionTimeoutError) while no primary is known; free when one is.

    Why: with a client-side operation timeout (`timeoutMS`), PyMongo waits the whole remaining timeout,
    not `serverSelectionTimeoutMS`, to select a server, so with MongoDB down every request would hang for
    MONGODB_TIMEOUT_SECONDS. A request checks first: the driver's view of the deployment answers at once
    while a primary is known (no I/O); otherwise a ping selects one within `seconds` or gives up. The
    driver marks a server unknown on the first network error (the event hub's change stream sees it
    first), so only a request already in flight when MongoDB goes away waits the full timeout."""
    if db.client.topology_description.has_writable_server():
        return
    with pymongo.timeout(seconds):
        await db.command("ping")


class FilterTooSlow(Exception):
    """A query with a client's filter ran out of its `FILTER_MAX_TIME_MS`."""

    def __init__(self, limit_ms: int) -> None:
        super().__init__(
            f"the filter took longer than {limit_ms} ms (FILTER_MAX_TIME_MS) to run in MongoDB and was"
            " stopped; narrow it: match indexed fields exactly, anchor regular expressions (^abc), use fewer"
            " $or branches"
        )
        self.limit_ms = limit_ms


@contextlib.contextmanager
def filter_time_limit(limit_ms: int | None) -> Iterator[None]:
    """Run the MongoDB calls of a query built from a client's filter within `limit_ms` (None: only the
    client's operation timeout). PyMongo sends what is left of it as `maxTimeMS`, so mongod stops the
    query rather than working on after the client gave up."""
    deadline = contextlib.nullcontext() if limit_ms is None else pymongo.timeout(limit_ms / 1000)
    try:
        with deadline:
            yield
    except PyMongoError as exc:
        failure = classify(exc)
        if limit_ms is not None and failure is not None and failure.kind == "timeout":
            raise FilterTooSlow(limit_ms) from exc
        if failure is None and isinstance(exc, OperationFailure) and exc.code in _BAD_QUERY_CODES:
            reason = str((exc.details or {}).get("errmsg") or exc).strip()
            raise FilterError(f"MongoDB refused the filter: {reason}") from exc
        raise
