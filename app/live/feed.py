"""The subscription protocol: what a subscriber watches (`Selector`), and the events it gets, exactly once.

`events` is the one way a client follows the event history live, whatever it speaks (GraphQL over a
WebSocket, or over server-sent events): register with the hub FIRST, replay the stored events after the
client's cursor, then tail the live ones, dropping by position whatever the replay already gave. Because
the hub releases an event only once its position is stored (`app.live.stamper`), an event released
before the registration is readable by the replay, and one released after it is in the inbox: nothing
falls in between, nothing comes twice. After a `GAP` (the hub may have missed events) the subscriber
replays again from its last position.

`changes` is the same registration without a history: batches of live events (or `GAP`), for the
subscriptions that send a state rather than the events themselves.

A `Selector` holds the criteria once and renders them both ways: the MongoDB filter the replay reads with
(`app.store.events.events_filter`) and the predicate the hub tests live events with; a test checks the
two agree on every combination.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from app.live.hub import EventHub
from app.live.inbox import ALL, GAP, Doc, HubClosing, Key
from app.store.events import ORIGIN, count_events, events_filter, find_events, latest_position
from app.store.types import Db

#: Events replayed per read when a subscriber catches up from a cursor.
REPLAY_BATCH = 500


class Head:
    """`after=HEAD`: live events only, from the latest position at registration."""


HEAD = Head()


class ReplayTooLong(Exception):
    """More stored events follow the cursor than a subscription replays (`SUBSCRIPTION_REPLAY_MAX`)."""

    def __init__(self, limit: int, *, from_start: bool) -> None:
        super().__init__(f"more than {limit} stored events to replay")
        self.limit = limit
        self.from_start = from_start


@dataclass(frozen=True)
class Selector:
    """Which events a subscriber watches: every criterion given (None: no criterion; an empty `types`
    matches no event)."""

    task_id: str | None = None
    workflow_id: str | None = None
    agent_id: str | None = None
    actor_id: str | None = None
    types: frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        *,
        task_id: str | None = None,
        workflow_id: str | None = None,
        agent_id: str | None = None,
        actor_id: str | None = None,
        types: Iterable[str] | None = None,
    ) -> Selector:
        return cls(
            task_id, workflow_id, agent_id, actor_id, None if types is None else frozenset(map(str, types))
        )

    def query(self) -> Doc:
        """The MongoDB filter for these events (the replay's)."""
        return events_filter(
            task_id=self.task_id,
            workflow_id=self.workflow_id,
            agent_id=self.agent_id,
            actor_id=self.actor_id,
            types=self.types,
        )

    def accepts(self, event: Mapping[str, Any]) -> bool:
        """Whether a live event matches, as `query()` would match it stored."""
        actor = event.get("actor")
        return (
            (self.task_id is None or event.get("task_id") == self.task_id)
            and (self.workflow_id is None or event.get("workflow_id") == self.workflow_id)
            and (self.agent_id is None or event.get("agent_id") == self.agent_id)
            and (self.actor_id is None or (isinstance(actor, Mapping) and actor.get("id") == self.actor_id))
            and (self.types is None or event.get("type") in self.types)
        )

    def key(self) -> Key:
        """The most selective routing key, so the hub only asks the subscribers that may want an event."""
        if self.task_id is not None:
            return ("task", self.task_id)
        if self.workflow_id is not None:
            return ("workflow", self.workflow_id)
        if self.agent_id is not None:
            return ("agent", self.agent_id)
        return ALL


async def check_replay(db: Db, selector: Selector, after: ObjectId | Head | None, limit: int) -> None:
    """Refuse (`ReplayTooLong`) a replay of more than `limit` events, before anything is sent: each
    replayed event costs a GraphQL execution and a message, so a few replays of a long history from one
    socket would hold the CPU for minutes; the `taskEvents` query pages the same history far more cheaply.
    Costs at most `limit + 1` index entries."""
    if isinstance(after, Head):
        return
    count = await count_events(db, selector.query(), after=after or ORIGIN, limit=limit + 1)
    if count > limit:
        raise ReplayTooLong(limit, from_start=after is None)


async def events(
    hub: EventHub, db: Db, selector: Selector, after: ObjectId | Head | None
) -> AsyncGenerator[Doc, None]:
    """Every event `selector` matches after position `after` (None: from the start; `HEAD`: from now), in
    commit order, each once, then live ones until the hub ends the subscription (`HubClosing`: the
    iterator ends) or cuts it off (`SlowConsumer` is raised). Run it under `contextlib.aclosing` so the
    registration ends as soon as the caller stops."""
    query = selector.query()
    async with hub.subscribe(selector.key(), selector.accepts) as subscriber:
        # Registered first: whatever commits from now on is buffered, so the replay below can't miss it.
        replay = not isinstance(after, Head)
        last = (after or ORIGIN) if not isinstance(after, Head) else await latest_position(db)
        while True:
            while replay:  # catch up from the collection, a batch at a time
                docs = await find_events(db, query, after=last, limit=REPLAY_BATCH)
                for doc in docs:
                    last = doc["seq"]
                    # Back to the event loop before each event: sending one rarely waits, so a replay
                    # would otherwise hold the loop for a whole batch and starve every other client.
                    await asyncio.sleep(0)
                    yield doc
                replay = len(docs) == REPLAY_BATCH
            try:
                event = await subscriber.next()
            except HubClosing:  # the server is shutting down: the stream ends
                return
            if event is GAP:  # the hub may have missed events: read them from the collection
                replay = True
            elif event["seq"] > last:  # seen already during the replay otherwise
                last = event["seq"]
                yield event


async def changes(hub: EventHub, selector: Selector) -> AsyncGenerator[list[Doc], None]:
    """Batches of live events `selector` matches (`GAP` among them when the hub may have missed some):
    everything buffered at once, so a burst is handled as one change. Ends with the subscription
    (`HubClosing`); raises `SlowConsumer` when cut off. Run it under `contextlib.aclosing`."""
    async with hub.subscribe(selector.key(), selector.accepts) as subscriber:
        while True:
            try:
                first = await subscriber.next()
            except HubClosing:
                return
            yield [first, *subscriber.drain()]
