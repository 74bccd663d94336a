"""Worker-loop benchmark: how fast `agent_tasks_client`'s worker drains a queue, by concurrency.

    python -m bench.worker [--tasks 400] [--concurrency 1 8 32] [--handler-ms 0] [--json]

One embedded mongod and one `agent-tasks serve` process, started and stopped here (`bench.writes`'s
`Processes`). For each concurrency N: `--tasks` fresh pending tasks of a new agent are created, then
`client.worker(agent, handler, concurrency=N, lease_seconds=60)` runs until `wait_idle()` (every slot
found nothing to claim). The handler sleeps `--handler-ms` (0: returns at once), so the figure is the
client's and the server's cost per task: one `claimTask` and one `completeTask` (heartbeats never come
due). Prints tasks per second (first claim to idle, including the slots' last empty claims) and the
worker's counters; no figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from agent_tasks_client import AgentTasksClient, ClaimedTask
from bench.writes import Processes


async def drain(url: str, tasks: int, concurrency: int, handler_ms: float) -> dict[str, Any]:
    agent = f"Bench-{uuid.uuid4().hex[:6]}"
    async with AgentTasksClient(url, timeout=120) as client:
        for start in range(0, tasks, 50):
            await asyncio.gather(*(client.create_agent_task(agent) for _ in range(min(50, tasks - start))))

        async def handler(task: ClaimedTask) -> None:
            if handler_ms:
                await asyncio.sleep(handler_ms / 1000)

        began = time.perf_counter()
        async with client.worker(
            agent, handler, concurrency=concurrency, lease_seconds=60, poll_max=0.2
        ) as w:
            await w.wait_idle()
        elapsed = time.perf_counter() - began
    return {
        "concurrency": concurrency,
        "tasks": tasks,
        "seconds": round(elapsed, 2),
        "tasks_per_second": round(tasks / elapsed, 1),
        "completed": w.stats.completed,
        "errors": w.stats.errors,
    }


async def run(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    return [await drain(url, args.tasks, n, args.handler_ms) for n in args.concurrency]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--handler-ms", type=float, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as workdir:
        processes = Processes(Path(workdir))
        try:
            uri = processes.start_mongod()
            server = processes.start_server({"MONGODB_URI": uri, "MONGODB_DB": "bench_worker"})
            results = asyncio.run(run(args, server.url))
        finally:
            processes.stop_all()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"load average {os.getloadavg()[0]:.1f}")
        for r in results:
            print(
                f"concurrency {r['concurrency']:>3}: {r['tasks']} tasks in {r['seconds']} s ="
                f" {r['tasks_per_second']} tasks/s (completed {r['completed']}, errors {r['errors']})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
