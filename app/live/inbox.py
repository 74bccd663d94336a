"""One subscription's inbox: the events the registry hands it, in commit order, until its reader takes them.

Each inbox is bounded in events (`limit`) and in bytes (`limit_bytes`, the events' BSON size, computed once
per event by the registry whatever the number of subscribers). A subscriber that falls further behind (a
client that reads slower than events arrive, or not at all) is cut off with `SlowConsumer` and its buffer
released, instead of slowing the others down or pinning memory; it can resume from its last cursor. The
events themselves are shared by every inbox that holds them: the bound is on what one client that never
reads can keep alive.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]
#: Routing keys: ("task", id), ("workflow", id), ("agent", id) or ALL.
Key = tuple[Any, ...]
ALL: Key = ("all",)
#: Pushed to every subscriber when the hub may have missed events (its resume token was lost): whatever
#: it watches may have changed, and is to be re-read from the collection.
GAP: Doc = {"_gap": True}


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
        """Called by the registry for every matching event (`size`: its BSON size); never blocks."""
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
