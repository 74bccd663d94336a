"""Retry-delay benchmark (issue 21): how close to the retry policy's delay a retrying task is claimed again.

    python -m bench.retry_delays [--tasks 100] [--delay 1.0] [--claimers 16] [--burst] [--json]

One embedded mongod and one `agent-tasks serve` process (`bench.writes`'s `Processes`). `--tasks` tasks
of a new agent get `retryPolicy { initialInterval: --delay, jitter: 0 }`; each is claimed and failed
(one after another; with `--burst`, all at once), while `--claimers` concurrent claim loops (5 ms apart
when nothing is claimable) wait for them. The observed delay of each task is measured on the server's
clock: its second claim's `started_at` minus its failure's `last_error.timestamp`. Prints min, median
and max, how many were claimed before their `next_attempt_at` (early: must be 0), and how many came
within max(100 ms, 5 %) of the computed delay. With `--burst` the tasks come due at once, so the figure
is bound by claim throughput, not by the claim gate. No figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from agent_tasks_client import AgentTasksClient, ClaimedTask, RetryPolicy
from bench.writes import Processes

DB_NAME = "bench_retry_delays"


async def measure(url: str, uri: str, tasks: int, delay: float, claimers: int, burst: bool) -> dict[str, Any]:
    agent = f"Retry-{uuid.uuid4().hex[:6]}"
    policy = RetryPolicy(initial_interval=delay, jitter=0)
    async with AgentTasksClient(url, timeout=120) as client:
        ids = [(await client.create_agent_task(agent, retry_policy=policy)).id for _ in range(tasks)]
        claimed = [await client.claim(agent) for _ in ids]
        running: list[ClaimedTask] = [c for c in claimed if c is not None]
        if burst:
            await asyncio.gather(*(c.fail("transient") for c in running))
        else:
            for c in running:
                await c.fail("transient")
        again: set[str] = set()

        async def claim_loop() -> None:
            while len(again) < len(ids):
                task = await client.claim(agent)
                if task is None:
                    await asyncio.sleep(0.005)
                else:
                    again.add(task.id)

        await asyncio.wait_for(asyncio.gather(*(claim_loop() for _ in range(claimers))), 60 + 2 * delay)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        docs = await mongo[DB_NAME].agent_task_states.find({"_id": {"$in": ids}}).to_list()
    finally:
        await mongo.close()
    observed = [(d["started_at"] - d["last_error"]["timestamp"]).total_seconds() for d in docs]
    tolerance = max(0.1, 0.05 * delay)
    return {
        "tasks": tasks,
        "delay": delay,
        "burst": burst,
        "claimers": claimers,
        "min": round(min(observed), 3),
        "median": round(statistics.median(observed), 3),
        "max": round(max(observed), 3),
        "early": sum(o < delay for o in observed),
        "within_tolerance": sum(abs(o - delay) <= tolerance for o in observed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--claimers", type=int, default=16)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-retry-") as workdir:
        processes = Processes(Path(workdir))
        try:
            uri = processes.start_mongod()
            server = processes.start_server({"MONGODB_URI": uri, "MONGODB_DB": DB_NAME})
            result = asyncio.run(measure(server.url, uri, args.tasks, args.delay, args.claimers, args.burst))
        finally:
            processes.stop_all()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"load average {os.getloadavg()[0]:.1f}")
        print(
            f"{result['tasks']} tasks, computed delay {result['delay']:.3f} s"
            f"{' (all failed at once)' if result['burst'] else ''}: observed min {result['min']:.3f},"
            f" median {result['median']:.3f}, max {result['max']:.3f} s; claimed early: {result['early']};"
            f" within max(100 ms, 5 %): {result['within_tolerance']}/{result['tasks']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
