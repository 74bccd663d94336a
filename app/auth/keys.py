"""The API key service: create (the secret is returned once), list, revoke, and authenticate a secret.

A secret is `atk_<key id>_<random>`; only its SHA-256 (hex) is stored, so a database dump holds no usable
credential. The key id is public: lists, events (`actor.id`) and revocation use it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from app.domain import Scope
from app.principal import AuthenticationError, Principal
from app.store import keys as key_store
from app.store.types import Db

PREFIX = "atk_"
#: `last_used_at` is written at most this often per key (a busy key would otherwise write on every request).
TOUCH_INTERVAL = dt.timedelta(minutes=1)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # PyMongo returns naive UTC datetimes unless the client is tz-aware.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


@dataclass(frozen=True)
class ApiKey:
    """A stored key as callers may see it (no hash, no secret)."""

    id: str
    name: str
    scopes: tuple[Scope, ...]
    agents: tuple[str, ...] | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ApiKey:
        agents = doc.get("agents")
        return cls(
            id=doc["_id"],
            name=doc["name"],
            scopes=tuple(Scope(s) for s in doc.get("scopes", [])),
            agents=tuple(agents) if agents is not None else None,
            created_at=_aware(doc["created_at"]) or _now(),
            expires_at=_aware(doc.get("expires_at")),
            revoked_at=_aware(doc.get("revoked_at")),
            last_used_at=_aware(doc.get("last_used_at")),
        )

    def principal(self) -> Principal:
        return Principal(
            kind="key",
            id=self.id,
            name=self.name,
            scopes=frozenset(self.scopes),
            agents=frozenset(self.agents) if self.agents is not None else None,
        )


class KeyService:
    """API keys over one database.

    `active` answers from what it read at most `cache_seconds` ago: a revocation anywhere (another server
    process, the CLI) counts within that time, and a revocation through this service at once. The server
    keeps one service per process (`app.auth.middleware.authenticator`)."""

    def __init__(self, db: Db, cache_seconds: float = 0.0) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        #: Key id → (when it was read, `time.monotonic()`; the key, None when there is none).
        self._seen: dict[str, tuple[float, ApiKey | None]] = {}
        #: Keys revoked through this service: revoked for good, whatever a read in flight comes back with.
        self._revoked: set[str] = set()

    async def create(
        self,
        name: str,
        scopes: list[Scope] | tuple[Scope, ...],
        agents: list[str] | tuple[str, ...] | None = None,
        expires_at: dt.datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns it and its secret (the only time the secret exists outside the caller)."""
        if not name.strip():
            raise ValueError("a key needs a name")
        if not scopes:
            raise ValueError("a key needs at least one scope")
        key_id = secrets.token_hex(6)
        secret = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        doc: dict[str, Any] = {
            "_id": key_id,
            "name": name.strip(),
            "hash": _hash(secret),
            "scopes": sorted({Scope(s).value for s in scopes}),
            "agents": sorted(set(agents)) if agents else None,
            "created_at": _now(),
            "expires_at": expires_at,
            "revoked_at": None,
            "last_used_at": None,
        }
        await key_store.insert(self.db, doc)
        return ApiKey.from_doc(doc), secret

    async def list(self) -> list[ApiKey]:
        return [ApiKey.from_doc(d) for d in await key_store.list_all(self.db)]

    async def get(self, key_id: str) -> ApiKey | None:
        doc = await key_store.by_id(self.db, key_id)
        return ApiKey.from_doc(doc) if doc is not None else None

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke the key (idempotent); None when there is no such key."""
        doc = await key_store.revoke(self.db, key_id, _now())
        if doc is None:
            return None
        self._revoked.add(key_id)
        return ApiKey.from_doc(doc)

    async def active(self, key_id: str) -> bool:
        """Whether the key exists and is neither revoked nor expired (see the class docstring)."""
        if key_id in self._revoked:
            return False
        seen = self._seen.get(key_id)
        if seen is None or time.monotonic() - seen[0] >= self.cache_seconds:
            read_at = time.monotonic()
            seen = (read_at, await self.get(key_id))
            if self.cache_seconds > 0:
                self._seen[key_id] = seen
        key = seen[1]
        return (
            key is not None
            and key.revoked_at is None
            and key_id not in self._revoked  # revoked here while it was being read
            and (key.expires_at is None or key.expires_at > _now())
        )

    async def authenticate(self, secret: str) -> Principal:
        """The principal of a valid secret; else AuthenticationError (malformed, unknown,
        expired, revoked)."""
        key_id, sep, rest = secret.removeprefix(PREFIX).partition("_")
        if not secret.startswith(PREFIX) or not sep or not key_id or not rest:
            raise AuthenticationError("malformed API key (expected `atk_<id>_<secret>`)")
        doc = await key_store.by_hash(self.db, _hash(secret))
        if doc is None or doc["_id"] != key_id:
            raise AuthenticationError("unknown API key")
        key = ApiKey.from_doc(doc)
        now = _now()
        if key.revoked_at is not None:
            raise AuthenticationError(f"API key {key.id} was revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationError(f"API key {key.id} has expired")
        if key.last_used_at is None or key.last_used_at < now - TOUCH_INTERVAL:
            await key_store.touch(self.db, key.id, now, now - TOUCH_INTERVAL)
        return key.principal()
