"""The subscribers of one server process, by routing key, and the fan-out of each released event to them.

Every subscriber registers a routing key (a task, a workflow, an agent, or everything) and a predicate; an
event is offered only to the subscribers under its four keys, and pushed to those whose predicate accepts
it. Pushing never blocks (a full inbox cuts its subscriber off: `app.live.inbox`), so one slow client never
holds the others back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import bson

from app.live.inbox import ALL, Doc, Key, Subscriber


def bson_size(event: Doc) -> int:
    """An event's size as MongoDB stored it (what a subscriber's bytes budget counts)."""
    try:
        return len(bson.encode(event))
    except (bson.errors.InvalidDocument, TypeError, OverflowError):  # never stops the fan-out: count it 0
        return 0


def routing_keys(event: Mapping[str, Any]) -> tuple[Key, ...]:
    """The keys an event is offered under: everything, its task, its workflow, its agent."""
    return (
        ALL,
        ("task", event.get("task_id")),
        ("workflow", event.get("workflow_id")),
        ("agent", event.get("agent_id")),
    )


class Registry:
    """Subscribers by routing key; `dispatch` hands an event to each one that wants it."""

    def __init__(self, *, queue_size: int, queue_bytes: int | None) -> None:
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self._by_key: dict[Key, set[Subscriber]] = {}
        #: Set by `close_all` (shutdown): every subscription, and any new one, ends.
        self.closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        #: Called whenever a subscriber registers (the pipeline stops holding events back).
        self.on_register: Callable[[], None] = lambda: None

    @contextlib.contextmanager
    def registered(
        self, key: Key, accepts: Callable[[Mapping[str, Any]], bool], *, limit: int | None = None
    ) -> Iterator[Subscriber]:
        """A subscriber for as long as the block runs; it is always removed on the way out."""
        subscriber = Subscriber(
            key=key, accepts=accepts, limit=limit or self.queue_size, limit_bytes=self.queue_bytes
        )
        if self.closing:  # opened during shutdown: it ends at once
            subscriber.close()
        self._by_key.setdefault(key, set()).add(subscriber)
        self._idle.clear()
        self.on_register()
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

    def dispatch(self, event: Doc) -> None:
        """Push the event to every subscriber under its keys whose predicate accepts it."""
        size: int | None = None
        for key in routing_keys(event):
            for subscriber in tuple(self._by_key.get(key, ())):
                if subscriber.accepts(event):
                    if size is None:  # once per event, and only for an event someone wants
                        size = bson_size(event)
                    subscriber.push(event, size)

    def broadcast(self, item: Doc) -> None:
        """Push `item` (`GAP`) to every subscriber, whatever it watches."""
        for subscriber in self._subscribers():
            subscriber.push(item)

    def close_all(self) -> None:
        """End every subscription, and every one opened from now on (shutdown)."""
        self.closing = True
        for subscriber in self._subscribers():
            subscriber.close()

    async def wait_idle(self, seconds: float) -> bool:
        """Wait (at most `seconds`) until no subscriber is registered; whether none is."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        return self._idle.is_set()

    def _subscribers(self) -> Iterator[Subscriber]:
        for subs in self._by_key.values():
            yield from subs

    @property
    def count(self) -> int:
        return sum(len(subs) for subs in self._by_key.values())

    @property
    def any(self) -> bool:
        """Whether anyone here subscribes (the pipeline holds events back longer while nobody does)."""
        return bool(self._by_key)
