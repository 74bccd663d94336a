"""The event hub: ONE change stream on `task_events` per server process, fanned out in memory.

Every subscriber registers a routing key (a task, a workflow, an agent, or everything) and a predicate;
the hub hands each inserted event to the subscribers under its keys whose predicate accepts it. Because
every server process watches the same collection, a write handled by any process reaches subscribers
on all of them: processes stay stateless and need no sticky sessions.

Each subscriber has a bounded buffer. A subscriber that falls `limit` events behind (a client that
reads slower than events arrive) is cut off with `SlowConsumer` instead of slowing the others down or
growing memory without bound; it can resume from its last cursor.

The hub survives a dropped change stream: it reopens it after the last resume token it processed, so
no event is lost. If that token is no longer in the oplog, every subscriber receives `GAP` and re-reads
what it missed from the collection (events are numbered in commit order, so that is exact).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from app.store import events as event_store
from app.store.types import Db

logger = logging.getLogger(__name__)

Doc = dict[str, Any]
#: Routing keys: ("task", id), ("workflow", id), ("agent", id) or ALL.
Key = tuple[Any, ...]
ALL: Key = ("all",)
#: Pushed to every subscriber when the hub may have missed events (its resume token was lost).
GAP: Doc = {"_gap": True}


def _resumable(exc: OperationFailure) -> bool:
    """An error the change stream can resume after (as PyMongo's own rule: the server labels them)."""
    return exc.has_error_label("ResumableChangeStreamError")


_NOT_A_REPLICA_SET = 40573


class HubUnavailable(RuntimeError):
    """The change stream cannot work against this deployment at all."""


class SlowConsumer(Exception):
    """The subscriber fell too far behind and was disconnected."""


@dataclass(eq=False)
class Subscriber:
    """One subscription's inbox: a bounded buffer of events in commit order."""

    key: Key
    accepts: Callable[[Mapping[str, Any]], bool]
    limit: int
    _items: deque[Doc] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None

    def push(self, item: Doc) -> None:
        """Called by the hub for every matching event; never blocks."""
        if self.error is not None:
            return
        if len(self._items) >= self.limit:
            self.error = (
                f"subscription fell more than {self.limit} events behind and was disconnected;"
                " resubscribe with `after` set to the last cursor you received"
            )
            self._items.clear()
        else:
            self._items.append(item)
        self._wakeup.set()

    async def next(self) -> Doc:
        """The next event (or `GAP`); raises `SlowConsumer` once the buffer overflowed."""
        while not self._items:
            if self.error is not None:
                raise SlowConsumer(self.error)
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    def drain(self) -> list[Doc]:
        """Everything already buffered, without waiting (to coalesce bursts)."""
        items = list(self._items)
        self._items.clear()
        return items

    @property
    def pending(self) -> int:
        return len(self._items)


class EventHub:
    """Watches `task_events` and fans events out to in-process subscribers."""

    def __init__(self, db: Db, *, queue_size: int = 1000, retry_seconds: float = 0.5) -> None:
        self.db = db
        self.queue_size = queue_size
        self.retry_seconds = retry_seconds
        self._by_key: dict[Key, set[Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stream: Any = None
        self._ready = asyncio.Event()
        self.resume_token: Mapping[str, Any] | None = None
        self.last_event_id: int | None = None
        self.restarts = 0

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the change stream; returns once it is established, so no later commit can be missed."""
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="event-hub")
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:  # the stream could not even be opened: surface why
            ready.cancel()
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._by_key.values())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and self._ready.is_set()

    async def interrupt(self) -> None:
        """Close the current change stream as a network failure would (operators' and tests' lever)."""
        if self._stream is not None:
            await self._stream.close()

    # ----------------------------------------------------------------- subscribing

    @contextlib.asynccontextmanager
    async def subscribe(
        self, key: Key, accepts: Callable[[Mapping[str, Any]], bool], *, limit: int | None = None
    ) -> AsyncIterator[Subscriber]:
        """Register a subscriber for as long as the block runs; it is always removed on the way out."""
        subscriber = Subscriber(key=key, accepts=accepts, limit=limit or self.queue_size)
        self._by_key.setdefault(key, set()).add(subscriber)
        try:
            yield subscriber
        finally:
            subs = self._by_key.get(key)
            if subs is not None:
                subs.discard(subscriber)
                if not subs:
                    del self._by_key[key]

    def _dispatch(self, event: Doc) -> None:
        keys: tuple[Key, ...] = (
            ALL,
            ("task", event.get("task_id")),
            ("workflow", event.get("workflow_id")),
            ("agent", event.get("agent_id")),
        )
        for key in keys:
            for subscriber in tuple(self._by_key.get(key, ())):
                if subscriber.accepts(event):
                    subscriber.push(event)

    def _broadcast_gap(self) -> None:
        for subs in self._by_key.values():
            for subscriber in subs:
                subscriber.push(GAP)

    # ----------------------------------------------------------------- the change stream

    async def _run(self) -> None:
        while True:
            opening = True
            try:
                self._stream = await event_store.watch_inserts(self.db, resume_after=self.resume_token)
                opening = False
                # The stream's position even before any event arrives, so an early failure loses nothing.
                self.resume_token = self._stream.resume_token or self.resume_token
                self._ready.set()
                async with self._stream as stream:
                    async for change in stream:
                        self.resume_token = stream.resume_token
                        event = change["fullDocument"]
                        self.last_event_id = event.get("_id")
                        self._dispatch(event)
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
                    self._broadcast_gap()
                else:
                    logger.warning("change stream failed (%s); reopening", exc)
                    await asyncio.sleep(self.retry_seconds)
            except PyMongoError as exc:
                logger.warning("change stream interrupted (%s); resuming", exc)
                await asyncio.sleep(self.retry_seconds)
            finally:
                self._stream = None
            self.restarts += 1
