"""The orphan sweep: events whose commit no change stream saw (every server process down at that instant,
or a stream that lost its history) stay unstamped; one process at a time finds them after a grace period
and inserts a `_CLOCK` marker naming them, which every process's stamper then stamps at the marker's own
commit (`Stamper._stamp_orphans`): after everything already stamped, before everything committed later.

One process sweeps, under a lease in `server_config` (several would only repeat the work); a holder that
stops renewing (crashed, cut off) is replaced once its lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from pymongo.errors import PyMongoError

from app.store import config
from app.store import events as event_store
from app.store.types import Db

logger = logging.getLogger(__name__)

#: Age after which an unstamped event is an orphan: longer than MongoDB's transaction lifetime (60 s), so
#: the transaction that wrote it has surely ended, committed or not.
GRACE_SECONDS = 90.0
#: How long the sweep lease lasts unrenewed; renewed every third of it.
LEASE_SECONDS = 3.0
#: The lease that says which process sweeps (`server_config`).
LEASE = "event_orphan_sweep"


class OrphanSweep:
    """Holds (or waits for) the sweep lease, and while it holds it, marks orphans for stamping."""

    def __init__(self, db: Db, owner: str, *, grace_seconds: float | None = None) -> None:
        self.db = db
        self.owner = owner
        # Read here rather than as a default argument, so a test can shorten the module's constant.
        self.grace_seconds = GRACE_SECONDS if grace_seconds is None else grace_seconds
        self.lease_seconds = LEASE_SECONDS
        #: Whether this process holds the lease.
        self.sweeps = False

    async def hold_lease(self) -> None:
        """Take or renew the lease every third of its length, for as long as the task runs."""
        while True:
            try:
                holds = await config.take_lease(self.db, LEASE, self.owner, self.lease_seconds)
            except PyMongoError as exc:
                logger.warning("orphan-sweep lease unavailable (%s)", exc)
                holds = False
            if holds and not self.sweeps:
                logger.info("this process now sweeps for unstamped events")
            elif not holds and self.sweeps:
                logger.warning("this process lost the orphan-sweep lease")
            self.sweeps = holds
            await asyncio.sleep(self.lease_seconds / 3)

    async def sweep(self) -> None:
        """Every grace period, look for events no change stream saw committed and mark them for stamping."""
        while True:
            try:
                cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.grace_seconds)
                found = await event_store.orphans(self.db, cutoff) if self.sweeps else []
                if found:
                    logger.warning("%d events were never stamped; stamping them now", len(found))
                    await event_store.insert_clock(self.db, found)
            except PyMongoError as exc:
                logger.warning("orphan sweep failed (%s)", exc)
            await asyncio.sleep(self.grace_seconds)

    async def release(self) -> None:
        """Hand the lease over at once (shutdown) rather than after it lapses."""
        if self.sweeps:
            self.sweeps = False
            with contextlib.suppress(PyMongoError):
                await config.release_lease(self.db, LEASE, self.owner)
