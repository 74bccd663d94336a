"""The event hub on a real change stream: fan-out by key, batching of what nobody here waits for,
survival of a dropped stream (resume token), a lost resume token (GAP to every subscriber), and clean
unsubscription."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.monitoring import CommandListener, CommandStartedEvent

from app.lifecycle.events import EventType, event_doc
from app.live import orphans
from app.live.hub import ALL, GAP, EventHub, HubUnavailable, SlowConsumer
from app.mongo.embedded import find_mongod_binary
from app.store.events import append_events
from app.store.indexes import ensure_indexes
from tests.support.servers import free_port

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def tool_call(task_id: str, workflow_id: str | None = "wf") -> dict[str, Any]:
    return event_doc(EventType.TOOL_CALL, task_id, workflow_id, "A", {"tool_name": "t"}, T0)


async def started_hub(db: Any, **kw: Any) -> EventHub:
    await ensure_indexes(db)
    hub = EventHub(db, retry_seconds=0.05, **kw)
    await hub.start()
    return hub


async def collect(subscriber: Any, count: int) -> list[Any]:
    return [await asyncio.wait_for(subscriber.next(), 10) for _ in range(count)]


async def test_fan_out_by_key_and_predicate(db: Any) -> None:
    hub = await started_hub(db)
    try:
        async with (
            hub.subscribe(("task", "a"), lambda e: True) as only_a,
            hub.subscribe(("workflow", "wf"), lambda e: e["task_id"] != "b") as wf_not_b,
            hub.subscribe(ALL, lambda e: True) as everything,
        ):
            assert hub.subscriber_count == 3
            await append_events(db, None, [tool_call("a"), tool_call("b"), tool_call("c", "other")])
            assert [e["task_id"] for e in await collect(everything, 3)] == ["a", "b", "c"]
            assert [e["task_id"] for e in await collect(only_a, 1)] == ["a"]
            assert [e["task_id"] for e in await collect(wf_not_b, 1)] == ["a"]
            assert only_a.pending == 0 and wf_not_b.pending == 0
        assert hub.subscriber_count == 0
    finally:
        await hub.stop()


async def test_a_dropped_change_stream_resumes_without_loss(db: Any) -> None:
    hub = await started_hub(db)
    try:
        async with hub.subscribe(ALL, lambda e: True) as sub:
            await append_events(db, None, [tool_call("before")])
            assert (await collect(sub, 1))[0]["task_id"] == "before"
            await hub.interrupt()  # the stream goes away as on a network failure...
            await append_events(
                db, None, [tool_call(f"during{i}") for i in range(5)]
            )  # ...while writes go on
            got = await collect(sub, 5)
            assert [e["task_id"] for e in got] == [f"during{i}" for i in range(5)]
            assert hub.restarts >= 1 and hub.running
    finally:
        await hub.stop()


async def test_a_lost_resume_token_tells_subscribers_to_reread(db: Any) -> None:
    hub = await started_hub(db)
    try:
        async with hub.subscribe(ALL, lambda e: True) as sub:
            # A resume token the server cannot find (as after the oplog rolled over).
            hub.resume_token = {"_data": "82" + "00" * 40}
            await hub.interrupt()
            assert await asyncio.wait_for(sub.next(), 10) is GAP
            await append_events(db, None, [tool_call("after")])
            assert (await collect(sub, 1))[0]["task_id"] == "after"
    finally:
        await hub.stop()


async def test_overflow_disconnects_only_the_slow_subscriber(db: Any) -> None:
    hub = await started_hub(db, queue_size=3)
    try:
        async with (
            hub.subscribe(ALL, lambda e: True) as slow,
            hub.subscribe(ALL, lambda e: True, limit=100) as fast,
        ):
            await append_events(db, None, [tool_call(f"t{i}") for i in range(5)])
            assert len(await collect(fast, 5)) == 5
            try:
                await asyncio.wait_for(slow.next(), 10)
                raise AssertionError("the slow subscriber should have been cut off")
            except SlowConsumer as exc:
                assert "fell more than 3 events behind" in str(exc)
            assert slow.pending == 0  # its buffer was released
    finally:
        await hub.stop()


async def test_a_subscriber_is_bounded_in_bytes_as_well_as_events(db: Any) -> None:
    """Big events: a subscriber that does not read is cut off at `queue_bytes` (the events' BSON size),
    long before `queue_size` events; one that reads gets every event, even one bigger than the budget."""
    hub = await started_hub(db, queue_size=1000, queue_bytes=64 * 1024)
    big = [
        event_doc(
            EventType.TOOL_CALL, f"t{i}", "wf", "A", {"tool_name": "t", "tool_args": {"x": "y" * 30_000}}, T0
        )
        for i in range(6)
    ]
    huge = event_doc(
        EventType.TOOL_CALL, "h", "wf", "A", {"tool_name": "t", "tool_args": {"x": "z" * 200_000}}, T0
    )
    try:
        async with (
            hub.subscribe(ALL, lambda e: True) as stalled,
            hub.subscribe(ALL, lambda e: True) as reader,
        ):
            await append_events(db, None, [huge])
            assert [e["task_id"] for e in await collect(reader, 1)] == ["h"]  # alone, over budget: let in
            assert [e["task_id"] for e in await collect(stalled, 1)] == ["h"]
            assert stalled.held_bytes == 0
            for event in big:
                await append_events(db, None, [event])
                assert len(await collect(reader, 1)) == 1  # reads as they come: never cut off
            assert reader.held_bytes == 0 and reader.error is None
            with pytest.raises(SlowConsumer) as cut:
                await asyncio.wait_for(stalled.next(), 10)
            # Two ~30 KB events fit in 64 KiB, the third does not.
            message = str(cut.value)
            assert "unread events exceeded 65536 bytes (SUBSCRIPTION_QUEUE_BYTES=65536): " in message
            assert " bytes in 3 events and was disconnected" in message
            assert "resubscribe with `after` set to the last cursor you received" in str(cut.value)
            assert stalled.pending == 0 and stalled.held_bytes == 0  # its buffer was released
    finally:
        await hub.stop()


async def test_after_a_gap_subscriptions_reread_what_the_stream_missed(
    settings: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub lost its resume token while events were written: the subscription re-reads from the
    collection, and the events no stream saw committed are stamped by the orphan sweep (after its grace
    period) and delivered then: every event once, the lost ones in the order they were written."""
    from app.api.context import Context
    from app.api.schema import build_schema
    from app.server import create_app

    monkeypatch.setattr(orphans, "GRACE_SECONDS", 1.0)  # a constant: no operator chooses it
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = app.state.agent_tasks
        stream = await build_schema().subscribe(
            'subscription { taskEvents(workflowId: "wf", after: "HEAD") { cursor taskId } }',
            context_value=Context(app=state),
        )
        first = asyncio.create_task(anext(stream))
        while state.hub.subscriber_count == 0:
            await asyncio.sleep(0.01)
        await append_events(db, None, [tool_call("a")])
        assert (await asyncio.wait_for(first, 10)).data["taskEvents"]["taskId"] == "a"

        await state.hub.stop()  # the stream is down while two events commit...
        await append_events(db, None, [tool_call("b"), tool_call("c")])
        state.hub.resume_token = {"_data": "82" + "00" * 40}  # ...and its token is lost
        await state.hub.start()
        await append_events(db, None, [tool_call("d")])
        got = [(await asyncio.wait_for(anext(stream), 10)).data["taskEvents"]["taskId"] for _ in range(3)]
        # d committed while the stream ran: stamped at once. b and c, lost with the stream's history,
        # take positions when the sweep finds them, after d.
        assert got == ["d", "b", "c"]
        stored = [e["task_id"] async for e in db.task_events.find({"seq": {"$ne": None}}).sort("seq", 1)]
        assert stored == ["a", "d", "b", "c"]
        await stream.aclose()
        assert state.hub.subscriber_count == 0


@pytest.fixture
def standalone_uri(tmp_path: Path) -> Iterator[str]:
    """A mongod started WITHOUT --replSet, as a misconfigured deployment would be."""
    port = free_port()
    (tmp_path / "db").mkdir()
    args = [str(find_mongod_binary()), "--port", str(port), "--dbpath", str(tmp_path / "db")]
    mongod = subprocess.Popen(
        [*args, "--bind_ip", "127.0.0.1", "--nounixsocket", "--quiet"], stdout=subprocess.DEVNULL
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        with MongoClient(uri, serverSelectionTimeoutMS=20_000) as probe:
            probe.admin.command("ping")
        yield uri
    finally:
        mongod.terminate()
        mongod.wait(20)


class HubCommands(CommandListener):
    """The commands a hub's own client sends on `task_events`: its change-stream reads and its stamps."""

    def __init__(self) -> None:
        self.get_mores = 0
        self.stamps = 0

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name == "getMore" and event.command.get("collection") == "task_events":
            self.get_mores += 1
        elif event.command_name == "update" and event.command.get("update") == "task_events":
            self.stamps += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


async def stamped(db: Any, ids: list[Any]) -> list[Any]:
    """The positions of these events once all are stamped (waiting up to 60 s), in the order of `ids`."""
    for _ in range(1200):
        found = {e["_id"]: e["seq"] async for e in db.task_events.find({"_id": {"$in": ids}})}
        if all(found.get(i) is not None for i in ids):
            return [found[i] for i in ids]
        await asyncio.sleep(0.05)
    raise AssertionError("events not stamped within 60 s")


async def test_a_hub_that_only_watches_reads_and_stamps_in_batches(settings: Any, db: Any) -> None:
    """Events none of its requests waits for (another process's writes) are read and stamped many at a
    time: 40 events written 10 ms apart cost this hub a handful of change-stream reads and stamp writes,
    not 40 of each, and still get their positions in commit order."""
    commands = HubCommands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongodb_uri, tz_aware=True, event_listeners=[commands]
    )
    hub = await started_hub(client[settings.mongodb_db], batch_seconds=0.01)  # 0.5 s with no subscriber
    try:
        await asyncio.sleep(0.2)  # the stream's first read, whatever it returns, is not counted
        reads, writes = commands.get_mores, commands.stamps
        events = [tool_call(f"t{i}") for i in range(40)]
        for event in events:
            await append_events(db, None, [event])
            await asyncio.sleep(0.01)
        positions = await stamped(db, [e["_id"] for e in events])
        assert positions == sorted(positions)
        assert commands.stamps - writes <= 8, commands.stamps - writes
        assert commands.get_mores - reads <= 8, commands.get_mores - reads
    finally:
        await hub.stop()
        await client.close()


async def test_a_request_of_its_own_is_never_held(db: Any) -> None:
    """However long the hub may hold other processes' events, the events a request of this process waits
    for are read and stamped at once: announced (`writing`) or not (only `settle`)."""
    hub = await started_hub(db, batch_seconds=1, settle_seconds=5)  # 50 s with no subscriber
    try:
        with hub.writing():
            announced = [tool_call("a")]
            await append_events(db, None, announced)
            await hub.settle(announced)
        unannounced = [tool_call("b")]
        await append_events(db, None, unannounced)
        await hub.settle(unannounced)
        assert announced[0]["seq"] is not None and unannounced[0]["seq"] is not None
        assert unannounced[0]["seq"] > announced[0]["seq"]
    finally:
        await hub.stop()


async def test_a_new_subscriber_ends_the_long_hold(db: Any) -> None:
    """With no subscriber a hub holds others' events fifty times `batch_seconds`; one that subscribes gets
    the events held so far within `batch_seconds`, as live ones, not when the long hold ends."""
    hub = await started_hub(db, batch_seconds=1)  # 50 s with no subscriber
    try:
        await append_events(db, None, [tool_call("held")])
        await asyncio.sleep(0.3)  # read and held by now
        async with hub.subscribe(ALL, lambda e: True) as everything:
            # Well before the hold (50 s) would end, whatever the load: a deadline, not a speed.
            event = await asyncio.wait_for(everything.next(), 25)
            assert event["task_id"] == "held" and event["seq"] is not None
    finally:
        await hub.stop()


async def test_a_standalone_mongod_is_refused_with_a_clear_message(standalone_uri: str) -> None:
    """Without a replica set the hub (and transactions) cannot work: start-up says so in one sentence."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(standalone_uri)
    try:
        with pytest.raises(HubUnavailable, match="not running as a replica set"):
            await EventHub(client["standalone"]).start()
    finally:
        await client.close()
