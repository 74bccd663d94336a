"""Write-throughput benchmark: `reportProgress` from N concurrent clients against one and two server
processes, the same transaction in plain PyMongo as the floor, and 16 concurrent `claimTask` claimers.

    python -m bench.writes [--clients 1 4 16 64] [--seconds 15] [--servers 1 2] [--rounds 2]
                           [--claimers 16] [--claim-tasks 2000] [--quick] [--json]

Everything runs on this machine: one embedded mongod (a one-node replica set, fresh data directory, any
free port) and real `agent-tasks serve` processes (uvicorn, 127.0.0.1, any free port), started and
stopped by the benchmark (also on Ctrl-C or SIGTERM). The benchmark talks to the servers only through the
public GraphQL API, so it measures whatever write path the code has when it runs.

**reportProgress run.** For each N in `--clients`, N fresh standalone tasks are created and started
(`createAgentTask` + `startTask`, through the API), one per client. Each client is an independent agent:
its own `httpx.AsyncClient` (so its own connection pool, one keep-alive connection, as separate agent
processes would have) sending `reportProgress` on its own task, back to back, for `--seconds` after a
`--warmup`. With two server processes (same database) the clients are split round-robin between them.
Each server count is measured `--rounds` times per N (default 2), in alternating order (one server, two,
two, one: so neither always runs first, right after a server started or on the smaller database), and
one vs two servers are compared on the means.
Per point:

- transitions/s: successful `reportProgress` answers (`TaskTransitionSuccess`) received inside the
  measured window, divided by its length;
- p50 / p99 / max latency: client-side, send to decoded answer, over every request sent inside the window
  (those still in flight when it closes are awaited, so a slow tail is not cut off);
- errors, counted separately: GraphQL errors (`errors` in the body), error-typed results (any other
  `__typename`, e.g. `ConflictError`), HTTP failures (non-200 status, timeouts, transport errors);
- mongod's `serverStatus` deltas over the window: transactions committed and aborted, and write
  conflicts (WiredTiger's `update conflicts` plus `metrics.operation.writeConflicts`; the latter alone
  misses conflicts inside transactions): aborted ≫ committed means contention;
- CPU milliseconds per transition spent by the server processes, mongod and this benchmark process
  (they all share the machine's cores: read the figures with the load average printed alongside).

**The floor** is the same transaction in plain PyMongo async, run by N concurrent workers sharing one
`AsyncMongoClient` (as one server process shares its client), in a separate database: in one
`with_transaction` (snapshot read concern, majority write concern, primary, as
`app/store/transactions.py` does) read the state document, `find_one_and_update` it with a
compare-and-set on `version` (progress, current step, `updated_at`, version + 1), and insert one event
document with an ObjectId `_id` into a collection with the same secondary indexes as `task_events`. It
has no GraphQL, no HTTP and no event counter: `×floor` (server transitions/s ÷ floor transactions/s at
the same N) is what the server's own work costs.

**claimTask run.** `--claim-tasks` pending tasks (default 2,000) of one agent, with priorities low /
medium / high / urgent drawn at random (fixed seed; created in random priority order), then `--claimers`
concurrent clients (default 16, each with its own `httpx.AsyncClient`) call `claimTask(agentName:)` until
each is answered `NothingToClaim`. Reported:

- claims/s (claims ÷ time from the first request to the last answer) and p50 / p99 / max latency;
- duplicates: a task handed to two claimers (must be 0); unclaimed: tasks never handed out (must be 0);
- priority order, judged by the client's clocks. A claim answered at time r that got priority p is
  *out of order* when some higher-priority task was still unanswered at r (its claim was answered after
  r). That can be legitimate: that task may have been taken by a claim in flight at the same time. It is a
  **violation** only when the higher-priority task's claim was *sent* at or after r (or never): then that
  task was pending during the whole of the claim, which should have taken it. Violations must be 0.
  `NothingToClaim` answered while a task was still pending in the same sense is counted as premature;
- mongod's transactions committed / aborted and write conflicts over the run (aborted = transactions
  retried because claimers raced for the same task).

Reading the figures: the machine is small and shared, so compare figures from the same run (×floor,
one vs two servers, N vs N) rather than across runs, and look at the load average and CPU columns before
concluding anything. `--quick` is a smoke run (a few seconds per point, 200 tasks to claim), not a
measurement. `--json` prints the figures as one JSON document on stdout (the tables go to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReadPreference, ReturnDocument, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern

from app.mongo.embedded import EmbeddedMongod
from tests.servers import ROOT, free_port

Doc = dict[str, Any]

PROGRESS = """
mutation Progress($id: ID!, $percentage: Float!, $step: String) {
  reportProgress(id: $id, percentage: $percentage, currentStep: $step) {
    __typename
    ... on Error { message }
    ... on TaskTransitionSuccess { state { id status progressPercentage version } }
  }
}
"""
CLAIM = """
mutation Claim($agentName: String!) {
  claimTask(agentName: $agentName) {
    __typename
    ... on NothingToClaim { message }
    ... on Error { message }
    ... on TaskTransitionSuccess { state { id priority status version } }
  }
}
"""
PRIORITIES = ("LOW", "MEDIUM", "HIGH", "URGENT")
RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
#: Tasks created per GraphQL document when seeding (each is its own transaction; the server caps aliases).
SEED_BATCH = 20
REQUEST_TIMEOUT = 120.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as `uptime` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0–100) of already sorted values; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# --------------------------------------------------------------------------- processes


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path


class Processes:
    """Every process the benchmark starts, stopped in reverse order by `stop_all` whatever happens.

    Children run in their own session, so a Ctrl-C in the terminal reaches only this process, which then
    stops the servers (SIGTERM, then SIGKILL) before mongod (SIGTERM: a clean shutdown).
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.mongod: EmbeddedMongod | None = None
        self.servers: list[Server] = []

    def start_mongod(self) -> str:
        self.mongod = EmbeddedMongod(self.workdir / "mongod", port=0)
        return self.mongod.start()

    def start_server(self, env: Mapping[str, str], timeout: float = 60, port: int | None = None) -> Server:
        port = port or free_port()
        full_env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")}
        full_env.update({"LOG_LEVEL": "warning", **env})
        log_path = self.workdir / f"server-{len(self.servers) + 1}.log"
        with log_path.open("wb") as out:  # the child keeps its own descriptor: never a full pipe
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(process, f"http://127.0.0.1:{port}", log_path)
        self.servers.append(server)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {process.returncode}: {log_path.read_text(errors='replace')[-2000:]}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    return server
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on {server.url} did not become healthy in {timeout:.0f} s")
            time.sleep(0.1)

    def stop_server(self, server: Server, timeout: float = 15) -> None:
        if server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    server.process.kill()
                server.process.wait()

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            self.stop_server(server)
        if self.mongod is not None:
            self.mongod.stop()


def server_log_summary(servers: Sequence[Server], limit: int = 5) -> list[str]:
    """The distinct warning/error lines the servers logged (tracebacks collapsed to their last line)."""
    seen: Counter[str] = Counter()
    for server in servers:
        with contextlib.suppress(OSError):
            for line in server.log_path.read_text(errors="replace").splitlines():
                text = line.strip()
                if not text or text.startswith(("File ", "Traceback", "^", "~")) or line.startswith("    "):
                    continue
                if any(word in text for word in ("ERROR", "WARNING", "Error", "Exception", "CRITICAL")):
                    seen[text[:200]] += 1
    return [f"{count}× {text}" for text, count in seen.most_common(limit)]


# --------------------------------------------------------------------------- mongod figures


@dataclass
class MongoCounters:
    committed: int
    aborted: int
    write_conflicts: int
    pid: int

    @classmethod
    async def read(cls, client: AsyncMongoClient[Doc]) -> MongoCounters:
        status = await client.admin.command("serverStatus")
        tx = status.get("transactions", {})
        # Conflicts inside multi-document transactions abort them at once and are not counted by
        # metrics.operation.writeConflicts; WiredTiger's own counter sees every one.
        wt_conflicts = status.get("wiredTiger", {}).get("transaction", {}).get("update conflicts", 0)
        wc = status.get("metrics", {}).get("operation", {}).get("writeConflicts", 0) + wt_conflicts
        return cls(
            int(tx.get("totalCommitted", 0)), int(tx.get("totalAborted", 0)), int(wc), int(status["pid"])
        )


@dataclass
class Snapshot:
    """What is read at both ends of a measured window."""

    at: float
    mongo: MongoCounters
    cpu: dict[str, float]

    @classmethod
    async def take(cls, client: AsyncMongoClient[Doc], server_pids: Sequence[int]) -> Snapshot:
        mongo = await MongoCounters.read(client)
        cpu = {
            "servers": sum(cpu_seconds(pid) for pid in server_pids),
            "mongod": cpu_seconds(mongo.pid),
            "bench": time.process_time(),
        }
        return cls(time.monotonic(), mongo, cpu)


@dataclass
class Window:
    committed: int
    aborted: int
    write_conflicts: int
    cpu_seconds: dict[str, float]

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot) -> Window:
        return cls(
            after.mongo.committed - before.mongo.committed,
            after.mongo.aborted - before.mongo.aborted,
            after.mongo.write_conflicts - before.mongo.write_conflicts,
            {k: after.cpu[k] - before.cpu[k] for k in before.cpu},
        )


# --------------------------------------------------------------------------- HTTP


def http_client(url: str) -> httpx.AsyncClient:
    """One agent's client: its own pool holding one keep-alive connection, no proxy from the environment."""
    return httpx.AsyncClient(
        base_url=url,
        timeout=REQUEST_TIMEOUT,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        trust_env=False,
    )


@dataclass
class Outcome:
    """The result of one mutation: the typename of a data answer, or what failed."""

    typename: str | None = None
    data: Doc | None = None
    graphql_error: str | None = None
    http_failure: str | None = None


async def mutate(http: httpx.AsyncClient, query: str, variables: Doc, field_name: str) -> Outcome:
    try:
        response = await http.post("/graphql", json={"query": query, "variables": variables})
    except httpx.HTTPError as exc:
        return Outcome(http_failure=type(exc).__name__)
    if response.status_code != 200:
        return Outcome(http_failure=f"HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        return Outcome(http_failure="invalid JSON")
    if body.get("errors"):
        return Outcome(graphql_error=str(body["errors"][0].get("message", "?"))[:120])
    answer = (body.get("data") or {}).get(field_name)
    if not isinstance(answer, dict):
        return Outcome(graphql_error="no data")
    return Outcome(typename=answer.get("__typename"), data=answer)


@dataclass
class Errors:
    graphql: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    http: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        if outcome.http_failure is not None:
            self.http[outcome.http_failure] += 1
        elif outcome.graphql_error is not None:
            self.graphql[outcome.graphql_error] += 1
        else:
            message = (outcome.data or {}).get("message", "")
            self.results[f"{outcome.typename}: {message}"[:120]] += 1

    def as_json(self) -> Doc:
        return {
            "graphql_errors": sum(self.graphql.values()),
            "error_results": sum(self.results.values()),
            "http_failures": sum(self.http.values()),
            "examples": [
                *self.graphql.most_common(3),
                *self.results.most_common(3),
                *self.http.most_common(3),
            ],
        }


async def create_tasks(url: str, tasks: Sequence[Doc], *, start: bool, concurrency: int = 4) -> None:
    """Create standalone tasks through the API (and start them), SEED_BATCH per request."""
    batches = [list(tasks[i : i + SEED_BATCH]) for i in range(0, len(tasks), SEED_BATCH)]
    queue: asyncio.Queue[list[Doc]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def seeder() -> None:
        async with http_client(url) as http:
            while not queue.empty():
                batch = queue.get_nowait()
                params = ", ".join(f"$t{i}: CreateAgentTaskInput!" for i in range(len(batch)))
                parts = []
                for i, task in enumerate(batch):
                    parts.append(
                        f"c{i}: createAgentTask(input: $t{i}) {{ __typename ... on Error {{ message }} }}"
                    )
                    if start:
                        parts.append(
                            f'''s{i}: startTask(id: "{task["id"]}") {{ __typename ... on Error {{ message }} }}'''
                        )
                query = f"mutation Seed({params}) {{ {' '.join(parts)} }}"
                variables = {f"t{i}": task for i, task in enumerate(batch)}
                response = await http.post("/graphql", json={"query": query, "variables": variables})
                body = response.json()
                if body.get("errors"):
                    raise RuntimeError(f"seeding failed: {body['errors'][0]}")
                refused = {
                    k: v
                    for k, v in body["data"].items()
                    if v["__typename"] not in ("AgentTaskSuccess", "TaskTransitionSuccess")
                }
                if refused:
                    raise RuntimeError(f"seeding refused: {next(iter(refused.values()))}")

    await asyncio.gather(*(seeder() for _ in range(concurrency)))


# --------------------------------------------------------------------------- the reportProgress run


@dataclass
class Point:
    """One measured point of the reportProgress run (or of the floor)."""

    target: str  # "floor", "1 server", "2 servers"
    clients: int
    seconds: float
    ok: int = 0
    rate: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    requests: int = 0
    errors: Doc = field(default_factory=dict)
    committed: int = 0
    aborted: int = 0
    write_conflicts: int = 0
    cpu_ms_per_op: dict[str, float] = field(default_factory=dict)
    vs_floor: float | None = None
    load_average: str = ""
    #: Which measurement of this target at this N (`--rounds`), in the order they ran.
    round: int = 0


Op = Callable[[int], Awaitable[Outcome]]


async def measure(
    label: str,
    workers: Sequence[Op],
    *,
    seconds: float,
    warmup: float,
    mongo: AsyncMongoClient[Doc],
    server_pids: Sequence[int],
) -> Point:
    """Run every worker's op back to back; measure the window [warmup, warmup + seconds]."""
    begin = time.monotonic()
    window_start = begin + warmup
    window_end = window_start + seconds
    latencies: list[float] = []
    errors = Errors()
    ok_in_window = 0
    requests = 0

    async def loop(op: Op) -> None:
        nonlocal ok_in_window, requests
        step = 0
        while True:
            sent = time.monotonic()
            if sent >= window_end:
                return
            outcome = await op(step)
            answered = time.monotonic()
            step += 1
            success = outcome.typename == "TaskTransitionSuccess"
            if success and window_start <= answered <= window_end:
                ok_in_window += 1
            if sent >= window_start:
                requests += 1
                latencies.append(answered - sent)
                if not success:
                    errors.add(outcome)

    async def monitor() -> tuple[Snapshot, Snapshot]:
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        before = await Snapshot.take(mongo, server_pids)
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        after = await Snapshot.take(mongo, server_pids)
        return before, after

    watcher = asyncio.create_task(monitor())
    await asyncio.gather(*(loop(op) for op in workers))
    before, after = await watcher
    window = Window.between(before, after)
    ordered = sorted(latencies)
    return Point(
        target=label,
        clients=len(workers),
        seconds=seconds,
        ok=ok_in_window,
        rate=ok_in_window / seconds,
        p50_ms=percentile(ordered, 50) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] * 1000) if ordered else math.nan,
        requests=requests,
        errors=errors.as_json(),
        committed=window.committed,
        aborted=window.aborted,
        write_conflicts=window.write_conflicts,
        cpu_ms_per_op={
            k: (v * 1000 / ok_in_window if ok_in_window else math.nan) for k, v in window.cpu_seconds.items()
        },
        load_average=load_average(),
    )


async def progress_point(
    urls: Sequence[str],
    n: int,
    run_id: str,
    *,
    seconds: float,
    warmup: float,
    mongo: AsyncMongoClient[Doc],
    server_pids: Sequence[int],
    round_: int = 1,
) -> Point:
    """N clients, each with its own started task and its own HTTP client, split round-robin over `urls`."""
    label = f"{len(urls)} server" + ("s" if len(urls) > 1 else "")
    ids = [f"progress-{run_id}-{len(urls)}s-{n}c-r{round_}-{i}" for i in range(n)]
    tasks = [
        {"id": task_id, "agentName": f"bench-progress-{i}", "name": task_id} for i, task_id in enumerate(ids)
    ]
    await create_tasks(urls[0], tasks, start=True)
    clients = [http_client(urls[i % len(urls)]) for i in range(n)]
    try:

        def op_for(http: httpx.AsyncClient, task_id: str) -> Op:
            async def op(step: int) -> Outcome:
                variables = {"id": task_id, "percentage": step % 101, "step": f"step {step}"}
                return await mutate(http, PROGRESS, variables, "reportProgress")

            return op

        return await measure(
            label,
            [op_for(http, task_id) for http, task_id in zip(clients, ids, strict=True)],
            seconds=seconds,
            warmup=warmup,
            mongo=mongo,
            server_pids=server_pids,
        )
    finally:
        for http in clients:
            await http.aclose()


async def floor_point(
    mongo: AsyncMongoClient[Doc], db_name: str, n: int, run_id: str, *, seconds: float, warmup: float
) -> Point:
    """The same transaction in plain PyMongo: read the state, compare-and-set it, insert one event."""
    db: AsyncDatabase[Doc] = mongo[db_name]
    states = db["agent_task_states"]
    events = db["task_events"]
    now = dt.datetime.now(dt.UTC)
    ids = [f"floor-{run_id}-{n}c-{i}" for i in range(n)]
    await states.insert_many(
        [
            {
                "_id": task_id,
                "agent_name": f"bench-progress-{i}",
                "name": task_id,
                "status": "in_progress",
                "priority": "medium",
                "priority_rank": 1,
                "progress_percentage": 0,
                "attempts": 1,
                "max_attempts": 3,
                "input_parameters": {},
                "output_references": {},
                "dependencies": [],
                "task_kind": "standalone",
                "created_at": now,
                "updated_at": now,
                "started_at": now,
                "version": 2,
            }
            for i, task_id in enumerate(ids)
        ]
    )

    def op_for(task_id: str) -> Op:
        async def op(step: int) -> Outcome:
            async def work(session: AsyncClientSession) -> None:
                state = await states.find_one({"_id": task_id}, session=session)
                assert state is not None
                now = dt.datetime.now(dt.UTC)
                updated = await states.find_one_and_update(
                    {"_id": task_id, "version": state["version"]},
                    {
                        "$set": {
                            "progress_percentage": step % 101,
                            "current_step": f"step {step}",
                            "updated_at": now,
                            "version": state["version"] + 1,
                        }
                    },
                    session=session,
                    return_document=ReturnDocument.AFTER,
                )
                assert updated is not None
                await events.insert_one(
                    {
                        "_id": ObjectId(),
                        "type": "TASK_PROGRESS",
                        "task_id": task_id,
                        "workflow_id": None,
                        "agent_id": updated["agent_name"],
                        "timestamp": now,
                        "payload": {
                            "task_id": task_id,
                            "status": "in_progress",
                            "progress": (step % 101) / 100,
                            "details": f"step {step}",
                        },
                    },
                    session=session,
                )

            try:
                async with mongo.start_session() as session:
                    await session.with_transaction(
                        work,
                        read_concern=ReadConcern("snapshot"),
                        write_concern=WriteConcern("majority"),
                        read_preference=ReadPreference.PRIMARY,
                    )
            except Exception as exc:  # counted, like an HTTP failure of the server runs
                return Outcome(http_failure=f"{type(exc).__name__}: {str(exc)[:80]}")
            return Outcome(typename="TaskTransitionSuccess")

        return op

    return await measure(
        "floor",
        [op_for(task_id) for task_id in ids],
        seconds=seconds,
        warmup=warmup,
        mongo=mongo,
        server_pids=[],
    )


async def prepare_floor_db(mongo: AsyncMongoClient[Doc], db_name: str) -> None:
    """The floor's collections, with today's secondary indexes of `agent_task_states` and `task_events`."""
    db: AsyncDatabase[Doc] = mongo[db_name]
    for name in ("agent_task_states", "task_events"):
        await db.create_collection(name)
    states = db["agent_task_states"]
    for keys in (
        [("agent_name", ASCENDING)],
        [("status", ASCENDING)],
        [("created_at", ASCENDING)],
        [("triggering_event_id", ASCENDING)],
        [("parent_task_id", ASCENDING)],
        [("dependencies.task_id", ASCENDING)],
        [("expires_at", ASCENDING)],
        [
            ("agent_name", ASCENDING),
            ("status", ASCENDING),
            ("priority_rank", DESCENDING),
            ("created_at", ASCENDING),
        ],
        [("agent_name", ASCENDING), ("created_at", ASCENDING)],
    ):
        await states.create_index(keys)
    for key in ("task_id", "workflow_id", "agent_id"):
        await db["task_events"].create_index([(key, ASCENDING), ("_id", ASCENDING)])


# --------------------------------------------------------------------------- the claimTask run


@dataclass
class Claim:
    task_id: str
    priority: str
    sent: float
    answered: float


@dataclass
class ClaimRun:
    servers: int
    claimers: int
    tasks: int
    claims: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    duplicates: int = 0
    unclaimed: int = 0
    foreign: int = 0
    wrong_priority: int = 0
    out_of_order: int = 0
    violations: int = 0
    premature_nothing: int = 0
    errors: Doc = field(default_factory=dict)
    committed: int = 0
    aborted: int = 0
    write_conflicts: int = 0
    cpu_ms_per_op: dict[str, float] = field(default_factory=dict)
    seed_seconds: float = 0.0
    load_average: str = ""


def priority_check(
    seeded: Mapping[str, str], claims: Sequence[Claim], nothing_at: Sequence[float]
) -> tuple[int, int, int]:
    """(out of order, violations, premature NothingToClaim) — see the module docstring.

    For each priority level, the latest time a claim of one of its tasks was sent and answered (infinity
    while one of them was never claimed); a claim of priority p is out of order when a higher level's
    latest answer came after its own answer, a violation when a higher level's latest *send* did.
    """
    inf = math.inf
    first_claim: dict[str, Claim] = {}
    for claim in sorted(claims, key=lambda c: c.answered):
        first_claim.setdefault(claim.task_id, claim)
    latest_sent = dict.fromkeys(PRIORITIES, -inf)
    latest_answered = dict.fromkeys(PRIORITIES, -inf)
    for task_id, priority in seeded.items():
        first = first_claim.get(task_id)
        sent, answered = (first.sent, first.answered) if first else (inf, inf)
        latest_sent[priority] = max(latest_sent[priority], sent)
        latest_answered[priority] = max(latest_answered[priority], answered)
    out_of_order = violations = 0
    for claim in claims:
        higher = [p for p in PRIORITIES if RANK[p] > RANK.get(claim.priority, -1)]
        if any(latest_answered[p] > claim.answered for p in higher):
            out_of_order += 1
        if any(latest_sent[p] >= claim.answered for p in higher):
            violations += 1
    premature = sum(1 for at in nothing_at if any(latest_sent[p] >= at for p in PRIORITIES))
    return out_of_order, violations, premature


async def claim_run(
    urls: Sequence[str],
    run_id: str,
    *,
    tasks: int,
    claimers: int,
    mongo: AsyncMongoClient[Doc],
    server_pids: Sequence[int],
    give_up_after: float,
) -> ClaimRun:
    agent = f"bench-claims-{run_id}-{len(urls)}s"
    rng = random.Random(9)
    seeded = {f"claim-{run_id}-{len(urls)}s-{i}": rng.choice(PRIORITIES) for i in range(tasks)}
    log(f"  seeding {tasks} pending tasks of {agent} …")
    seed_start = time.monotonic()
    await create_tasks(
        urls[0],
        [{"id": k, "agentName": agent, "priority": p, "name": k} for k, p in seeded.items()],
        start=False,
    )
    result = ClaimRun(servers=len(urls), claimers=claimers, tasks=tasks)
    result.seed_seconds = time.monotonic() - seed_start
    claims: list[Claim] = []
    nothing_at: list[float] = []
    latencies: list[float] = []
    errors = Errors()
    deadline = time.monotonic() + give_up_after

    async def claimer(url: str) -> None:
        async with http_client(url) as http:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                outcome = await mutate(http, CLAIM, {"agentName": agent}, "claimTask")
                answered = time.monotonic()
                latencies.append(answered - sent)
                if outcome.typename == "TaskTransitionSuccess":
                    state = (outcome.data or {})["state"]
                    claims.append(Claim(state["id"], state["priority"], sent, answered))
                elif outcome.typename == "NothingToClaim":
                    nothing_at.append(answered)
                    return
                else:
                    errors.add(outcome)

    before = await Snapshot.take(mongo, server_pids)
    await asyncio.gather(*(claimer(urls[i % len(urls)]) for i in range(claimers)))
    after = await Snapshot.take(mongo, server_pids)
    window = Window.between(before, after)
    ordered = sorted(latencies)
    claimed = [c.task_id for c in claims]
    result.claims = len(claims)
    result.seconds = after.at - before.at
    result.rate = len(claims) / result.seconds if result.seconds else math.nan
    result.p50_ms = percentile(ordered, 50) * 1000
    result.p99_ms = percentile(ordered, 99) * 1000
    result.max_ms = ordered[-1] * 1000 if ordered else math.nan
    result.duplicates = len(claimed) - len(set(claimed))
    result.unclaimed = len(set(seeded) - set(claimed))
    result.foreign = len(set(claimed) - set(seeded))
    result.wrong_priority = sum(1 for c in claims if c.task_id in seeded and seeded[c.task_id] != c.priority)
    result.out_of_order, result.violations, result.premature_nothing = priority_check(
        seeded, claims, nothing_at
    )
    result.errors = errors.as_json()
    result.committed, result.aborted = window.committed, window.aborted
    result.write_conflicts = window.write_conflicts
    result.cpu_ms_per_op = {
        k: (v * 1000 / len(claims) if claims else math.nan) for k, v in window.cpu_seconds.items()
    }
    result.load_average = load_average()
    return result


# --------------------------------------------------------------------------- output


def fmt(value: float, digits: int = 0) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def print_progress_table(points: Sequence[Point], seconds: float, warmup: float, out: TextIO) -> None:
    print(
        f"\nreportProgress — {seconds:g} s per point after {warmup:g} s of warm-up; "
        "each client: its own httpx.AsyncClient (one keep-alive connection) and its own task;\n"
        "commit/abort/w.confl: mongod's counters over the window; load: 1/5/15-min load average at its end",
        file=out,
    )
    header = (
        f"{'clients':>7}  {'target':<9} {'rd':>2} {'trans/s':>8} {'×floor':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'gql err':>7} {'err res':>7} {'http':>5} {'commit':>7} {'abort':>7} "
        f"{'w.confl':>8} {'cpu ms/op srv+mongod+bench':>27}  load"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for p in points:
        cpu = p.cpu_ms_per_op
        cpu_text = f"{fmt(cpu.get('servers', math.nan), 1)}+{fmt(cpu.get('mongod', math.nan), 1)}+{fmt(cpu.get('bench', math.nan), 1)}"
        print(
            f"{p.clients:>7}  {p.target:<9} {p.round or '':>2} {fmt(p.rate, 1):>8} {fmt(p.vs_floor if p.vs_floor is not None else math.nan, 2):>6} "
            f"{fmt(p.p50_ms, 1):>8} {fmt(p.p99_ms, 1):>8} {fmt(p.max_ms, 0):>8} "
            f"{p.errors['graphql_errors']:>7} {p.errors['error_results']:>7} {p.errors['http_failures']:>5} "
            f"{p.committed:>7} {p.aborted:>7} {p.write_conflicts:>8} {cpu_text:>27}  {p.load_average}",
            file=out,
        )
    examples = [(p, e) for p in points for e in p.errors["examples"]]
    for p, (text, count) in examples[:10]:
        print(f"  error at {p.clients} clients, {p.target}: {count}× {text}", file=out)


def ratios(points: Sequence[Point]) -> list[Doc]:
    """Per N, each server count's mean transitions/s over its rounds, each ÷ the one-server mean, and
    how precise that ratio is: ± 1.96 standard errors of the difference of the means (Welch), ÷ the
    one-server mean. A ratio whose interval holds 1 is a difference this run cannot tell from noise."""
    by_n: dict[int, dict[str, list[float]]] = {}
    for p in points:
        if p.target != "floor":
            by_n.setdefault(p.clients, {}).setdefault(p.target, []).append(p.rate)
    rows: list[Doc] = []
    for n, targets in sorted(by_n.items()):
        means = {target: statistics.fmean(rates) for target, rates in targets.items()}
        base_rates = targets.get("1 server", [])
        base = means.get("1 server")
        margins: dict[str, float] = {}
        for target, rates in targets.items():
            if base and len(rates) > 1 and len(base_rates) > 1:
                error = math.sqrt(
                    statistics.variance(rates) / len(rates)
                    + statistics.variance(base_rates) / len(base_rates)
                )
                margins[target] = 1.96 * error / base
        rows.append(
            {
                "clients": n,
                "mean_rate": means,
                "vs_one_server": {t: m / base for t, m in means.items()} if base else {},
                "margin_95": margins,
                "rounds": {t: len(rates) for t, rates in targets.items()},
            }
        )
    return rows


def print_ratios(rows: Sequence[Doc], out: TextIO) -> None:
    if not any(len(r["mean_rate"]) > 1 for r in rows):
        return
    print(
        "\nserver counts compared (mean transitions/s over the rounds, ÷ one server's mean, ± its 95 % margin):",
        file=out,
    )
    for r in rows:
        parts = [
            f"{t} {fmt(r['mean_rate'][t], 1)}/s ×{fmt(r['vs_one_server'].get(t, math.nan), 3)}"
            + (f" ±{r['margin_95'][t]:.3f}" if t != "1 server" and t in r["margin_95"] else "")
            for t in r["mean_rate"]
        ]
        print(f"  {r['clients']:>3} clients   " + "   ".join(parts), file=out)


def print_claim_table(runs: Sequence[ClaimRun], out: TextIO) -> None:
    for r in runs:
        server_word = "server" if r.servers == 1 else "servers"
        print(
            f"\nclaimTask — {r.claimers} claimers, {r.tasks} pending tasks of one agent (mixed priorities), "
            f"{r.servers} {server_word} (seeded in {r.seed_seconds:.1f} s)",
            file=out,
        )
        print(f"  claims             {r.claims} in {r.seconds:.1f} s = {r.rate:.1f} claims/s", file=out)
        print(
            f"  latency            p50 {fmt(r.p50_ms, 1)} ms   p99 {fmt(r.p99_ms, 1)} ms   max {fmt(r.max_ms, 0)} ms",
            file=out,
        )
        print(
            f"  duplicates         {r.duplicates}   unclaimed {r.unclaimed}   foreign {r.foreign}   "
            f"priority mismatch {r.wrong_priority}",
            file=out,
        )
        print(
            f"  priority order     {r.violations} violations beyond in-flight claims "
            f"({r.out_of_order} out of order incl. concurrent claims); premature NothingToClaim {r.premature_nothing}",
            file=out,
        )
        print(
            f"  errors             {r.errors['graphql_errors']} GraphQL, {r.errors['error_results']} error results, "
            f"{r.errors['http_failures']} HTTP failures",
            file=out,
        )
        for text, count in r.errors["examples"][:5]:
            print(f"                     {count}× {text}", file=out)
        print(
            f"  mongod             {r.committed} transactions committed, {r.aborted} aborted, "
            f"{r.write_conflicts} write conflicts",
            file=out,
        )
        cpu = r.cpu_ms_per_op
        print(
            f"  cpu ms per claim   servers {fmt(cpu.get('servers', math.nan), 1)}, mongod "
            f"{fmt(cpu.get('mongod', math.nan), 1)}, bench {fmt(cpu.get('bench', math.nan), 1)}   load {r.load_average}",
            file=out,
        )


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, procs: Processes) -> Doc:
    out = sys.stderr if args.json else sys.stdout
    load_before = load_average()
    log(f"load average {load_before}; starting mongod …")
    uri = procs.start_mongod()
    run_id = uuid.uuid4().hex[:8]
    db_name = f"bench_writes_{run_id}"
    floor_db = f"bench_floor_{run_id}"
    env = {"MONGODB_URI": uri, "MONGODB_DB": db_name}
    mongo: AsyncMongoClient[Doc] = AsyncMongoClient(uri, tz_aware=True, appname="bench-writes")
    points: list[Point] = []
    claim_runs: list[ClaimRun] = []
    try:
        await prepare_floor_db(mongo, floor_db)
        servers: list[Server] = []  # running now
        started: list[Server] = []  # every one started, for the log summary

        def run_servers(count: int) -> tuple[list[str], list[int]]:
            """Exactly `count` servers running (the first ones stay up; extras are stopped, so an idle
            one never weighs on a point that does not use it)."""
            while len(servers) > count:
                procs.stop_server(servers.pop())
            while len(servers) < count:
                log(f"starting server {len(servers) + 1} …")
                servers.append(procs.start_server(env))
                started.append(servers[-1])
            return [s.url for s in servers], [s.process.pid for s in servers]

        # Interleaved: for each N, the floor and then each server count back to back, so one vs two
        # servers are compared on the same database size and machine state (not two ends of the run).
        # With several rounds the order alternates (1, 2, 2, 1, …: an ABBA design), so neither count
        # always runs first, on the smaller database or right after a server started.
        for n in [] if args.no_progress else args.clients:
            floor_rate: float | None = None
            if not args.no_floor:
                log(f"floor, {n} workers …")
                floor = await floor_point(
                    mongo, floor_db, n, run_id, seconds=args.seconds, warmup=args.warmup
                )
                floor_rate = floor.rate
                points.append(floor)
            for round_ in range(args.rounds):
                counts = sorted(set(args.servers), reverse=round_ % 2 == 1)
                for count in counts:
                    urls, pids = run_servers(count)
                    log(f"reportProgress, {n} clients, {count} server(s), round {round_ + 1} …")
                    point = await progress_point(
                        urls,
                        n,
                        run_id,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        mongo=mongo,
                        server_pids=pids,
                        round_=round_ + 1,
                    )
                    point.round = round_ + 1
                    if floor_rate:
                        point.vs_floor = point.rate / floor_rate
                    points.append(point)
        for count in [] if args.no_claims else sorted(set(args.claim_servers)):
            urls, pids = run_servers(count)
            log(f"claimTask, {args.claimers} claimers, {count} server(s) …")
            claim_runs.append(
                await claim_run(
                    urls,
                    run_id,
                    tasks=args.claim_tasks,
                    claimers=args.claimers,
                    mongo=mongo,
                    server_pids=pids,
                    give_up_after=args.claim_timeout,
                )
            )
        log_lines = server_log_summary(started)
    finally:
        await mongo.close()
    points.sort(key=lambda p: (p.clients, p.target != "floor", p.target, p.round))
    server_ratios = ratios(points)
    if points:
        print_progress_table(points, args.seconds, args.warmup, out)
        print_ratios(server_ratios, out)
    if claim_runs:
        print_claim_table(claim_runs, out)
    print(
        f"\nload average: {load_before} at start, {load_average()} at end ({os.cpu_count()} cores)", file=out
    )
    if log_lines:
        print("server log (warnings/errors, most frequent first):", file=out)
        for line in log_lines:
            print(f"  {line}", file=out)
    return {
        "started": dt.datetime.now(dt.UTC).isoformat(),
        "cores": os.cpu_count(),
        "load_average": {"start": load_before, "end": load_average()},
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "report_progress": [asdict(p) for p in points],
        "server_ratios": server_ratios,
        "claims": [asdict(r) for r in claim_runs],
        "server_log": log_lines,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", help="concurrent clients per point (default 1 4 16 64; quick: 1 4)"
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per point (default 15; quick: 3)")
    parser.add_argument(
        "--warmup", type=float, help="unmeasured seconds before each point (default 2; quick: 0.5)"
    )
    parser.add_argument(
        "--servers", type=int, nargs="+", default=[1, 2], help="server process counts for reportProgress"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="measurements of each server count per N, in alternating order (1 2 2 1 …; default 2)",
    )
    parser.add_argument("--claimers", type=int, default=16)
    parser.add_argument("--claim-tasks", type=int, help="pending tasks to claim (default 2000; quick: 200)")
    parser.add_argument(
        "--claim-servers", type=int, nargs="+", default=[1], help="server process counts for claimTask"
    )
    parser.add_argument("--claim-timeout", type=float, default=600.0, help="give up claiming after this long")
    parser.add_argument("--no-floor", action="store_true", help="skip the plain-PyMongo floor")
    parser.add_argument("--no-progress", action="store_true", help="skip the reportProgress run")
    parser.add_argument("--no-claims", action="store_true", help="skip the claimTask run")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 and 4 clients, 3 s, 200 tasks to claim"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (mongod data, server logs)"
    )
    args = parser.parse_args(argv)
    defaults = {"clients": [1, 4], "seconds": 3.0, "warmup": 0.5, "claim_tasks": 200} if args.quick else {}
    defaults = {"clients": [1, 4, 16, 64], "seconds": 15.0, "warmup": 2.0, "claim_tasks": 2000, **defaults}
    for name, value in defaults.items():  # explicit flags win over --quick
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min([*args.clients, *args.servers, *args.claim_servers, args.claimers, args.rounds]) < 1:
        parser.error("client, server and claimer counts must be at least 1")
    return args


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does, so the processes are still stopped."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    procs = Processes(workdir)
    try:
        with terminate_on_sigterm():
            figures = asyncio.run(run(args, procs))
    except KeyboardInterrupt:
        log("interrupted; stopping the servers and mongod …")
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
