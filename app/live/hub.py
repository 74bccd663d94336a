"""The event pipeline of one server process, with one owner: `EventHub` starts, wires and stops its parts,
and is the only interface the rest of the server uses (writers: `writing`, `settle`; subscriptions:
`subscribe`, through `app.live.feed`; the lifespan: `start`, `end_subscriptions`, `wait_idle`, `stop`;
`/metrics` and `/health`: its counters).

    task_events inserts ──▶ ChangeReader ──queue──▶ Stamper ──▶ Registry ──▶ Subscriber inboxes
    (app.live.reader: one change stream)   (app.live.stamper:    (app.live.registry:   (app.live.inbox)
                                            positions, waiters)   routing keys)
    OrphanSweep (app.live.orphans): one process, under a lease, marks events no stream saw for stamping.

Every server process watches the same collection, so a write handled by any process reaches subscribers
on all of them: processes stay stateless and need no sticky sessions.

Invariants (MUST):

- An event MUST be released (to its writer's `settle` and to subscribers) only after its position is
  stored. That is what makes a subscription's hand-over exact (`app.live.feed`): an event released before
  a subscriber registered is readable by its replay.
- Positions MUST be written in stream (commit) order, each batch one ordered, majority-acknowledged write
  after the previous one succeeded: whatever snapshot a reader takes then holds a prefix of the commit
  order, so resuming after the last position seen never skips an event.
- Every process MUST compute the same position for the same event (its commit's `clusterTime` and its
  index in the commit), so whichever process stamps first sets it and the others' stamps change nothing;
  no process waits for another, and none takes over when one dies. An event already stamped differently
  (an orphan stamped at its marker) keeps its stored position.
- The reader MUST reopen a dropped stream after the last resume token it handed on, and when that token's
  history is gone it MUST queue `GAP` (after the fresh stream is open), which every subscriber gets and
  answers by re-reading from the collection.
- An event that no stream saw MUST still get a position: the orphan sweep (one process) marks it after
  `GRACE_SECONDS`, later than any transaction that wrote it could still commit.
- Fan-out MUST never block: a subscriber whose inbox is full (events or bytes) is cut off (`SlowConsumer`)
  and its buffer released; shutdown ends every subscription after what is already buffered
  (`HubClosing`), so a client sees a completed stream and resumes elsewhere from its last cursor.
- A request of this process MUST never be held: the events it waits for are read and stamped at once
  (`settle` wakes the reader and nudges the stamper), whatever `hold()` is.

Tuning (constants: no operator has a reason to choose them; tests pass other values to the constructor):

- `BATCH_SECONDS` (0.02 s): how long a process may hold what none of its requests waits for (other
  processes' events, which their own process stamps at once) before reading and stamping it, many in one
  change-stream read and one write; a subscriber elsewhere sees an event up to about twice this late.
- `IDLE_HOLD_FACTOR` (50): with no subscriber here, that hold is 50 × longer (1 s): this process's stamps
  only repeat the writers', and cost it CPU on every read. With 10 (0.2 s), an idle second server process
  still cost each transition 0.15 ms of its CPU and 0.09 ms of mongod's, and one client ran 1-4 % slower
  with it up; with 50 that fell to 0.01 ms and 0.05 ms (`bench.writes`, 6 rounds). A subscriber that
  registers ends the longer hold at once.
- `app.live.stamper.SETTLE_SECONDS` (5 s): the longest a writer waits for its events' positions (only when
  the stream is down or no primary takes writes) before answering without cursors.
- `app.live.orphans.GRACE_SECONDS` (90 s) and `LEASE_SECONDS` (3 s): see above.
- `RETRY_SECONDS` (0.5 s): the pause before a failed stream read, stamp or read is tried again.

Operators choose only what a client may hold: `SUBSCRIPTION_QUEUE_SIZE` and `SUBSCRIPTION_QUEUE_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from bson import ObjectId

from app.cancellation import stop_task, stop_tasks
from app.live.inbox import ALL, GAP, Doc, HubClosing, Key, SlowConsumer, Subscriber
from app.live.orphans import OrphanSweep
from app.live.reader import ChangeReader, HubUnavailable
from app.live.registry import Registry
from app.live.stamper import SETTLE_SECONDS, Stamper
from app.store.types import Db

__all__ = ["ALL", "GAP", "EventHub", "HubClosing", "HubUnavailable", "Key", "SlowConsumer", "Subscriber"]

BATCH_SECONDS = 0.02
IDLE_HOLD_FACTOR = 50
RETRY_SECONDS = 0.5


class EventHub:
    """Watches `task_events`, stamps event positions, and fans events out to in-process subscribers."""

    def __init__(
        self,
        db: Db,
        *,
        queue_size: int = 1000,
        queue_bytes: int | None = None,
        owner: str | None = None,
        batch_seconds: float = BATCH_SECONDS,
        settle_seconds: float = SETTLE_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.batch_seconds = batch_seconds
        wake = asyncio.Event()  # ends the reader's pause: a request writes or waits, a subscriber came
        queue: asyncio.Queue[Doc] = asyncio.Queue()
        self._registry = Registry(queue_size=queue_size, queue_bytes=queue_bytes)
        self._stamper = Stamper(
            db,
            queue,
            self._registry,
            wake=wake,
            hold=self._hold,
            retry_seconds=retry_seconds,
            settle_seconds=settle_seconds,
        )
        self._reader = ChangeReader(
            db,
            queue,
            wake=wake,
            hold=self._hold,
            waiting=lambda: self._stamper.waiting,
            retry_seconds=retry_seconds,
        )
        #: Who this process is, for the orphan-sweep lease (the process id, when given).
        self._orphans = OrphanSweep(db, owner or uuid.uuid4().hex)
        self._registry.on_register = self._on_register
        self._queue = queue
        self._wake = wake
        self._task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _hold(self) -> float:
        """How long what no request here waits for may be held (see the module docstring)."""
        return self.batch_seconds if self._registry.any else self.batch_seconds * IDLE_HOLD_FACTOR

    def _on_register(self) -> None:
        self._wake.set()  # the reader and the stamper hold events for less from now on
        self._stamper.nudge()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the change stream; returns once it is established, so no later commit can be missed."""
        self._reader.ready = asyncio.Event()
        self._task = asyncio.create_task(self._reader.run(), name="event-hub-reader")
        self._tasks = [
            asyncio.create_task(self._stamper.run(), name="event-hub-stamper"),
            asyncio.create_task(self._orphans.hold_lease(), name="event-hub-lease"),
            asyncio.create_task(self._orphans.sweep(), name="event-hub-orphans"),
        ]
        ready = asyncio.create_task(self._reader.ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:  # the stream could not even be opened: surface why
            ready.cancel()
            await self._stop_helpers()
            self._task.result()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        await self._stop_helpers()
        await self._orphans.release()
        self._stamper.cancel_waiters()

    async def _stop_helpers(self) -> None:
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)

    def end_subscriptions(self) -> None:
        """Shutdown, first step: end every subscription, and every one opened from now on.

        Each subscription reads what is already buffered for it and then ends like a finished stream
        (SSE sends `complete`, a WebSocket operation its `complete` message), so a client knows it was
        not cut off by a network failure and resumes from its last cursor on another server. The change
        stream keeps running until `stop`."""
        self._registry.close_all()

    async def wait_idle(self, seconds: float) -> bool:
        """Wait (at most `seconds`) until no subscriber is registered; whether none is."""
        return await self._registry.wait_idle(seconds)

    async def interrupt(self) -> None:
        """Close the current change stream as a network failure would (operators' and tests' lever)."""
        await self._reader.interrupt()

    # ----------------------------------------------------------------- writers

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a request's write of events: it ends the reader's pause, so the next change-stream read
        is under way (waiting in MongoDB) by the time the write commits, rather than sent after."""
        self._wake.set()
        yield

    async def settle(self, events: list[Doc]) -> None:
        """Wait until these just-committed events are stamped (at most `SETTLE_SECONDS`) and set their
        `seq`, so a writer answers with cursors and a read right after sees its events."""
        await self._stamper.settle(events)

    # ----------------------------------------------------------------- subscribers

    @contextlib.asynccontextmanager
    async def subscribe(
        self, key: Key, accepts: Callable[[Mapping[str, Any]], bool], *, limit: int | None = None
    ) -> AsyncIterator[Subscriber]:
        """Register a subscriber for as long as the block runs (the protocol over it: `app.live.feed`)."""
        with self._registry.registered(key, accepts, limit=limit) as subscriber:
            yield subscriber

    # ----------------------------------------------------------------- what /metrics and /health show

    @property
    def subscriber_count(self) -> int:
        return self._registry.count

    @property
    def backlog(self) -> int:
        """Changes read off the stream and not yet stamped and released."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and self._reader.ready.is_set()

    @property
    def restarts(self) -> int:
        """Times the reader reopened its change stream."""
        return self._reader.restarts

    @property
    def stamped(self) -> int:
        """Positions this process's stamps set (not those it found set)."""
        return self._stamper.stamped

    @property
    def last_position(self) -> ObjectId | None:
        return self._stamper.last_position

    @property
    def sweeps_orphans(self) -> bool:
        return self._orphans.sweeps

    @property
    def resume_token(self) -> Mapping[str, Any] | None:
        return self._reader.resume_token

    @resume_token.setter
    def resume_token(self, token: Mapping[str, Any] | None) -> None:
        """Tests' lever: a token whose history is gone makes the next open start afresh with `GAP`."""
        self._reader.resume_token = token
