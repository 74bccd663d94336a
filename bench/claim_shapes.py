"""What a claim's *shape* costs, in plain PyMongo, before any HTTP or GraphQL: the lever issue 22 names.

`python -m bench.claim_shapes [--claimers 16] [--tasks 2000] [--rounds 3]`

16 claimers drain 2,000 pending tasks of mixed priorities (the same seed as `bench.writes`) on one embedded
mongod, with each shape in turn, alternating the order round by round; each ratio is to the floor of its
own round. Printed: claims/s, and CPU milliseconds per claim of this process (the driver's share) and of
mongod.

- `floor`: one `find_one_and_update` with the server's claim filter, order and index (`bench.writes`'s).
- `outbox`: the same command also pushing the claim's event (a STATUS_CHANGED built by the server's
  `event_doc`) onto the task document (`outbox`): the change and its event in one atomic single-document
  write, the usual MongoDB queue idiom, with the event to be moved to `task_events` later.
- `separate insert`: the floor, then the event inserted on its own. Shown for scale only: not atomic (a
  crash between the two leaves a change without its event).
- `transaction`: what `claimTask` sends today (`Lifecycle.claim`), through the server's own store
  functions: in one snapshot transaction, the head of the queue (`claimable`), a compare-and-set on its
  version, the event's insert, the query for dependents waiting for the start, the commit.

What it says (docs/BENCHMARKS.md has the figures): the transaction alone, with no request around it,
reaches about a third of the floor, so a single `claimTask` cannot reach the 0.4× target while a claim is a
multi-document transaction; one document carrying its own event stays near the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import EventType, Status
from app.lifecycle.events import event_doc
from app.lifecycle.transitions import version_of
from app.mongo.embedded import EmbeddedMongod
from app.store import states as state_store
from app.store.collections import CLAIM_INDEX
from app.store.events import append_events
from app.store.indexes import ensure_indexes
from app.store.states import CLAIM_ORDER
from app.store.transactions import in_transaction
from bench.writes import claim_seed, cpu_seconds, floor_filter, floor_start, seed_floor

Doc = dict[str, Any]
Shape = Callable[[str], Awaitable[bool]]


def started_event(task_id: str, agent: str, now: dt.datetime) -> Doc:
    """The event a claim writes, as the server builds it."""
    payload = {"from_status": Status.PENDING, "to_status": Status.IN_PROGRESS}
    return event_doc(EventType.STATUS_CHANGED, task_id, None, agent, payload, now)


def shapes(client: AsyncMongoClient[Doc], db_name: str) -> dict[str, Shape]:
    db = client[db_name]
    states = db.get_collection("agent_task_states", write_concern=WriteConcern("majority"))
    events = db.get_collection("task_events", write_concern=WriteConcern("majority"))
    claiming: set[str] = set()  # as the server: claimers here skip the candidates being claimed

    async def floor(agent: str) -> bool:
        now = dt.datetime.now(dt.UTC)
        doc = await states.find_one_and_update(
            floor_filter(agent, now), floor_start(agent, now), sort=CLAIM_ORDER, hint=CLAIM_INDEX.name
        )
        return doc is not None

    async def outbox(agent: str) -> bool:
        now = dt.datetime.now(dt.UTC)
        update = {**floor_start(agent, now), "$push": {"outbox": started_event("?", agent, now)}}
        doc = await states.find_one_and_update(
            floor_filter(agent, now), update, sort=CLAIM_ORDER, hint=CLAIM_INDEX.name
        )
        return doc is not None

    async def separate_insert(agent: str) -> bool:
        now = dt.datetime.now(dt.UTC)
        doc = await states.find_one_and_update(
            floor_filter(agent, now),
            floor_start(agent, now),
            sort=CLAIM_ORDER,
            hint=CLAIM_INDEX.name,
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return False
        await events.insert_one(started_event(doc["_id"], agent, now))
        return True

    async def transaction(agent: str) -> bool:
        now = dt.datetime.now(dt.UTC)
        held: list[str] = []

        async def work(session: AsyncClientSession) -> bool:
            claiming.difference_update(held)
            held.clear()
            while True:  # candidates taken by claimers here while the query ran are read past
                found = await state_store.claimable(
                    db, agent, now, exclude=claiming, limit=1 + len(claiming), session=session
                )
                picks = [state for state in found if state["_id"] not in claiming]
                if picks or not found:
                    break
            if not picks:
                return False
            state = picks[0]
            claiming.add(state["_id"])
            held.append(state["_id"])
            changes = floor_start(agent, now)["$set"]
            updated = await state_store.update_if_version(db, state, changes, version_of(state) + 1, session)
            assert updated is not None
            await append_events(db, session, [started_event(state["_id"], agent, now)])
            await state_store.awaiting(db, [state["_id"]], session)
            return True

        try:
            return await in_transaction(db, work)
        finally:
            claiming.difference_update(held)

    return {"floor": floor, "outbox": outbox, "separate insert": separate_insert, "transaction": transaction}


async def aborted_transactions(client: AsyncMongoClient[Doc]) -> int:
    """mongod's count of aborted transactions (a claim that raced another for the same task is one)."""
    status = await client.admin.command("serverStatus")
    return int(status["transactions"]["totalAborted"])


async def drain(shape: Shape, agent: str, claimers: int) -> int:
    count = 0

    async def claimer() -> None:
        nonlocal count
        while await shape(agent):
            count += 1

    await asyncio.gather(*(claimer() for _ in range(claimers)))
    return count


async def run(claimers: int, tasks: int, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="claim-shapes-"))
    mongod = EmbeddedMongod(workdir / "mongod", port=0)
    uri = mongod.start()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db_name = "claim_shapes"
        await ensure_indexes(client[db_name])
        measured = shapes(client, db_name)
        rates: dict[str, list[float]] = {name: [] for name in measured}
        run_id = uuid.uuid4().hex[:8]
        print(f"{claimers} claimers, {tasks} tasks per run, {rounds} rounds; load {os.getloadavg()}")
        for round_no in range(rounds):
            order = list(measured) if round_no % 2 == 0 else list(reversed(measured))
            for name in order:
                agent, seeded = claim_seed(run_id, f"{name.replace(' ', '-')}-{round_no}", tasks)
                await seed_floor(client[db_name], agent, seeded)
                pid = mongod.pid or 0
                aborted = await aborted_transactions(client)
                own, mongo, start = time.process_time(), cpu_seconds(pid), time.perf_counter()
                count = await drain(measured[name], agent, claimers)
                elapsed = time.perf_counter() - start
                own, mongo = time.process_time() - own, cpu_seconds(pid) - mongo
                aborted = await aborted_transactions(client) - aborted
                rates[name].append(count / elapsed)
                print(
                    f"round {round_no + 1}  {name:16} {count / elapsed:7.0f} claims/s   CPU ms/claim:"
                    f" driver {1000 * own / max(count, 1):.2f}, mongod {1000 * mongo / max(count, 1):.2f}"
                    f"   ({count} claims, {aborted} aborted transactions)",
                    flush=True,
                )
        print(f"\n×floor per round, and the median (load {os.getloadavg()}):")
        for name, values in rates.items():
            ratios = [value / floor for value, floor in zip(values, rates["floor"], strict=True)]
            per_round = "  ".join(f"{r:.2f}" for r in ratios)
            print(f"  {name:16} {per_round}   median ×{statistics.median(ratios):.2f}")
    finally:
        await client.close()
        mongod.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claimers", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.claimers, args.tasks, args.rounds))


if __name__ == "__main__":
    main()
