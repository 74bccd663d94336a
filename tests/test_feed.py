"""The subscription protocol of `app.live.feed`, against a real hub on a real change stream: a `Selector`'s
MongoDB filter and its live predicate agree; `events` gives every event once across the replay/live
hand-over, from a cursor and from HEAD (after a GAP: `tests/test_hub.py`); a replay longer than the limit is refused before
anything is sent; closing the feed unregisters it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from typing import Any

import pytest

from app.lifecycle.events import EventType, event_doc
from app.live import feed
from app.live.hub import EventHub
from app.store.events import append_events
from app.store.indexes import ensure_indexes

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def event(task: str, workflow: str | None, agent: str, kind: EventType, actor: str | None) -> dict[str, Any]:
    doc = event_doc(kind, task, workflow, agent, {}, T0)
    doc["actor"] = None if actor is None else {"kind": "api_key", "id": actor, "name": actor}
    return doc


@pytest.fixture
async def hub(db: Any) -> Any:
    await ensure_indexes(db)
    hub = EventHub(db, retry_seconds=0.05)
    await hub.start()
    yield hub
    await hub.stop()


async def settled(hub: EventHub, db: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write the events (one transaction-free insert) and wait for their positions, as a mutation does."""
    with hub.writing():
        await append_events(db, None, events)
    await hub.settle(events)
    assert all(e["seq"] is not None for e in events)
    return events


async def test_a_selector_matches_live_events_as_its_filter_matches_stored_ones(
    hub: EventHub, db: Any
) -> None:
    """Every combination of criteria (each absent or set, types empty or not) over events that differ in
    each field, a missing workflow and a missing actor among them: the predicate accepts exactly what
    `find(query())` returns."""
    kinds = [EventType.TOOL_CALL, EventType.STATUS_CHANGED]
    stored = await settled(
        hub,
        db,
        [
            event(t, w, a, k, actor)
            for t, w, a, k, actor in itertools.product(
                ["t1", "t2"], ["w1", None], ["a1", "a2"], kinds, ["k1", None]
            )
        ],
    )
    checked = 0
    for task, workflow, agent, actor, types in itertools.product(
        (None, "t1"), (None, "w1"), (None, "a2"), (None, "k1"), (None, [], [EventType.TOOL_CALL], kinds)
    ):
        selector = feed.Selector.of(
            task_id=task, workflow_id=workflow, agent_id=agent, actor_id=actor, types=types
        )
        found = {e["_id"] async for e in db.task_events.find(selector.query())}
        accepted = {e["_id"] for e in stored if selector.accepts(e)}
        assert found == accepted, selector
        checked += 1
    assert checked == 2 * 2 * 2 * 2 * 4


async def test_events_hand_over_from_replay_to_live_without_gap_or_duplicate(hub: EventHub, db: Any) -> None:
    """Events written before, during and after the replay of a long history come once each, in commit
    order: the replay reads batches of `REPLAY_BATCH`, and writes keep landing meanwhile."""
    before = await settled(
        hub, db, [event(f"b{i}", "wf", "A", EventType.TOOL_CALL, None) for i in range(1200)]
    )
    selector = feed.Selector.of(workflow_id="wf")
    got: list[Any] = []
    during: list[dict[str, Any]] = []
    async with contextlib.aclosing(feed.events(hub, db, selector, None)) as events:
        async for doc in events:
            got.append(doc["_id"])
            if len(got) == 10:  # the subscriber is registered and replaying: write while it does
                for i in range(5):
                    during += await settled(hub, db, [event(f"d{i}", "wf", "A", EventType.TOOL_CALL, None)])
                await settled(hub, db, [event("other", "wf2", "A", EventType.TOOL_CALL, None)])
            if len(got) == len(before) + len(during):
                break
    assert got == [e["_id"] for e in before + during]
    assert hub.subscriber_count == 0  # closing the feed unregistered it


async def test_events_from_a_cursor_and_from_head(hub: EventHub, db: Any) -> None:
    first = await settled(hub, db, [event(f"t{i}", "wf", "A", EventType.TOOL_CALL, None) for i in range(3)])
    selector = feed.Selector.of(workflow_id="wf")
    async with contextlib.aclosing(feed.events(hub, db, selector, first[0]["seq"])) as from_cursor:
        assert [(await anext(from_cursor))["_id"] for _ in range(2)] == [e["_id"] for e in first[1:]]
    async with contextlib.aclosing(feed.events(hub, db, selector, feed.HEAD)) as live:
        pending = asyncio.ensure_future(anext(live))
        while hub.subscriber_count == 0:
            await asyncio.sleep(0.01)
        later = await settled(hub, db, [event("t9", "wf", "A", EventType.TOOL_CALL, None)])
        assert (await asyncio.wait_for(pending, 10))["_id"] == later[0]["_id"]
    assert hub.subscriber_count == 0


async def test_a_replay_longer_than_the_limit_is_refused_before_anything_is_sent(
    hub: EventHub, db: Any
) -> None:
    stored = await settled(hub, db, [event(f"t{i}", "wf", "A", EventType.TOOL_CALL, None) for i in range(5)])
    selector = feed.Selector.of(workflow_id="wf")
    with pytest.raises(feed.ReplayTooLong) as refused:
        await feed.check_replay(db, selector, None, 4)
    assert refused.value.limit == 4 and refused.value.from_start
    await feed.check_replay(db, selector, stored[0]["seq"], 4)  # four follow the first: allowed
    await feed.check_replay(db, selector, feed.HEAD, 0)  # HEAD replays nothing
