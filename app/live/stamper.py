"""The stamper: gives each event the reader queued its commit-order position, stores the positions, and
only then releases the events (to the writers waiting for them here, and to the registry's subscribers).

Why positions are stamped after commit, and how they are computed: `app.store.events`. Every process
stamps every event it sees and computes the same position for it, so whichever writes first sets it and
the others' writes match it and change nothing; since each process writes in commit order, whatever a
reader sees is a prefix of the commit order.

What a process does not wait for, it batches: events a request of this process waits for (`settle`) are
stamped at once, with every event before them; the others (other processes' writes, whose own stamper
stamps them at once) are held up to `hold()` and stamped together, normally finding them stamped already,
in one round trip for many events instead of one racing write per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bson import ObjectId, Timestamp
from pymongo.errors import PyMongoError

from app import instruments
from app.live.inbox import GAP, Doc
from app.live.registry import Registry
from app.store import events as event_store
from app.store.types import Db

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
#: How many recently stamped events are remembered for writers that ask after the stamper got there.
RECENT = 50_000
#: Most events stamped in one write (and taken off the queue at once).
STAMP_BATCH = 1000
#: How long a writer waits for its events' positions before answering without them (the change stream is
#: down, or no primary takes the stamps): a few milliseconds normally.
SETTLE_SECONDS = 5.0
#: Queued when a request starts waiting for events the stamper may be holding back.
NUDGE: Doc = {"_nudge": True}


def _observe_lag(event: Doc) -> None:
    """How long after its write (its `timestamp`, the writer's clock) this process released the event to
    whoever waits for it here: the transaction's commit, the change stream and the stamping together
    (`agent_tasks_event_hub_lag_seconds`). Events written by other programs without a datetime timestamp
    are left out."""
    written = event.get("timestamp")
    if isinstance(written, dt.datetime):
        if written.tzinfo is None:
            written = written.replace(tzinfo=dt.UTC)
        lag = (dt.datetime.now(dt.UTC) - written).total_seconds()
        instruments.get().hub_lag.observe(max(0.0, lag))


class Stamper:
    """Numbers, stamps and releases the events queued on `inbox`, in stream order."""

    def __init__(
        self,
        db: Db,
        inbox: asyncio.Queue[Doc],
        registry: Registry,
        *,
        wake: asyncio.Event,
        hold: Callable[[], float],
        retry_seconds: float,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self.db = db
        self.inbox = inbox
        self.registry = registry
        self.wake = wake
        self.hold = hold
        self.retry_seconds = retry_seconds
        self.settle_seconds = settle_seconds
        self._waiters: dict[Any, asyncio.Future[ObjectId]] = {}
        self._recent: OrderedDict[Any, ObjectId] = OrderedDict()
        # Position bookkeeping across stream reopens: the commit being numbered and its next index.
        self._commit: Timestamp | None = None
        self._n = 0
        self.last_position: ObjectId | None = None
        self.stamped = 0

    @property
    def waiting(self) -> bool:
        """Whether a request of this process waits for events now."""
        return bool(self._waiters)

    def nudge(self) -> None:
        """Stop holding back what is queued (a request waits, a subscriber came)."""
        self.inbox.put_nowait(NUDGE)

    def cancel_waiters(self) -> None:
        for waiter in self._waiters.values():
            waiter.cancel()
        self._waiters.clear()

    # ----------------------------------------------------------------- writers

    async def settle(self, events: list[Doc]) -> None:
        """Wait until these just-committed events are stamped (at most `settle_seconds`) and set their
        `seq`, so a writer answers with cursors and a read right after sees its events. Events still
        unstamped by then (the change stream is down) keep `seq: None`; they are stamped later."""
        futures: list[tuple[Doc, asyncio.Future[ObjectId]]] = []
        for event in events:
            if event.get("seq") is not None:
                continue
            known = self._recent.get(event["_id"])
            if known is not None:
                event["seq"] = known
                continue
            future = self._waiters.get(event["_id"])
            if future is None:
                future = self._waiters[event["_id"]] = asyncio.get_running_loop().create_future()
            futures.append((event, future))
        if not futures:
            return
        self.nudge()  # the stamper may hold these already: it stamps them now
        self.wake.set()  # and the reader may be pausing: the commit is to be seen at once
        try:
            async with asyncio.timeout(self.settle_seconds):
                await asyncio.gather(*(f for _, f in futures))
        except TimeoutError:
            logger.warning("events not stamped within %.1f s; answering without cursors", self.settle_seconds)
        finally:
            for event, future in futures:
                if future.done() and not future.cancelled():
                    event["seq"] = future.result()
                self._waiters.pop(event["_id"], None)

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Handle what the reader queued, in stream order: give each new event its position, stamp and
        release them; through the last event a request here waits for at once, the rest after `hold()`."""
        pending: list[Doc] = []
        arrived: list[float] = []  # when each pending event came off the stream
        loop = asyncio.get_running_loop()

        async def flush(count: int) -> None:
            head = pending[:count]
            del pending[:count], arrived[:count]
            await self._flush(head)

        while True:
            timeout = None if not pending else arrived[0] + self.hold() - loop.time()
            try:
                async with asyncio.timeout(timeout):
                    batch = [await self.inbox.get()]
            except TimeoutError:
                batch = []
            while not self.inbox.empty() and len(batch) < STAMP_BATCH:
                batch.append(self.inbox.get_nowait())
            for item in batch:
                if item is NUDGE:  # a request here now waits for an event: see below
                    continue
                if item is GAP:
                    # Stamps of the events in the lost history are the orphan sweep's; subscribers re-read
                    # them from the collection, and their writers have answered (or will) without cursors.
                    await flush(len(pending))
                    self.registry.broadcast(GAP)
                    continue
                seq = self._next_position(item.pop("_cluster_time"))
                if item.get("type") == event_store.CLOCK:  # orphans take positions at the marker's commit
                    await flush(len(pending))
                    await self._stamp_orphans(item, seq)
                    continue
                item["seq"] = seq
                pending.append(item)
                arrived.append(loop.time())
            if not pending:
                continue
            if loop.time() - arrived[0] >= self.hold() or len(pending) >= STAMP_BATCH:
                await flush(len(pending))
                continue
            # Through the last event a request here waits for (what is before it must be stamped first);
            # what follows it is other processes' and stays held: their writers are stamping it now.
            for index in range(len(pending) - 1, -1, -1):
                if pending[index]["_id"] in self._waiters:
                    await flush(index + 1)
                    break

    def _next_position(self, cluster_time: Timestamp) -> ObjectId:
        """Position of the next event: the n-th of its commit (a transaction's inserts share one time)."""
        if cluster_time == self._commit:
            self._n += 1
        else:
            self._commit, self._n = cluster_time, 0
        return event_store.position(cluster_time, self._n)

    async def _flush(self, events: list[Doc]) -> None:
        """Write these events' positions, then release them, in order.

        When one was stamped already with another position (an orphan at its marker, while this process
        could not write) the stored position is the one used."""
        if not events:
            return
        matched = await self._write_stamps([(e["_id"], e["seq"]) for e in events])
        if matched < len(events):
            ids = [e["_id"] for e in events]
            stored = await self._retrying("reading event positions", event_store.positions_of, ids)
            for event in events:
                event["seq"] = stored.get(event["_id"]) or event["seq"]
        for event in events:
            self._release(event)

    def _release(self, event: Doc) -> None:
        """The event's position is stored: wake its writer and hand it to the subscribers (once)."""
        if event["_id"] in self._recent:
            return
        # Only where someone waits for it (a subscriber here, or a request of this process): events nobody
        # here waits for are held on purpose (`hold`), and their lag would measure that choice.
        awaited = self.registry.any or event["_id"] in self._waiters
        self._remember(event["_id"], event["seq"])
        self.last_position = event["seq"]
        self.registry.dispatch(event)
        if awaited:
            _observe_lag(event)

    def _remember(self, event_id: Any, seq: ObjectId) -> None:
        self._recent[event_id] = seq
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        waiter = self._waiters.get(event_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(seq)

    async def _write_stamps(self, stamps: list[tuple[Any, ObjectId]]) -> int:
        """Write the positions, retrying until MongoDB takes them: nothing is released before. Returns how
        many events hold the position given (set now, or by another process)."""
        while True:
            try:
                result = await event_store.stamp(self.db, stamps)
                self.stamped += result.modified
                return result.matched
            except PyMongoError as exc:
                logger.warning("stamping %d events failed (%s); retrying", len(stamps), exc)
                await asyncio.sleep(self.retry_seconds)

    async def _retrying(
        self, what: str, read: Callable[[Db, list[Any]], Awaitable[_T]], ids: list[Any]
    ) -> _T:
        """A read the stamper cannot go on without, retried until MongoDB answers (as stamps are)."""
        while True:
            try:
                return await read(self.db, ids)
            except PyMongoError as exc:
                logger.warning("%s failed (%s); retrying", what, exc)
                await asyncio.sleep(self.retry_seconds)

    async def _stamp_orphans(self, marker: Doc, marker_seq: ObjectId) -> None:
        """Stamp the events a `_CLOCK` marker names at the marker's own commit (a commit of its own): after
        everything committed before it, before everything committed later. Every process computes the
        same positions, so whichever writes first wins, and every process releases them to its own
        subscribers (those another process stamped at this marker too); the marker is removed afterwards.
        An event stamped some other way meanwhile was released when that happened, and is left alone."""
        ids = list(marker.get("orphans") or [])
        found = {
            e["_id"]: e for e in await self._retrying("reading orphaned events", event_store.by_ids, ids)
        }
        base = marker_seq.binary[:8]
        events = []
        for n, event_id in enumerate(ids, start=1):
            event = found.get(event_id)
            at_marker = ObjectId(base + n.to_bytes(4, "big"))
            if event is not None and event.get("seq") in (None, at_marker):
                event["seq"] = at_marker
                events.append(event)
        await self._flush(events)
        with contextlib.suppress(PyMongoError):
            await event_store.remove_clock(self.db, marker["_id"])
