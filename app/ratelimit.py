"""Rate limits per caller, shared by every server process through MongoDB (the `limits` library).

Each request takes one hit from its caller's budget for the scope it needs (`app/auth/scopes.py`:
`read`, `write`, `admin`; a GraphQL operation counts once, at the highest scope of its root fields):
an API key's budget is keyed by its id, a token's by its subject, and anonymous callers share a budget per
client address (`RATE_LIMIT_ANONYMOUS`, whatever the scope). The windows are fixed (`limits`'
`FixedWindowRateLimiter`): at most N hits per window, counted in one MongoDB document per caller, scope
and window, so two processes on one database share one budget. A refused request is answered before it
does anything: REST 429 `rate_limited` with `Retry-After`; GraphQL `RATE_LIMITED` with `retryAfter`.

`limits` ships a MongoDB storage for asyncio, but on motor (deprecated; the stack's driver is PyMongo's
async API). `PyMongoStorage` runs that same storage's code (its documents, TTL indexes and
`find_one_and_update` increments) over our own `AsyncMongoClient`: the two drivers' collection methods
are the same calls. If MongoDB cannot be reached for the count, the request is let through (logged): the
database being down fails the request anyway, with its own clear error.

`RATE_LIMITS=auto` (the default) limits only when the server requires credentials (not open), so
`make run` and local tests are never slowed or refused; `on` and `off` force it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MongoDBStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.util import get_dependency
from pymongo.errors import PyMongoError

from app.domain import Scope
from app.principal import Principal
from app.settings import Settings
from app.store.types import Db

logger = logging.getLogger("agent_tasks.ratelimit")

#: The collections the counters live in (TTL-indexed on `expireAt` by the storage).
COUNTERS = "rate_limit_counters"
WINDOWS = "rate_limit_windows"


class PyMongoStorage(MongoDBStorage):
    """`limits`' asyncio MongoDB storage on PyMongo's `AsyncMongoClient` instead of motor (see above)."""

    # No STORAGE_SCHEME of its own: it is built from our database handle, never from a URI.
    DEPENDENCIES = ["pymongo"]

    def __init__(self, db: Db) -> None:
        Storage.__init__(self)
        self.proxy_dependency = self.dependencies["pymongo"]
        self.lib_errors, _ = get_dependency("pymongo.errors")
        self.storage = db.client
        # The parent's private attributes, set as its own constructor would (pinned `limits` major).
        self._MongoDBStorage__database_name = db.name
        self._MongoDBStorage__collection_mapping = {"counters": COUNTERS, "windows": WINDOWS}
        self._MongoDBStorage__indices_created = False

    def __del__(self) -> None:
        """Nothing to close: the client is the application's (the parent would close it)."""


@dataclass(frozen=True)
class RateLimited(Exception):
    """The caller's budget for this scope is spent; `retry_after` whole seconds until the window ends."""

    message: str
    retry_after: int
    limit: str
    setting: str


class RateLimiter:
    """The budgets of one server process (they live in MongoDB, shared by all)."""

    def __init__(self, settings: Settings, db: Db) -> None:
        self.enabled = settings.rate_limits_active
        self.limits: dict[str, tuple[RateLimitItem, str]] = {
            Scope.READ.value: (parse(settings.rate_limit_read), "RATE_LIMIT_READ"),
            Scope.WRITE.value: (parse(settings.rate_limit_write), "RATE_LIMIT_WRITE"),
            Scope.ADMIN.value: (parse(settings.rate_limit_admin), "RATE_LIMIT_ADMIN"),
            "anonymous": (parse(settings.rate_limit_anonymous), "RATE_LIMIT_ANONYMOUS"),
        }
        self.limiter = FixedWindowRateLimiter(PyMongoStorage(db))

    async def hit(self, principal: Principal, scope: Scope, address: str | None) -> None:
        """Take one hit for this caller and scope; `RateLimited` when the budget is spent."""
        if not self.enabled or principal.kind == "system":
            return
        keys: tuple[str, ...]
        if principal.kind == "anonymous":
            item, setting = self.limits["anonymous"]
            who, keys = f"address {address or 'unknown'}", ("anonymous", address or "unknown")
        else:
            item, setting = self.limits[scope.value]
            who, keys = f"{principal.kind} {principal.id}", (scope.value, principal.kind, principal.id or "")
        try:
            if await self.limiter.hit(item, *keys):
                return
            reset, _ = await self.limiter.get_window_stats(item, *keys)
        except PyMongoError as exc:
            logger.warning("rate limit not checked (%s): request let through", exc)
            return
        retry_after = max(1, math.ceil(reset - time.time()))
        raise RateLimited(
            f"rate limit exceeded for {who}: {item.amount} per {item.multiples} {item.GRANULARITY.name}"
            f" ({setting}); try again in {retry_after} s",
            retry_after,
            str(item),
            setting,
        )


def limiter(state_extras: dict[str, object], settings: Settings, db: Db) -> RateLimiter:
    """The process's limiter, made on first use (the lifespan opens the database first)."""
    found = state_extras.get("rate_limiter")
    if not isinstance(found, RateLimiter):
        found = RateLimiter(settings, db)
        state_extras["rate_limiter"] = found
    return found
