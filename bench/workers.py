"""Workers benchmark: the whole-tree GraphQL query from 4 clients against `agent-tasks serve --workers 1`
and `--workers 2`, on the 10,101-task (1×100×100) and the 521-task (1×20×25) trees.

    python -m bench.workers [--rounds 3] [--seconds 10] [--big-seconds 30] [--clients 4] [--keep-alive]

Both servers run side by side on one embedded mongod (the idle one only renews its registration); the
rounds alternate one worker, two workers, tree by tree, so a change in the machine's load falls on both
alike. Each configuration's figure is its median over the rounds of the trees answered per second (those
answered inside the round's window; the ones still running then are awaited, not counted, before the next
configuration starts); the ratio (2 workers ÷ 1) is the target (issue 23: ≥ 1.6× on a 2-core machine).
The big tree gets longer rounds (`--big-seconds`): at ~1.4 s of server CPU per tree, 10 s holds too few.

Beside each figure: the server's CPU per tree and the cores it got (CPU seconds of every process of that
server ÷ the round's wall time). On a machine shared with other work, a second process can only help by
the CPU the scheduler gives it: the cores figure says how much that was.

Each request opens a new connection by default (as a reverse proxy without upstream keep-alive does):
the kernel hands it to a process waiting in `accept`, which a process busy with a tree is not, so the
work spreads by itself. With `--keep-alive` each client keeps one connection, given to one process at
connect time for the whole run (4 connections over 2 processes: 2-2, 3-1 or 4-0 by chance).

The servers use ports 18110-18111 and the mongod 18120 (or `--port-base`). 4 big trees at once on one
process take ~4 times one tree's time each, past the default 10 s `QUERY_TIMEOUT_SECONDS` on a loaded
machine, and on a machine loaded by other work one `find` of 10,000 documents once passed the default 10 s
`MONGODB_TIMEOUT_SECONDS`: throughput is measured here, so the servers get 300 s for both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import urllib.parse
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from pymongo import AsyncMongoClient

from app.demo.documents import synthetic_tree, write_documents
from app.mongo.embedded import EmbeddedMongod
from tests.support.servers import ServerProcess, serve

ROOT = Path(__file__).resolve().parent.parent
#: The trees: (workflow id, sub-tasks, behavior tasks per sub-task).
TREES = (("bench_workers_big", 100, 100), ("bench_workers_small", 20, 25))


class Round(NamedTuple):
    rate: float  # trees answered per second inside the window
    cpu_per_tree: float  # server CPU seconds per tree answered (all its processes)
    cores: float  # server CPU seconds per wall second
    others_per_tree: float  # mongod's and the clients' (this process's) CPU seconds per tree answered


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _family(pid: int) -> list[int]:
    """`pid` and its children (the workers of `--workers N`)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


async def post_once(url: str, payload: bytes) -> tuple[int, bytes]:
    """POST `payload` to `url`/graphql on a connection of its own, closed after the answer: (status, the
    last 4 KB of the body). A few lines over asyncio streams rather than httpx: the clients share the 2
    cores with the servers they measure, and httpx's per-request CPU (it parses headers, buffers and
    decodes the body) came to a tenth of the small tree's server CPU, which the servers then lacked."""
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: %b\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%b"
            % (parts.netloc.encode(), len(payload), payload)
        )
        await writer.drain()
        status_line = await reader.readline()
        tail = b""
        while chunk := await reader.read(1 << 18):
            tail = (tail + chunk)[-4096:]
    finally:
        writer.close()
    return int(status_line.split()[1]), tail


async def run_clients(
    url: str, body: dict[str, Any], clients: int, seconds: float, keep_alive: bool
) -> tuple[float, int]:
    """Trees answered per second inside `seconds` by `clients` clients asking back to back, and how many
    were answered in all (those still running at the end are awaited)."""
    answered = failed = inside = 0
    first_failure = ""
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_keepalive_connections=1)
    payload = json.dumps(body).encode()

    async def one_client() -> None:
        nonlocal answered, failed, first_failure, inside
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
            while time.monotonic() < deadline:
                if keep_alive:
                    response = await http.post("/graphql", content=payload)
                    status, tail = response.status_code, response.content[-4096:]
                else:
                    status, tail = await post_once(url, payload)
                # The body is not parsed (7 MB at 10,101 tasks): errors come after `data`, at its end.
                if status == 200 and b'"errors":' not in tail:
                    answered += 1
                    inside += time.monotonic() <= deadline
                else:
                    failed += 1
                    first_failure = first_failure or f"{status} {tail[-300:]!r}"

    await asyncio.gather(*(one_client() for _ in range(clients)))
    if failed:
        raise RuntimeError(f"{failed} answers were not the tree, the first: {first_failure}")
    return inside / seconds, answered


async def measured(
    server: ServerProcess,
    body: dict[str, Any],
    clients: int,
    seconds: float,
    keep_alive: bool,
    mongod_pid: int,
) -> Round:
    pids = await asyncio.to_thread(_family, server.process.pid)
    others = [mongod_pid, os.getpid()]
    cpu, other_cpu = sum(map(_cpu_seconds, pids)), sum(map(_cpu_seconds, others))
    started = time.monotonic()
    rate, answered = await run_clients(server.url, body, clients, seconds, keep_alive)
    wall = time.monotonic() - started
    used, others_used = sum(map(_cpu_seconds, pids)) - cpu, sum(map(_cpu_seconds, others)) - other_cpu
    return Round(rate, used / max(answered, 1), used / wall, others_used / max(answered, 1))


async def main(args: argparse.Namespace) -> None:
    mongod = EmbeddedMongod(Path(tempfile.mkdtemp(prefix="bench-workers-")), port=args.port_base + 20)
    uri = mongod.start()
    try:
        db_name = f"bench_{uuid.uuid4().hex[:8]}"
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        for workflow, subs, behaviors in TREES:
            await write_documents(client[db_name], synthetic_tree(workflow, subs, behaviors))
        await client.close()
        query = (ROOT / "queries" / "WorkflowTree.graphql").read_text()
        env = {
            "MONGODB_URI": uri,
            "MONGODB_DB": db_name,
            "LOG_LEVEL": "warning",
            "QUERY_TIMEOUT_SECONDS": "300",
            "MONGODB_TIMEOUT_SECONDS": "300",
        }
        mongod_pid = mongod.pid or 0
        with ExitStack() as stack:
            servers = {
                workers: stack.enter_context(
                    serve(env, "--workers", str(workers), port=args.port_base + 10 + workers - 1)
                )
                for workers in (1, 2)
            }
            bodies = {workflow: {"query": query, "variables": {"id": workflow}} for workflow, *_ in TREES}
            # Warm-up: every process of both servers answers each tree once or more.
            for server in servers.values():
                for body in bodies.values():
                    await run_clients(server.url, body, 4, 0.1, False)
            figures: dict[tuple[str, int], list[Round]] = {}
            for round_ in range(args.rounds):
                for workflow, *_ in TREES:
                    order = (1, 2) if round_ % 2 == 0 else (2, 1)
                    seconds = args.big_seconds if workflow == TREES[0][0] else args.seconds
                    for workers in order:
                        figures.setdefault((workflow, workers), []).append(
                            await measured(
                                servers[workers],
                                bodies[workflow],
                                args.clients,
                                seconds,
                                args.keep_alive,
                                mongod_pid,
                            )
                        )
            for server in servers.values():
                server.stop()
        load = [f"{x:.2f}" for x in os.getloadavg()]
        connections = (
            "one keep-alive connection per client" if args.keep_alive else "a new connection per request"
        )
        print(
            f"tree query, {args.clients} clients ({connections}), {args.rounds} alternating rounds of"
            f" {args.big_seconds:.0f} s (big tree) and {args.seconds:.0f} s (small); {os.cpu_count()} cores;"
            f" load average after: {' '.join(load)}"
        )
        for workflow, subs, behaviors in TREES:
            line = f"{1 + subs * (1 + behaviors):>6} tasks"
            medians = {}
            for workers in (1, 2):
                rounds = figures[(workflow, workers)]
                medians[workers] = statistics.median(r.rate for r in rounds)
                line += (
                    f"   {workers} worker{'s' if workers > 1 else ''}: {medians[workers]:.2f} trees/s"
                    f" ({', '.join(f'{r.rate:.2f}' for r in rounds)};"
                    f" CPU {statistics.median(r.cpu_per_tree for r in rounds) * 1000:.0f} ms/tree,"
                    f" {statistics.median(r.cores for r in rounds):.2f} cores;"
                    f" mongod + clients {statistics.median(r.others_per_tree for r in rounds) * 1000:.0f} ms/tree)"
                )
            print(f"{line}   ratio {medians[2] / medians[1]:.2f}× (target ≥ 1.6×)")
    finally:
        mongod.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="each configuration's run per round")
    parser.add_argument("--big-seconds", type=float, default=30.0, help="the same for the 10,101-task tree")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--keep-alive", action="store_true", help="one connection per client for the whole run"
    )
    parser.add_argument("--port-base", type=int, default=18100)
    asyncio.run(main(parser.parse_args()))
