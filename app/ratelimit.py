"""Rate limits per caller, shared by every server process through MongoDB (the `limits` library).

Each request takes one hit from its caller's budget for the scope it needs (`app/auth/scopes.py`:
`read`, `write`, `admin`; a GraphQL operation counts once, at the highest scope of its root fields):
an API key's budget is keyed by its id, a token's by its subject, and anonymous callers share a budget per
client address (`RATE_LIMIT_ANONYMOUS`, whatever the scope). The windows are fixed and aligned
to the clock (a `1/minute` window is a calendar minute): at most N hits per window, counted in one MongoDB
document per caller, scope and window (`app/store/rate_windows.py`), so two processes on one database share
one budget. A refused request is answered before it
does anything: REST 429 `rate_limited` with `Retry-After`; GraphQL `RATE_LIMITED` with `retryAfter`.

The `limits` library parses the settings (`600/minute`) into `RateLimitItem`s, through its public API. Its
asyncio MongoDB storage is on motor (deprecated; the stack's driver is PyMongo's async API) and could only
be run over our client by setting its private attributes, so the counting is our own: a few lines in the
store, over a collection the store declares. If MongoDB cannot be reached for the count, the request is
let through (logged): the database being down fails the request anyway, with its own clear error.

`RATE_LIMITS=auto` (the default) limits only when the server requires credentials (not open), so
`make run` and local tests are never slowed or refused; `on` and `off` force it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from pymongo.errors import PyMongoError

from app.domain import Scope
from app.principal import Principal
from app.settings import Settings
from app.store import rate_windows
from app.store.types import Db

logger = logging.getLogger("agent_tasks.ratelimit")


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
        self.db = db

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
        now = time.time()
        period = item.get_expiry()
        window_end = (math.floor(now / period) + 1) * period
        key = "/".join((*keys, str(item), str(window_end)))
        try:
            count = await rate_windows.hit(self.db, key, dt.datetime.fromtimestamp(window_end, dt.UTC))
        except PyMongoError as exc:
            logger.warning("rate limit not checked (%s): request let through", exc)
            return
        if count <= item.amount:
            return
        retry_after = max(1, math.ceil(window_end - now))
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
