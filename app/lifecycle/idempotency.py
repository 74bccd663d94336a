"""Idempotency keys: a mutation retried with the same key gets the first answer and applies nothing twice.

The key's document is inserted in the same transaction as the change it answers, so either both commit
or neither does; two concurrent requests with one key conflict on its `_id`, and the loser, retried by
the transaction, finds the winner's answer. Only successful answers are kept: a refused request wrote
nothing, so sending it again is harmless and is simply evaluated again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import MAX_ID_LENGTH
from app.lifecycle.errors import Invalid
from app.store import events as event_store
from app.store import idempotency as key_store
from app.store.transactions import in_transaction
from app.store.types import Db

T = TypeVar("T")

MAX_KEY_LENGTH = MAX_ID_LENGTH


def check_key(key: str | None) -> None:
    if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise Invalid("idempotency_key", f"idempotency key must be 1 to {MAX_KEY_LENGTH} characters long")


async def recall(
    db: Db, session: AsyncClientSession, key: str | None, operation: str
) -> dict[str, Any] | None:
    """The stored answer for `key`, or None. A key reused for another operation is refused."""
    if key is None:
        return None
    doc = await key_store.get(db, key, session)
    if doc is None:
        return None
    if doc["operation"] != operation:
        raise Invalid(
            "idempotency_key", f"idempotency key was already used for {doc['operation']}, not for {operation}"
        )
    return doc["answer"]


async def remember(
    db: Db,
    session: AsyncClientSession,
    key: str | None,
    operation: str,
    answer: dict[str, Any],
    now: dt.datetime,
) -> None:
    """Store the answer under `key`, in the caller's transaction."""
    if key is not None:
        await key_store.insert(db, key, operation, answer, now, session)


async def run_once(
    db: Db,
    key: str | None,
    operation: str,
    work: Callable[[AsyncClientSession], Awaitable[T]],
    *,
    encode: Callable[[T], dict[str, Any] | None],
    decode: Callable[[Mapping[str, Any], list[dict[str, Any]]], T],
    clock: Callable[[], dt.datetime],
) -> T:
    """Run `work(session)` in one transaction, at most once per idempotency key.

    `encode` turns the result into the answer to keep (it must list the ids of the events written under
    `event_ids`; None keeps nothing, e.g. when nothing was applied); `decode` rebuilds the result from a
    kept answer and those events, read back in order.
    """
    check_key(key)

    async def transaction(session: AsyncClientSession) -> T:
        remembered = await recall(db, session, key, operation)
        if remembered is not None:
            return decode(remembered, await event_store.by_ids(db, remembered["event_ids"], session))
        result = await work(session)
        answer = encode(result)
        if answer is not None:
            await remember(db, session, key, operation, answer, clock())
        return result

    return await in_transaction(db, transaction)
