"""Idempotency keys: a mutation retried with the same key gets the first answer and applies nothing twice.

The key's document is inserted in the same transaction as the change it answers, so either both commit
or neither does; two concurrent requests with one key conflict on its `_id`, and the loser, retried by
the transaction, finds the winner's answer. Only successful answers are kept: a refused request wrote
nothing, so sending it again is harmless and is simply evaluated again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from app.lifecycle.errors import Invalid
from app.store.collections import IDEMPOTENCY_KEYS

MAX_KEY_LENGTH = 200


def check_key(key: str | None) -> None:
    if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise Invalid("idempotencyKey", f"idempotency key must be 1 to {MAX_KEY_LENGTH} characters long")


async def recall(
    db: AsyncDatabase[dict[str, Any]], session: AsyncClientSession, key: str | None, operation: str
) -> dict[str, Any] | None:
    """The stored answer for `key`, or None. A key reused for another operation is refused."""
    if key is None:
        return None
    doc = await db[IDEMPOTENCY_KEYS.name].find_one({"_id": key}, session=session)
    if doc is None:
        return None
    if doc["operation"] != operation:
        raise Invalid(
            "idempotencyKey", f"idempotency key was already used for {doc['operation']}, not for {operation}"
        )
    return doc["answer"]


async def remember(
    db: AsyncDatabase[dict[str, Any]],
    session: AsyncClientSession,
    key: str | None,
    operation: str,
    answer: dict[str, Any],
    now: dt.datetime,
) -> None:
    """Store the answer under `key`, in the caller's transaction."""
    if key is not None:
        await db[IDEMPOTENCY_KEYS.name].insert_one(
            {"_id": key, "operation": operation, "answer": answer, "created_at": now}, session=session
        )
