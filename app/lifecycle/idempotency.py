"""Idempotency keys: a mutation retried with the same key gets the first answer and applies nothing twice.

The key's document is inserted in the same transaction as the change it answers, so either both commit
or neither does; two concurrent requests with one key conflict on its `_id`, and the loser, retried by
the transaction, finds the winner's answer. Only successful answers are kept: a refused request wrote
nothing, so sending it again is harmless and is simply evaluated again.

The key's document also keeps a SHA-256 of the request (`fingerprint`: the operation's arguments,
canonical JSON), so a key reused with a different request is refused (`IdempotencyKeyReused`), as Stripe
does, instead of silently answering the first request's result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import MAX_ID_LENGTH
from app.lifecycle.errors import IdempotencyKeyReused, Invalid
from app.store import events as event_store
from app.store import idempotency as key_store
from app.store.transactions import in_transaction
from app.store.types import Db

T = TypeVar("T")

MAX_KEY_LENGTH = MAX_ID_LENGTH


def check_key(key: str | None) -> None:
    if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise Invalid("idempotency_key", f"idempotency key must be 1 to {MAX_KEY_LENGTH} characters long")


def fingerprint(payload: Any) -> str:
    """A SHA-256 of the request's arguments as canonical JSON (sorted keys): equal requests, equal
    fingerprints. Dataclasses count by their fields, a state machine action by its function and arguments."""

    def encode(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        if isinstance(value, functools.partial):
            return {"action": value.func.__name__, "args": value.args, "keywords": value.keywords}
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        if callable(value):
            return getattr(value, "__qualname__", repr(value))
        if isinstance(value, set | frozenset | tuple):
            return sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
        return repr(value)

    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=encode, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


async def recall(
    db: Db, session: AsyncClientSession, key: str | None, operation: str, payload_hash: str | None = None
) -> dict[str, Any] | None:
    """The stored answer for `key`, or None. A key reused for another operation, or for the same one
    with different arguments, is refused."""
    if key is None:
        return None
    doc = await key_store.get(db, key, session)
    if doc is None:
        return None
    if doc["operation"] != operation:
        raise Invalid(
            "idempotency_key", f"idempotency key was already used for {doc['operation']}, not for {operation}"
        )
    stored = doc.get("payload_hash")
    if stored is not None and payload_hash is not None and stored != payload_hash:
        raise IdempotencyKeyReused(
            "idempotency_key",
            f"idempotency key was already used for {operation} with different arguments; use a new key"
            " for a different request",
        )
    return doc["answer"]


async def remember(
    db: Db,
    session: AsyncClientSession,
    key: str | None,
    operation: str,
    answer: dict[str, Any],
    now: dt.datetime,
    payload_hash: str | None = None,
) -> None:
    """Store the answer under `key` (with the request's fingerprint), in the caller's transaction."""
    if key is not None:
        await key_store.insert(db, key, operation, answer, now, session, payload_hash)


async def run_once(
    db: Db,
    key: str | None,
    operation: str,
    work: Callable[[AsyncClientSession], Awaitable[T]],
    *,
    encode: Callable[[T], dict[str, Any] | None],
    decode: Callable[[Mapping[str, Any], list[dict[str, Any]]], T],
    clock: Callable[[], dt.datetime],
    payload: Any = None,
) -> T:
    """Run `work(session)` in one transaction, at most once per idempotency key.

    `encode` turns the result into the answer to keep (it must list the ids of the events written under
    `event_ids`; None keeps nothing, e.g. when nothing was applied); `decode` rebuilds the result from a
    kept answer and those events, read back in order. `payload` is the request's arguments: the same
    key sent with other arguments is refused (`fingerprint`).
    """
    check_key(key)
    payload_hash = fingerprint(payload) if key is not None else None

    async def transaction(session: AsyncClientSession) -> T:
        remembered = await recall(db, session, key, operation, payload_hash)
        if remembered is not None:
            return decode(remembered, await event_store.by_ids(db, remembered["event_ids"], session))
        result = await work(session)
        answer = encode(result)
        if answer is not None:
            await remember(db, session, key, operation, answer, clock(), payload_hash)
        return result

    return await in_transaction(db, transaction)
