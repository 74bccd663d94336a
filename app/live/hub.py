"""The event hub: ONE change stream on `task_events` per server process, which stamps each event's
commit-order position and fans the events out in memory.

Every subscriber registers a routing key (a task, a workflow, an agent, or everything) and a predicate;
the hub hands each inserted event to the subscribers under its keys whose predicate accepts it. Because
every server process watches the same collection, a write handled by any process reaches subscribers
on all of them: processes stay stateless and need no sticky sessions.

Stamping (why: `app.store.events`): a reader task takes the inserts off the change stream in commit
order and queues them; a stamper task takes everything queued at once, computes each event's position
from its commit's `clusterTime`, writes the positions (one ordered, majority-acknowledged bulk write) and
then releases the events. Releasing means waking the writers waiting for it (`settle`) and dispatching
it to subscribers, always after its position is stored: that is what makes the hand-over of a new
subscriber exact, since an event dispatched before it registered is already readable by its replay.

Every process stamps every event it sees, and they all compute the same position for it, so whichever
writes first sets it and the others' writes match it and change nothing. Why not one stamping process:
that was the first design (a leader under a lease, the others waiting for its stamps to come back
through their own change stream). A mutation handled by a follower then waited for two change-stream
hops instead of one, and every process woke twice per event (the insert, then the stamp), so two server
processes were slower than one at low concurrency (150 against 173 transitions/s with one client).
Stamping everywhere costs one update per event per process, all but one of them matching an
already-stamped event. It keeps every mutation's wait to its own process's stream, needs no hand-over
when a process dies, and since each process writes in commit order, whatever a reader sees is still a
prefix of the commit order. A lease (`_lease_loop`) remains for the one job that must run once: the
orphan sweep.

What a process does not wait for, it batches. While none of its requests waits for events,
its reader lets changes accumulate for up to `batch_seconds` before the next change-stream read
(`_pause`), and its stamper holds the events none of its requests waits for as long (`_stamp_loop`);
fifty times as long while no subscriber is registered on it (`_hold`). By then their writer's process has
stamped them, so this one finds them stamped, in one round trip for many events. Without that, a
second server process cost every event a change-stream read and a racing stamp write more, and two
processes stayed slower than one at low concurrency. Subscribers of a process see other processes'
events that much later (tens of milliseconds); its own requests are never held.

Each subscriber has a buffer bounded in events (`limit`) and in bytes (`limit_bytes`, the events' BSON
size, computed once per event whatever the number of subscribers). A subscriber that falls further behind
(a client that reads slower than events arrive, or not at all) is cut off with `SlowConsumer`, and its
buffer released, instead of slowing the others down or pinning memory; it can resume from its last cursor.
The events themselves are shared by every subscriber that buffers them: the bound is on what one client
that never reads can keep alive.

The hub survives a dropped change stream: it reopens it after the last resume token it processed, so
no event is lost. If that token is no longer in the oplog, every subscriber receives `GAP` and re-reads
what it missed from the collection; events whose commit the hub never saw are stamped by the orphan
sweep (see `app.store.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import bson
from bson import ObjectId, Timestamp
from pymongo.errors import OperationFailure, PyMongoError

from app import instruments
from app.cancellation import stop_task, stop_tasks
from app.store import config
from app.store import events as event_store
from app.store.types import Db

logger = logging.getLogger(__name__)

Doc = dict[str, Any]
_T = TypeVar("_T")
#: Routing keys: ("task", id), ("workflow", id), ("agent", id) or ALL.
Key = tuple[Any, ...]
ALL: Key = ("all",)
#: Pushed to every subscriber when the hub may have missed events (its resume token was lost).
GAP: Doc = {"_gap": True}
#: How much longer a process with no subscriber holds events no request of its own waits for: 1 s at the
#: default `batch_seconds`. With 10 (0.2 s), an idle second server process still cost each transition
#: 0.15 ms of its CPU and 0.09 ms of mongod's (five reads and five stamp writes a second), and one client
#: ran 1-4 % slower with it up; with 50 that fell to 0.01 ms and 0.05 ms (`bench.writes`, 6 rounds).
IDLE_HOLD_FACTOR = 50
#: Queued for the stamper when a request starts waiting for events it may be holding back.
_NUDGE: Doc = {"_nudge": True}
#: The lease that says which process runs the orphan sweep (`server_config`).
_LEASE = "event_orphan_sweep"


def _resumable(exc: OperationFailure) -> bool:
    """An error the change stream can resume after (as PyMongo's own rule: the server labels them)."""
    return exc.has_error_label("ResumableChangeStreamError")


_NOT_A_REPLICA_SET = 40573


def _buffered(stream: Any) -> int | None:
    """How many changes the stream holds already fetched, or None when this PyMongo does not say.

    PyMongo has no public way to ask; its change stream keeps them in its command cursor's `_data`. A
    test checks this against the installed PyMongo; were it gone, the hub never pauses (`_pause`)."""
    data = getattr(getattr(stream, "_cursor", None), "_data", None)
    return len(data) if data is not None else None


def _bson_size(event: Doc) -> int:
    """An event's size as MongoDB stored it (what a subscriber's bytes budget counts)."""
    try:
        return len(bson.encode(event))
    except (bson.errors.InvalidDocument, TypeError, OverflowError):  # never stops the hub: count it as 0
        return 0


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


class HubUnavailable(RuntimeError):
    """The change stream cannot work against this deployment at all."""


class SlowConsumer(Exception):
    """The subscriber fell too far behind and was disconnected."""


class HubClosing(Exception):
    """The server is shutting down: the subscription ends (after the events already buffered for it)."""


@dataclass(eq=False)
class Subscriber:
    """One subscription's inbox: a buffer of events in commit order, bounded in events and in bytes."""

    key: Key
    accepts: Callable[[Mapping[str, Any]], bool]
    limit: int
    #: Bytes (BSON size) the unread events may hold; None: no bound. One event is always let in, however
    #: large, so a client that keeps up is never cut off by a single big event.
    limit_bytes: int | None = None
    _items: deque[tuple[Doc, int]] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    closed: bool = False
    #: Bytes held by the unread events.
    held_bytes: int = 0

    def push(self, item: Doc, size: int = 0) -> None:
        """Called by the hub for every matching event (`size`: its BSON size); never blocks."""
        if self.error is not None:
            return
        if len(self._items) >= self.limit:
            limit = self.limit
            self._overflow(
                f"subscription fell more than {limit} events behind (SUBSCRIPTION_QUEUE_SIZE={limit})"
            )
        elif self.limit_bytes is not None and self._items and self.held_bytes + size > self.limit_bytes:
            unread = len(self._items) + 1
            self._overflow(
                f"subscription's unread events exceeded {self.limit_bytes} bytes"
                f" (SUBSCRIPTION_QUEUE_BYTES={self.limit_bytes}): {self.held_bytes + size} bytes in"
                f" {unread} events"
            )
        else:
            self._items.append((item, size))
            self.held_bytes += size
        self._wakeup.set()

    def _overflow(self, what: str) -> None:
        self.error = (
            f"{what} and was disconnected; resubscribe with `after` set to the last cursor you received"
        )
        self._items.clear()  # released at once, not when the client finally reads
        self.held_bytes = 0

    async def next(self) -> Doc:
        """The next event (or `GAP`); raises `SlowConsumer` once the buffer overflowed, `HubClosing` once
        the hub ended the subscription and everything buffered was read."""
        while not self._items:
            if self.error is not None:
                raise SlowConsumer(self.error)
            if self.closed:
                raise HubClosing("the server is shutting down")
            self._wakeup.clear()
            await self._wakeup.wait()
        item, size = self._items.popleft()
        self.held_bytes -= size
        return item

    def close(self) -> None:
        """End the subscription: `next` raises `HubClosing` once the buffer is empty."""
        self.closed = True
        self._wakeup.set()

    def drain(self) -> list[Doc]:
        """Everything already buffered, without waiting (to coalesce bursts)."""
        items = [item for item, _ in self._items]
        self._items.clear()
        self.held_bytes = 0
        return items

    @property
    def pending(self) -> int:
        return len(self._items)


class EventHub:
    """Watches `task_events`, stamps event positions, and fans events out to in-process subscribers."""

    #: How many recently stamped events are remembered for writers that ask after the hub got there.
    RECENT = 50_000

    def __init__(
        self,
        db: Db,
        *,
        queue_size: int = 1000,
        queue_bytes: int | None = None,
        retry_seconds: float = 0.5,
        orphan_grace_seconds: float = 90.0,
        settle_seconds: float = 5.0,
        lease_seconds: float = 3.0,
        batch_seconds: float = 0.02,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.retry_seconds = retry_seconds
        self.orphan_grace_seconds = orphan_grace_seconds
        self.settle_seconds = settle_seconds
        self.lease_seconds = lease_seconds
        self.batch_seconds = batch_seconds
        #: Who this process is, for the orphan-sweep lease (the process id, when given); whether it holds it.
        self.owner = owner or uuid.uuid4().hex
        self.sweeps_orphans = False
        self._by_key: dict[Key, set[Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stream: Any = None
        self._ready = asyncio.Event()
        self._inbox: asyncio.Queue[Doc] = asyncio.Queue()
        self._waiters: dict[Any, asyncio.Future[ObjectId]] = {}
        #: Ends the reader's pause (`_pause`): a request started writing or waiting, a subscriber came.
        self._wake = asyncio.Event()
        self._recent: OrderedDict[Any, ObjectId] = OrderedDict()
        # Position bookkeeping across stream reopens: the commit being numbered and its next index.
        self._commit: Timestamp | None = None
        self._n = 0
        self.resume_token: Mapping[str, Any] | None = None
        self.last_position: ObjectId | None = None
        self.restarts = 0
        self.stamped = 0
        #: Set by `end_subscriptions` (shutdown): every subscription, and any new one, ends.
        self.closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the change stream; returns once it is established, so no later commit can be missed."""
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="event-hub")
        self._tasks = [
            asyncio.create_task(self._stamp_loop(), name="event-hub-stamper"),
            asyncio.create_task(self._lease_loop(), name="event-hub-lease"),
            asyncio.create_task(self._sweep_loop(), name="event-hub-orphans"),
        ]
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:  # the stream could not even be opened: surface why
            ready.cancel()
            await self._cancel_helpers()
            self._task.result()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        await self._cancel_helpers()
        if self.sweeps_orphans:  # hand over at once rather than after the lease lapses
            self.sweeps_orphans = False
            with contextlib.suppress(PyMongoError):
                await config.release_lease(self.db, _LEASE, self.owner)
        for waiter in self._waiters.values():
            waiter.cancel()
        self._waiters.clear()

    async def _cancel_helpers(self) -> None:
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)

    def end_subscriptions(self) -> None:
        """Shutdown, first step: end every subscription, and every one opened from now on.

        Each subscription reads what is already buffered for it and then ends like a finished stream
        (SSE sends `complete`, a WebSocket operation its `complete` message), so a client knows it was
        not cut off by a network failure and resumes from its last cursor on another server. The change
        stream keeps running until `stop`."""
        self.closing = True
        for subs in self._by_key.values():
            for subscriber in subs:
                subscriber.close()

    async def wait_idle(self, seconds: float) -> bool:
        """Wait (at most `seconds`) until no subscriber is registered; whether none is."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        return self._idle.is_set()

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._by_key.values())

    @property
    def backlog(self) -> int:
        """Changes read off the stream and not yet stamped and released (`/metrics`)."""
        return self._inbox.qsize()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and self._ready.is_set()

    async def interrupt(self) -> None:
        """Close the current change stream as a network failure would (operators' and tests' lever)."""
        if self._stream is not None:
            await self._stream.close()

    # ----------------------------------------------------------------- writers

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a request's write of events: it ends the reader's pause, so the next change-stream read
        is under way (waiting in MongoDB) by the time the write commits, rather than sent after."""
        self._wake.set()
        yield

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
        self._inbox.put_nowait(_NUDGE)  # the stamper may hold these already: it stamps them now
        self._wake.set()  # and the reader may be pausing: the commit is to be seen at once
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

    # ----------------------------------------------------------------- subscribing

    @contextlib.asynccontextmanager
    async def subscribe(
        self, key: Key, accepts: Callable[[Mapping[str, Any]], bool], *, limit: int | None = None
    ) -> AsyncIterator[Subscriber]:
        """Register a subscriber for as long as the block runs; it is always removed on the way out."""
        subscriber = Subscriber(
            key=key, accepts=accepts, limit=limit or self.queue_size, limit_bytes=self.queue_bytes
        )
        if self.closing:  # opened during shutdown: it ends at once
            subscriber.close()
        self._by_key.setdefault(key, set()).add(subscriber)
        self._idle.clear()
        self._wake.set()  # the reader and the stamper hold events for less from now on
        self._inbox.put_nowait(_NUDGE)
        try:
            yield subscriber
        finally:
            subs = self._by_key.get(key)
            if subs is not None:
                subs.discard(subscriber)
                if not subs:
                    del self._by_key[key]
            if not self._by_key:
                self._idle.set()

    def _dispatch(self, event: Doc) -> None:
        keys: tuple[Key, ...] = (
            ALL,
            ("task", event.get("task_id")),
            ("workflow", event.get("workflow_id")),
            ("agent", event.get("agent_id")),
        )
        size: int | None = None
        for key in keys:
            for subscriber in tuple(self._by_key.get(key, ())):
                if subscriber.accepts(event):
                    if size is None:  # once per event, and only for an event someone wants
                        size = _bson_size(event)
                    subscriber.push(event, size)

    # ----------------------------------------------------------------- stamping

    async def _stamp_loop(self) -> None:
        """Handle what the reader queued, in stream order: give each new event its position, stamp and
        release them.

        Events a request of this process waits for are stamped at once (with every event before them:
        stamps are written in commit order). The others, written by other processes (whose own hub
        stamps them at once) or by programs that do not wait, are held up to `_hold()` and stamped
        together: by then their writer's process has normally stamped them, so this process's write only
        finds them stamped, in one round trip for many events instead of one racing write per event."""
        pending: list[Doc] = []
        arrived: list[float] = []  # when each pending event came off the stream
        loop = asyncio.get_running_loop()

        async def flush(count: int) -> None:
            head = pending[:count]
            del pending[:count], arrived[:count]
            await self._flush(head)

        while True:
            timeout = None if not pending else arrived[0] + self._hold() - loop.time()
            try:
                async with asyncio.timeout(timeout):
                    batch = [await self._inbox.get()]
            except TimeoutError:
                batch = []
            while not self._inbox.empty() and len(batch) < 1000:
                batch.append(self._inbox.get_nowait())
            for item in batch:
                if item is _NUDGE:  # a request here now waits for an event: see below
                    continue
                if item is GAP:
                    # Stamps of the events in the lost history are the orphan sweep's; subscribers re-read
                    # them from the collection, and their writers have answered (or will) without cursors.
                    await flush(len(pending))
                    self._broadcast_gap()
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
            if loop.time() - arrived[0] >= self._hold() or len(pending) >= 1000:
                await flush(len(pending))
                continue
            # Through the last event a request here waits for (what is before it must be stamped first);
            # what follows it is other processes' and stays held: their writers are stamping it now.
            for index in range(len(pending) - 1, -1, -1):
                if pending[index]["_id"] in self._waiters:
                    await flush(index + 1)
                    break

    async def _flush(self, events: list[Doc]) -> None:
        """Write these events' positions, then release them, in order.

        When one was stamped already with another position (an orphan at its marker, while this process
        could not write) the stored position is the one used."""
        if not events:
            return
        matched = await self._write_stamps([(e["_id"], e["seq"]) for e in events])
        if matched < len(events):
            stored = await self._read_positions([e["_id"] for e in events])
            for event in events:
                event["seq"] = stored.get(event["_id"]) or event["seq"]
        for event in events:
            self._release(event)
        events.clear()

    def _release(self, event: Doc) -> None:
        """The event's position is stored: wake its writer and hand it to the subscribers (once)."""
        if event["_id"] in self._recent:
            return
        # Only where someone waits for it (a subscriber here, or a request of this process): events nobody
        # here waits for are held on purpose (`_hold`), and their lag would measure that choice.
        awaited = bool(self._by_key) or event["_id"] in self._waiters
        self._remember(event["_id"], event["seq"])
        self.last_position = event["seq"]
        self._dispatch(event)
        if awaited:
            _observe_lag(event)

    async def _read_positions(self, ids: list[Any]) -> dict[Any, ObjectId | None]:
        return await self._retrying("reading event positions", event_store.positions_of, ids)

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

    # ----------------------------------------------------------------- the orphan-sweep lease

    async def _lease_loop(self) -> None:
        """Hold (or wait for) the orphan-sweep lease, so one process sweeps; a holder that stops renewing
        (crashed, cut off) is replaced once its lease lapses."""
        while True:
            try:
                holds = await config.take_lease(self.db, _LEASE, self.owner, self.lease_seconds)
            except PyMongoError as exc:
                logger.warning("orphan-sweep lease unavailable (%s)", exc)
                holds = False
            if holds and not self.sweeps_orphans:
                logger.info("this process now sweeps for unstamped events")
            elif not holds and self.sweeps_orphans:
                logger.warning("this process lost the orphan-sweep lease")
            self.sweeps_orphans = holds
            await asyncio.sleep(self.lease_seconds / 3)

    def _next_position(self, cluster_time: Timestamp) -> ObjectId:
        """Position of the next event: the n-th of its commit (a transaction's inserts share one time)."""
        if cluster_time == self._commit:
            self._n += 1
        else:
            self._commit, self._n = cluster_time, 0
        return event_store.position(cluster_time, self._n)

    async def _write_stamps(self, stamps: list[tuple[Any, ObjectId]]) -> int:
        """Write the positions, retrying until MongoDB takes them: nothing is dispatched before. Returns
        how many events hold the position given (set now, or by another process)."""
        while True:
            try:
                result = await event_store.stamp(self.db, stamps)
                self.stamped += result.modified
                return result.matched
            except PyMongoError as exc:
                logger.warning("stamping %d events failed (%s); retrying", len(stamps), exc)
                await asyncio.sleep(self.retry_seconds)

    def _remember(self, event_id: Any, seq: ObjectId) -> None:
        self._recent[event_id] = seq
        if len(self._recent) > self.RECENT:
            self._recent.popitem(last=False)
        waiter = self._waiters.get(event_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(seq)

    # ----------------------------------------------------------------- orphans

    async def _sweep_loop(self) -> None:
        """Every grace period, look for events no change stream saw committed and have them stamped."""
        while True:
            try:
                cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.orphan_grace_seconds)
                found = await event_store.orphans(self.db, cutoff) if self.sweeps_orphans else []
                if found:
                    logger.warning("%d events were never stamped; stamping them now", len(found))
                    await event_store.insert_clock(self.db, found)
            except PyMongoError as exc:
                logger.warning("orphan sweep failed (%s)", exc)
            await asyncio.sleep(self.orphan_grace_seconds)

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

    async def _pause(self, stream: Any) -> None:
        """Once the fetched changes are handled, and while no request here waits for events, let the next
        ones accumulate for up to `_hold()` and fetch them in one round trip: a process then costs itself
        and MongoDB one change-stream read per batch of other processes' events, not one per event. A
        request that starts writing (`writing`) or waiting (`settle`), or a new subscriber, ends the pause
        at once. It pauses even while a request here is inside its transaction (its `settle` ends the
        pause): in `bench.writes` that read less per event with two processes and was no slower with one."""
        if self.batch_seconds <= 0 or _buffered(stream) != 0:
            return
        self._wake.clear()
        if self._waiters:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._hold()):
                await self._wake.wait()

    def _hold(self) -> float:
        """How long what no request here waits for may be held: `batch_seconds` while a subscriber is
        registered here, `IDLE_HOLD_FACTOR` times that while none is (this process's stamps then only repeat
        its writer's, so they can wait; a subscriber that registers ends the longer hold at once)."""
        return self.batch_seconds if self._by_key else self.batch_seconds * IDLE_HOLD_FACTOR

    def _broadcast_gap(self) -> None:
        for subs in self._by_key.values():
            for subscriber in subs:
                subscriber.push(GAP)

    # ----------------------------------------------------------------- the change stream

    async def _run(self) -> None:
        gap = False  # history was lost: tell subscribers once the fresh stream is open
        while True:
            opening = True
            try:
                self._stream = await event_store.watch_changes(self.db, resume_after=self.resume_token)
                opening = False
                # The stream's position even before any event arrives, so an early failure loses nothing.
                self.resume_token = self._stream.resume_token or self.resume_token
                self._ready.set()
                if gap:
                    # Only now: whatever commits from here on reaches subscribers live, so what they
                    # re-read from the collection after GAP leaves nothing out.
                    self._inbox.put_nowait(GAP)
                    gap = False
                async with self._stream as stream:
                    async for change in stream:
                        self.resume_token = stream.resume_token
                        event = change["fullDocument"]
                        event["_cluster_time"] = change["clusterTime"]
                        self._inbox.put_nowait(event)
                        await self._pause(stream)
                # The stream was closed without an error (e.g. `interrupt`): reopen after the token.
            except asyncio.CancelledError:
                raise
            except OperationFailure as exc:
                if exc.code == _NOT_A_REPLICA_SET:
                    raise HubUnavailable(
                        "MongoDB is not running as a replica set, so change streams (and transactions) are"
                        " unavailable; start it with --replSet (one node is enough) or use Atlas"
                    ) from exc
                if opening and self.resume_token is not None and not _resumable(exc):
                    # The server refuses to resume from our token (history rolled over, or the token is
                    # unusable): start afresh, and have subscribers re-read what they missed. Failures
                    # while reading (a killed cursor, a step-down) just reopen from the token.
                    logger.warning("cannot resume the change stream (%s); subscribers re-read", exc)
                    self.resume_token = None
                    gap = True
                else:
                    logger.warning("change stream failed (%s); reopening", exc)
                    await asyncio.sleep(self.retry_seconds)
            except PyMongoError as exc:
                logger.warning("change stream interrupted (%s); resuming", exc)
                await asyncio.sleep(self.retry_seconds)
            finally:
                self._stream = None
            self.restarts += 1
