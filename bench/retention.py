"""Retention under write load: does sweeping 10,000 finished workflows raise `reportProgress` p99?

    python -m bench.retention [--workflows 10000] [--clients 8] [--seconds 15] [--json]

One embedded mongod and one `agent-tasks serve` process (127.0.0.1, ports 18300-18399). Seeded first,
straight into MongoDB: `--workflows` finished workflows three days old, each a meta task, a sub-task and a
behavior task with their outputs, states and two events per task (15 documents a workflow). Then
`--clients` agents send `reportProgress` back to back (as `bench/writes.py` does) in alternating windows
of `--seconds`: A without a sweep, B with the retention sweep running (this process, the app's own
`Retention.sweep` over its own client, as a server's sweeper would; paused at the end of each B window
and resumed in the next), A, B, … until every workflow is removed or `--max-windows` B windows ran,
ending with an A. Reported per window:
transitions/s, p50 and p99; then p99 over all B windows ÷ over all A windows (the issue's target:
at most 1.20) and the sweep's rate (workflows and documents per second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import statistics
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient

from app.lifecycle.retention import Retention
from bench.tracing import port_in_range, start_mongod
from bench.writes import Point, Processes, load_average, log, progress_point

Doc = dict[str, Any]
OLD = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)


def workflow_docs(n: int) -> dict[str, list[Doc]]:
    """The documents of finished workflow `n`, by collection."""
    w, s, b = f"ret-{n}", f"ret-{n}-s", f"ret-{n}-b"
    state = {"status": "completed", "workflow_id": w, "updated_at": OLD, "created_at": OLD, "agent_name": "A"}
    events = [
        {"_id": ObjectId(), "seq": ObjectId(), "task_id": t, "workflow_id": w, "type": kind, "timestamp": OLD}
        for t in (w, s, b)
        for kind in ("TASK_CREATED", "TASK_COMPLETED")
    ]
    return {
        "meta_workflow_tasks": [{"_id": w, "sub_task_ids": [s]}],
        "sub_tasks": [{"_id": s, "task_id": w, "behavior_task_ids": [b]}],
        "behavior_tasks": [{"_id": b, "sub_task_id": s}],
        "task_outputs": [{"_id": w}],
        "sub_task_outputs": [{"_id": s}],
        "behavior_task_outputs": [{"_id": b}],
        "agent_task_states": [
            {"_id": w, "task_kind": "meta_workflow", **state},
            {"_id": s, "task_kind": "sub_task", **state},
            {"_id": b, "task_kind": "behavior_task", **state},
        ],
        "task_events": events,
    }


async def seed(mongo: AsyncMongoClient[Doc], db_name: str, workflows: int) -> int:
    db = mongo[db_name]
    total = 0
    for start in range(0, workflows, 1000):
        batch: dict[str, list[Doc]] = {}
        for n in range(start, min(workflows, start + 1000)):
            for name, docs in workflow_docs(n).items():
                batch.setdefault(name, []).extend(docs)
        for name, docs in batch.items():
            await db[name].insert_many(docs, ordered=False)
            total += len(docs)
    return total


async def run(args: argparse.Namespace, procs: Processes) -> Doc:
    out = sys.stderr if args.json else sys.stdout
    load_before = load_average()
    log(f"load average {load_before}; starting mongod …")
    taken: set[int] = set()
    uri = start_mongod(procs, taken)
    run_id = uuid.uuid4().hex[:8]
    db_name = f"bench_retention_{run_id}"
    mongo: AsyncMongoClient[Doc] = AsyncMongoClient(uri, tz_aware=True, appname="bench-retention")
    try:
        log("starting the server (indexes) …")
        port = port_in_range(taken)
        server = procs.start_server({"MONGODB_URI": uri, "MONGODB_DB": db_name}, port=port)
        log(f"seeding {args.workflows} finished workflows …")
        documents = await seed(mongo, db_name, args.workflows)
        retention = Retention(mongo[db_name], lambda: dt.datetime.now(dt.UTC), batch=100)
        sweep: asyncio.Task[Any] | None = None
        swept_seconds = 0.0
        points: list[tuple[str, Point]] = []
        window = 0
        remaining = args.workflows
        while True:
            sweeping = window % 2 == 1
            if sweeping and remaining == 0:
                break
            label = "B sweep" if sweeping else "A no sweep"
            log(f"window {window + 1}: {label} …")
            if sweeping:
                began = asyncio.get_running_loop().time()
                sweep = asyncio.create_task(retention.sweep(86400))
            point = await progress_point(
                [server.url],
                args.clients,
                f"{run_id}-w{window}",
                seconds=args.seconds,
                warmup=0.5,
                mongo=mongo,
                server_pids=[server.process.pid],
                round_=window + 1,
            )
            if sweep is not None:
                if not sweep.done():
                    sweep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweep
                swept_seconds += asyncio.get_running_loop().time() - began
                sweep = None
                remaining = await mongo[db_name]["meta_workflow_tasks"].count_documents(
                    {"_id": {"$regex": "^ret-"}}
                )
            points.append((label, point))
            print(
                f"window {window + 1} {label:>10}: {point.rate:7.1f}/s  p50 {point.p50_ms:6.1f} ms"
                f"  p99 {point.p99_ms:6.1f} ms  errors {sum(v for k, v in point.errors.items() if k != 'examples')}"
                f"  workflows left {remaining}  load {point.load_average}",
                file=out,
                flush=True,
            )
            window += 1
            if window > 2 * args.max_windows:
                break
    finally:
        await mongo.close()
    a = [p for label, p in points if label.startswith("A")]
    b = [p for label, p in points if label.startswith("B")]
    p99_a = statistics.mean(p.p99_ms for p in a)
    p99_b = statistics.mean(p.p99_ms for p in b)
    summary = {
        "workflows": args.workflows,
        "documents": documents,
        "clients": args.clients,
        "p99_ms_no_sweep": p99_a,
        "p99_ms_sweep": p99_b,
        "p99_ratio": p99_b / p99_a,
        "rate_no_sweep": statistics.mean(p.rate for p in a),
        "rate_sweep": statistics.mean(p.rate for p in b),
        "sweep_seconds": swept_seconds,
        "workflows_left": remaining,
        "workflows_removed": args.workflows - remaining,
        "load_average": {"start": load_before, "end": load_average()},
    }
    print(
        f"\np99 with the sweep {p99_b:.1f} ms vs without {p99_a:.1f} ms: x{summary['p99_ratio']:.2f}"
        f" (target <= 1.20); throughput {summary['rate_sweep']:.1f}/s vs {summary['rate_no_sweep']:.1f}/s;"
        f" the sweep removed {args.workflows - remaining} of {args.workflows} workflows (15 documents each) in"
        f" {swept_seconds:.1f} s of B windows ({(args.workflows - remaining) / swept_seconds:.0f} workflows/s);"
        f" load {load_before} -> {load_average()}",
        file=out,
    )
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--max-windows", type=int, default=10, help="B windows at most")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as workdir:
        procs = Processes(Path(workdir))
        try:
            summary = asyncio.run(run(args, procs))
        finally:
            procs.stop_all()
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
