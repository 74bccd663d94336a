"""Write-throughput benchmark: `reportProgress` from N concurrent clients against one and two server
processes next to the same transaction in plain PyMongo (the floor), and concurrent claimers draining a
queue with `claimTask`, with `claimTasks` batches and with a bare PyMongo `find_one_and_update` (the claim
floor), in alternating rounds.

    python -m bench.writes [--clients 1 4 16 64] [--seconds 15] [--servers 1 2] [--rounds 2]
                           [--claimers 16] [--claim-tasks 2000] [--claim-batch 10] [--claim-rounds 3]
                           [--quick] [--no-progress] [--no-claims] [--json]

Everything runs on this machine: one embedded mongod (a one-node replica set, fresh data directory, any
free port) and real `agent-tasks serve` processes (uvicorn, 127.0.0.1, any free port), started and
stopped by the benchmark (also on Ctrl-C or SIGTERM). The benchmark talks to the servers only through the
public GraphQL API, so it measures whatever write path the code has when it runs.

**reportProgress run.** For each N in `--clients`, `--rounds` rounds (default 2); each round measures the
floor and each server count once, in alternating order (round 1: floor, one server, two; round 2: two,
one, floor; an ABBA design, so none always runs first, right after a server started or on the smaller
database). Each server point's `×floor` is its transitions/s ÷ the floor's of the *same round*; the ratio
table shows it per round and the median. For a server point, N fresh standalone tasks are created and
started (`createAgentTask` + `startTask`, through the API), one per client. Each client is an independent
agent: its own `httpx.AsyncClient` (so its own connection pool, one keep-alive connection, as separate
agent processes would have) sending `reportProgress` on its own task, back to back, for `--seconds` after
a `--warmup`. With two server processes (same database) the clients are split round-robin between them;
one vs two servers are also compared on the means over the rounds.
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
  (they all share the machine's cores: read the figures with the load average printed alongside). A
  floor point runs with the lowest server count started and idle (as every floor point does, so all
  rounds see the same machine): its server CPU is that idle server's.

**The floor** is the same transaction in plain PyMongo async, run by N concurrent workers sharing one
`AsyncMongoClient` (as one server process shares its client), in a separate database with the server's
own collections and indexes (`app.store.indexes.ensure_indexes`): in one `with_transaction` (snapshot read
concern, majority write concern, primary, as `app/store/transactions.py` does) read the state document,
`find_one_and_update` it with a compare-and-set on `version` (progress, current step, `updated_at`,
version + 1), and insert one event document with an ObjectId `_id` into `task_events`. It has no GraphQL,
no HTTP and no event counter: `×floor` is what the server's own work costs.

**Claims.** `--claim-rounds` rounds (default 3), each with three runs in alternating order (floor,
claimTask, claimTasks; then claimTasks, claimTask, floor; …). Every run seeds `--claim-tasks` fresh
pending tasks (default 2,000) of an agent of its own (so runs never see each other's tasks), with
priorities low / medium / high / urgent drawn at random (fixed seed, the same sequence every run; created
in that order, so ages and priorities are mixed), then `--claimers` concurrent claimers (default 16) drain
them until each is told there is nothing left:

- **floor**: bare PyMongo claimers sharing one `AsyncMongoClient`, each claim ONE `find_one_and_update`
  on the floor database (tasks written with the server's own document constructor, `new_state_doc`) with
  the filter of the server's claim query (`app.store.states.claimable`: the agent, pending or retrying,
  its claim gate and expiry), sorted by priority rank then age on the claim index (`CLAIM_INDEX`, named),
  setting `in_progress`, `started_at`, the lease (holder, expiry at the server's default lease), version
  and attempts + 1, with write concern majority as the server's writes; `None` means nothing left;
- **claimTask**: one `claimTask(agentName:)` per request, each claimer its own `httpx.AsyncClient`,
  until answered `NothingToClaim`;
- **claimTasks**: `claimTasks(agentName:, max: --claim-batch)` (default 10) per request, until a claimer
  gets an empty `claimed`. Skipped, with a message, when the server has no such field.
  `--claim-batch 0` skips it.

Reported per run:

- claims/s (claims ÷ time from the first request to the last answer), p50 / p99 latency per request and,
  for batches, per claim (a request's latency ÷ the claims it answered, once per claim);
- duplicates: a task handed out twice (must be 0); unclaimed: tasks never handed out (must be 0);
- priority order, judged by the client's clocks. A claim answered at time r that got priority p is
  *out of order* when some higher-priority task was still unanswered at r (its claim was answered after
  r). That can be legitimate: that task may have been taken by a claim in flight at the same time. It is a
  **violation** only when the higher-priority task's claim was *sent* at or after r (or never): then that
  task was pending during the whole of the claim, which should have taken it. Violations must be 0.
  Nothing-to-claim answered while a task was still pending in the same sense is counted as premature;
- mongod's transactions committed / aborted and write conflicts over the run (aborted = transactions
  retried because claimers raced for the same task), and CPU ms per claim of the servers, mongod and
  this process;
- `×floor`: claims/s ÷ the floor's claims/s of the same round, per round and the median over rounds.

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
from pymongo import AsyncMongoClient, ReadPreference, ReturnDocument, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern

from app.lifecycle.documents import new_state_doc
from app.mongo.embedded import EmbeddedMongod
from app.settings import Settings
from app.store.collections import CLAIM_INDEX
from app.store.indexes import ensure_indexes
from app.store.states import CLAIM_ORDER
from tests.support.servers import ROOT, free_port

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
CLAIM_BATCH = """
mutation ClaimBatch($agentName: String!, $max: Int!) {
  claimTasks(agentName: $agentName, max: $max) {
    __typename
    ... on Error { message }
    ... on ClaimTasksSuccess { reason claimed { state { id priority status version } } }
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
    mongo: AsyncMongoClient[Doc],
    db_name: str,
    n: int,
    run_id: str,
    *,
    seconds: float,
    warmup: float,
    round_: int = 1,
    server_pids: Sequence[int] = (),
) -> Point:
    """The same transaction in plain PyMongo: read the state, compare-and-set it, insert one event.
    `server_pids`: the idle servers running meanwhile, whose CPU is reported beside the floor's."""
    db: AsyncDatabase[Doc] = mongo[db_name]
    states = db["agent_task_states"]
    events = db["task_events"]
    now = dt.datetime.now(dt.UTC)
    ids = [f"floor-{run_id}-{n}c-r{round_}-{i}" for i in range(n)]
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

    point = await measure(
        "floor",
        [op_for(task_id) for task_id in ids],
        seconds=seconds,
        warmup=warmup,
        mongo=mongo,
        server_pids=server_pids,
    )
    point.round = round_
    return point


async def prepare_floor_db(mongo: AsyncMongoClient[Doc], db_name: str) -> None:
    """The floor's database: the server's own collections and secondary indexes (the claim index
    included), created by the code the server runs at start-up, so floor writes maintain the same indexes."""
    await ensure_indexes(mongo[db_name])


# --------------------------------------------------------------------------- the claim runs

FLOOR = "floor"
SINGLE = "claimTask"
BATCH = "claimTasks"
#: The floor's lease: the server's default (`lease_seconds`), which a claim naming none takes.
FLOOR_LEASE = dt.timedelta(seconds=Settings.model_fields["lease_seconds"].default)


@dataclass
class Claim:
    task_id: str
    priority: str
    sent: float
    answered: float


@dataclass
class ClaimRun:
    """One drained queue: the floor's, claimTask's or claimTasks'."""

    kind: str  # FLOOR, SINGLE or BATCH
    round: int
    servers: int  # 0 for the floor
    claimers: int
    tasks: int
    batch: int = 1  # tasks asked for per request
    claims: int = 0
    requests: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    #: Per request (send to decoded answer).
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    #: Per claim: a request's latency ÷ the claims it answered, once per claim.
    claim_p50_ms: float = math.nan
    claim_p99_ms: float = math.nan
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
    #: claims/s ÷ the floor's claims/s in the same round (None for the floor, or without one).
    vs_floor: float | None = None

    @property
    def label(self) -> str:
        if self.kind == FLOOR:
            return "floor (PyMongo)"
        size = f" ×{self.batch}" if self.kind == BATCH else ""
        return f"{self.kind}{size}, {self.servers} srv"


@dataclass
class Answer:
    """What one claim request got: the tasks handed out, in claim order, as (id, PRIORITY)."""

    claimed: list[tuple[str, str]] = field(default_factory=list)
    #: Told there is nothing left to claim (NothingToClaim, an empty batch, no document matched).
    done: bool = False
    error: Outcome | None = None


ClaimFn = Callable[[], Awaitable[Answer]]


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


def claim_seed(run_id: str, label: str, tasks: int) -> tuple[str, dict[str, str]]:
    """A fresh agent name, and its tasks' ids with their priorities: the same priority sequence every run
    (fixed seed), in creation order."""
    agent = f"bench-claims-{run_id}-{label}"
    rng = random.Random(9)
    return agent, {f"{agent}-{i}": rng.choice(PRIORITIES) for i in range(tasks)}


async def seed_floor(db: AsyncDatabase[Doc], agent: str, seeded: Mapping[str, str]) -> None:
    """The floor's pending tasks, written with the server's own document constructor, 1 ms apart in age
    (MongoDB dates have millisecond precision: every task has its own age)."""
    base = dt.datetime.now(dt.UTC)
    docs = [
        new_state_doc(
            task_id,
            "standalone",
            None,
            {"agent_name": agent, "priority": priority.lower(), "name": task_id},
            [],
            "pending",
            base + dt.timedelta(milliseconds=i),
        )
        for i, (task_id, priority) in enumerate(seeded.items())
    ]
    await db["agent_task_states"].insert_many(docs)


def floor_filter(agent: str, now: dt.datetime) -> Doc:
    """The filter of `app.store.states.claimable` (no workflow or kind narrowing)."""
    return {
        "agent_name": agent,
        "status": {"$in": ["pending", "retrying"]},
        "not_before": {"$not": {"$gt": now}},
        "next_attempt_at": {"$not": {"$gt": now}},
        "$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}, {"expires_at": {"$type": "string"}}],
    }


def floor_start(agent: str, now: dt.datetime) -> Doc:
    """What a floor claim writes: the task started under a lease, its attempt and version counted."""
    return {
        "$set": {
            "status": "in_progress",
            "started_at": now,
            "updated_at": now,
            "lease_holder": agent,
            "lease_expires_at": now + FLOOR_LEASE,
            "last_heartbeat_at": None,
        },
        "$inc": {"attempts": 1, "version": 1},
    }


def floor_claimer(db: AsyncDatabase[Doc], agent: str) -> ClaimFn:
    """A bare claim: one `find_one_and_update` with the server's claim filter and order, on its index."""
    states = db.get_collection("agent_task_states", write_concern=WriteConcern("majority"))

    async def claim() -> Answer:
        now = dt.datetime.now(dt.UTC)
        try:
            doc = await states.find_one_and_update(
                floor_filter(agent, now),
                floor_start(agent, now),
                projection={"priority": 1},
                sort=CLAIM_ORDER,
                hint=CLAIM_INDEX.name,
                return_document=ReturnDocument.AFTER,
            )
        except PyMongoError as exc:  # counted, like an HTTP failure of the server runs
            return Answer(error=Outcome(http_failure=f"{type(exc).__name__}: {str(exc)[:80]}"))
        if doc is None:
            return Answer(done=True)
        return Answer([(str(doc["_id"]), str(doc["priority"]).upper())])

    return claim


def server_claimer(http: httpx.AsyncClient, agent: str) -> ClaimFn:
    """One `claimTask` per request."""

    async def claim() -> Answer:
        outcome = await mutate(http, CLAIM, {"agentName": agent}, "claimTask")
        if outcome.typename == "TaskTransitionSuccess":
            state = (outcome.data or {})["state"]
            return Answer([(state["id"], state["priority"])])
        if outcome.typename == "NothingToClaim":
            return Answer(done=True)
        return Answer(error=outcome)

    return claim


def batch_claimer(http: httpx.AsyncClient, agent: str, batch: int) -> ClaimFn:
    """One `claimTasks(max: batch)` per request; an empty `claimed` means nothing is left."""

    async def claim() -> Answer:
        outcome = await mutate(http, CLAIM_BATCH, {"agentName": agent, "max": batch}, "claimTasks")
        if outcome.typename == "ClaimTasksSuccess":
            claimed = [
                (item["state"]["id"], item["state"]["priority"])
                for item in (outcome.data or {}).get("claimed") or []
            ]
            return Answer(claimed, done=not claimed)
        return Answer(error=outcome)

    return claim


async def claim_tasks_missing(url: str, agent: str, batch: int) -> str | None:
    """Why the claimTasks runs are skipped, or None: asked once, for `batch` tasks of an agent that has
    none, the server must answer `ClaimTasksSuccess` (an empty `claimed`). A server without the mutation
    answers a GraphQL error; one refusing `batch` an error result: either would only repeat in every
    request of the runs."""
    async with http_client(url) as http:
        outcome = await mutate(http, CLAIM_BATCH, {"agentName": agent, "max": batch}, "claimTasks")
    if outcome.typename == "ClaimTasksSuccess":
        return None
    error = outcome.graphql_error
    if error and ("Cannot query field" in error or "Unknown type" in error):
        first_sentence = error.split(". ")[0].rstrip(".")
        what = "no claimTasks mutation" if "'claimTasks'" in error else "a claimTasks of another shape"
        why = f"the server has {what} ({first_sentence})"
    else:
        message = (outcome.data or {}).get("message", "")
        why = f"claimTasks(max: {batch}) answered {error or outcome.http_failure or f'{outcome.typename}: {message}'}"
    return f"{why}: the claimTasks runs are skipped"


async def drain(
    run: ClaimRun,
    seeded: Mapping[str, str],
    claimers: Sequence[ClaimFn],
    *,
    mongo: AsyncMongoClient[Doc],
    server_pids: Sequence[int],
    give_up_after: float,
) -> ClaimRun:
    """Every claimer claims back to back until told nothing is left (or `give_up_after`); fills `run`."""
    claims: list[Claim] = []
    nothing_at: list[float] = []
    latencies: list[float] = []
    per_claim: list[float] = []
    errors = Errors()
    deadline = time.monotonic() + give_up_after

    async def loop(claim: ClaimFn) -> None:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            answer = await claim()
            answered = time.monotonic()
            latencies.append(answered - sent)
            for task_id, priority in answer.claimed:
                claims.append(Claim(task_id, priority, sent, answered))
                per_claim.append((answered - sent) / len(answer.claimed))
            if answer.error is not None:
                errors.add(answer.error)
            elif answer.done:
                nothing_at.append(answered)
                return

    before = await Snapshot.take(mongo, server_pids)
    await asyncio.gather(*(loop(claim) for claim in claimers))
    after = await Snapshot.take(mongo, server_pids)
    window = Window.between(before, after)
    ordered, ordered_claims = sorted(latencies), sorted(per_claim)
    claimed = [c.task_id for c in claims]
    run.claims = len(claims)
    run.requests = len(latencies)
    run.seconds = after.at - before.at
    run.rate = len(claims) / run.seconds if run.seconds else math.nan
    run.p50_ms = percentile(ordered, 50) * 1000
    run.p99_ms = percentile(ordered, 99) * 1000
    run.max_ms = ordered[-1] * 1000 if ordered else math.nan
    run.claim_p50_ms = percentile(ordered_claims, 50) * 1000
    run.claim_p99_ms = percentile(ordered_claims, 99) * 1000
    run.duplicates = len(claimed) - len(set(claimed))
    run.unclaimed = len(set(seeded) - set(claimed))
    run.foreign = len(set(claimed) - set(seeded))
    run.wrong_priority = sum(1 for c in claims if c.task_id in seeded and seeded[c.task_id] != c.priority)
    run.out_of_order, run.violations, run.premature_nothing = priority_check(seeded, claims, nothing_at)
    run.errors = errors.as_json()
    run.committed, run.aborted = window.committed, window.aborted
    run.write_conflicts = window.write_conflicts
    run.cpu_ms_per_op = {
        k: (v * 1000 / len(claims) if claims else math.nan) for k, v in window.cpu_seconds.items()
    }
    run.load_average = load_average()
    return run


async def claim_run(
    kind: str,
    round_: int,
    urls: Sequence[str],
    server_pids: Sequence[int],
    run_id: str,
    *,
    tasks: int,
    claimers: int,
    batch: int,
    mongo: AsyncMongoClient[Doc],
    floor_db: str,
    give_up_after: float,
) -> ClaimRun:
    """Seed `tasks` pending tasks of a fresh agent and drain them with `claimers` claimers of `kind`
    (the floor on `floor_db`, else through the servers at `urls`, split round-robin)."""
    servers = 0 if kind == FLOOR else len(urls)
    run = ClaimRun(
        kind=kind,
        round=round_,
        servers=servers,
        claimers=claimers,
        tasks=tasks,
        batch=batch if kind == BATCH else 1,
    )
    agent, seeded = claim_seed(run_id, f"r{round_}-{kind}-{servers}s", tasks)
    log(f"  seeding {tasks} pending tasks of {agent} …")
    seed_start = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        if kind == FLOOR:
            await seed_floor(mongo[floor_db], agent, seeded)
            fns = [floor_claimer(mongo[floor_db], agent) for _ in range(claimers)]
        else:
            await create_tasks(
                urls[0],
                [{"id": k, "agentName": agent, "priority": p, "name": k} for k, p in seeded.items()],
                start=False,
            )
            clients = [
                await stack.enter_async_context(http_client(urls[i % len(urls)])) for i in range(claimers)
            ]
            fns = [
                batch_claimer(http, agent, batch) if kind == BATCH else server_claimer(http, agent)
                for http in clients
            ]
        run.seed_seconds = time.monotonic() - seed_start
        return await drain(
            run, seeded, fns, mongo=mongo, server_pids=server_pids, give_up_after=give_up_after
        )


def claim_ratios(runs: Sequence[ClaimRun]) -> list[Doc]:
    """Per kind of run: claims/s, ×floor (same round) and p99 per round, and their medians."""
    groups: dict[str, list[ClaimRun]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)

    def median(values: Sequence[float | None]) -> float:
        present = [v for v in values if v is not None and not math.isnan(v)]
        return statistics.median(present) if present else math.nan

    rows = []
    for label, group in groups.items():
        group = sorted(group, key=lambda r: r.round)
        rows.append(
            {
                "run": label,
                "kind": group[0].kind,
                "servers": group[0].servers,
                "batch": group[0].batch,
                "rounds": [r.round for r in group],
                "rate": [r.rate for r in group],
                "vs_floor": [r.vs_floor for r in group],
                "p99_ms": [r.p99_ms for r in group],
                "claim_p99_ms": [r.claim_p99_ms for r in group],
                "median_rate": median([r.rate for r in group]),
                "median_vs_floor": median([r.vs_floor for r in group]),
                "median_p99_ms": median([r.p99_ms for r in group]),
                "median_claim_p99_ms": median([r.claim_p99_ms for r in group]),
            }
        )
    return rows


# --------------------------------------------------------------------------- output


def fmt(value: float, digits: int = 0) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def print_progress_table(points: Sequence[Point], seconds: float, warmup: float, out: TextIO) -> None:
    print(
        f"\nreportProgress — {seconds:g} s per point after {warmup:g} s of warm-up; "
        "each client: its own httpx.AsyncClient (one keep-alive connection) and its own task;\n"
        "×floor: ÷ the floor of the same round (rd); commit/abort/w.confl: mongod's counters over the window;"
        " load: 1/5/15-min load average at its end",
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


def floor_ratios(points: Sequence[Point]) -> list[Doc]:
    """Per N and server count: ×floor (÷ the floor of the same round) per round, and the median; the
    transitions/s of the server and of the floor per round, and their medians."""
    floors = {(p.clients, p.round): p.rate for p in points if p.target == "floor"}
    groups: dict[tuple[int, str], list[Point]] = {}
    for p in points:
        if p.target != "floor":
            groups.setdefault((p.clients, p.target), []).append(p)
    rows: list[Doc] = []
    for (n, target), group in sorted(groups.items()):
        group = sorted(group, key=lambda p: p.round)
        ratios_ = [p.vs_floor for p in group]
        floor_rates = [floors.get((n, p.round)) for p in group]
        present = [r for r in ratios_ if r is not None]
        floor_present = [r for r in floor_rates if r is not None]
        rows.append(
            {
                "clients": n,
                "target": target,
                "rounds": [p.round for p in group],
                "rate": [p.rate for p in group],
                "floor_rate": floor_rates,
                "vs_floor": ratios_,
                "median_rate": statistics.median([p.rate for p in group]),
                "median_floor_rate": statistics.median(floor_present) if floor_present else None,
                "median_vs_floor": statistics.median(present) if present else None,
                "median_p99_ms": statistics.median([p.p99_ms for p in group]),
            }
        )
    return rows


def print_floor_ratios(rows: Sequence[Doc], out: TextIO) -> None:
    if not any(r["median_vs_floor"] is not None for r in rows):
        return
    print(
        "\n×floor per round (server transitions/s ÷ the plain-PyMongo floor's in the same round) and the"
        " median over rounds:",
        file=out,
    )
    for r in rows:
        per_round = "  ".join(
            f"r{rd} {fmt(v if v is not None else math.nan, 2)}"
            for rd, v in zip(r["rounds"], r["vs_floor"], strict=True)
        )
        floor_median = r["median_floor_rate"]
        print(
            f"  {r['clients']:>3} clients  {r['target']:<9}  {per_round}   median ×{fmt(r['median_vs_floor'], 2)}"
            f"   ({fmt(r['median_rate'], 1)}/s vs floor {fmt(floor_median if floor_median is not None else math.nan, 1)}/s;"
            f" p99 {fmt(r['median_p99_ms'], 0)} ms)",
            file=out,
        )


def print_claim_table(
    runs: Sequence[ClaimRun], rows: Sequence[Doc], skipped: str | None, out: TextIO
) -> None:
    if not runs:
        return
    first = runs[0]
    print(
        f"\nclaims — {first.claimers} claimers draining {first.tasks} pending tasks of mixed priorities per run"
        " (each run its own agent), rounds in alternating order; latency per request (per claim: ÷ the"
        " claims it answered);\ndup/uncl: tasks handed out twice / never; viol: priority-order violations"
        " beyond in-flight claims (ooo: out of order incl. concurrent ones); prem: premature nothing-to-claim",
        file=out,
    )
    header = (
        f"{'rd':>2} {'run':<22} {'claims':>6} {'s':>5} {'claims/s':>8} {'×floor':>6} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'/claim p50':>10} {'p99':>6} {'dup':>4} {'uncl':>4} {'viol':>4} "
        f"{'ooo':>4} {'prem':>4} {'errs':>5} {'commit':>6} {'abort':>6} {'w.confl':>7} "
        f"{'cpu ms/claim srv+mongod+bench':>29}  load"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in runs:
        cpu = r.cpu_ms_per_op
        cpu_text = (
            f"{fmt(cpu.get('servers', math.nan), 2)}+{fmt(cpu.get('mongod', math.nan), 2)}"
            f"+{fmt(cpu.get('bench', math.nan), 2)}"
        )
        errs = r.errors["graphql_errors"] + r.errors["error_results"] + r.errors["http_failures"]
        print(
            f"{r.round:>2} {r.label:<22} {r.claims:>6} {r.seconds:>5.1f} {fmt(r.rate, 1):>8} "
            f"{fmt(r.vs_floor if r.vs_floor is not None else math.nan, 2):>6} {fmt(r.p50_ms, 1):>7} "
            f"{fmt(r.p99_ms, 1):>7} {fmt(r.max_ms, 0):>7} {fmt(r.claim_p50_ms, 1):>10} "
            f"{fmt(r.claim_p99_ms, 1):>6} {r.duplicates:>4} {r.unclaimed:>4} {r.violations:>4} "
            f"{r.out_of_order:>4} {r.premature_nothing:>4} {errs:>5} {r.committed:>6} {r.aborted:>6} "
            f"{r.write_conflicts:>7} {cpu_text:>29}  {r.load_average}",
            file=out,
        )
    examples = [(r, e) for r in runs for e in r.errors["examples"]]
    for r, (text, count) in examples[:10]:
        print(f"  error in round {r.round}, {r.label}: {count}× {text}", file=out)
    if skipped:
        print(f"  {skipped}", file=out)
    print("\nmedians over the rounds (×floor: ÷ the floor of the same round):", file=out)
    for row in rows:
        per_round = " ".join(
            fmt(v if v is not None else math.nan, 2) for v in row["vs_floor"] if row["kind"] != FLOOR
        )
        no_floor = row["kind"] == FLOOR or all(v is None for v in row["vs_floor"])
        ratio = "" if no_floor else f"  ×floor {fmt(row['median_vs_floor'], 2)} [{per_round}]"
        print(
            f"  {row['run']:<22} {fmt(row['median_rate'], 1):>7} claims/s{ratio}"
            f"   p99 {fmt(row['median_p99_ms'], 1)} ms per request, {fmt(row['median_claim_p99_ms'], 1)} ms per claim",
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
    batch_skipped: str | None = None
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

        # Interleaved: for each N, rounds of the floor and each server count back to back, so they are
        # compared on the same database size and machine state (not two ends of the run). The order
        # alternates round by round (floor, 1, 2; then 2, 1, floor: an ABBA design), so none always runs
        # first, on the smaller database or right after a server started. The floor runs with the lowest
        # server count up and idle, the same in every round.
        counts = sorted(set(args.servers))
        for n in [] if args.no_progress else args.clients:
            for round_ in range(1, args.rounds + 1):
                targets = [*([] if args.no_floor else [0]), *counts]  # 0: the floor
                if round_ % 2 == 0:
                    targets.reverse()
                floor: Point | None = None
                server_points: list[Point] = []
                for count in targets:
                    urls, pids = run_servers(count or counts[0])
                    if count == 0:
                        log(f"floor, {n} workers, round {round_} …")
                        floor = await floor_point(
                            mongo,
                            floor_db,
                            n,
                            run_id,
                            seconds=args.seconds,
                            warmup=args.warmup,
                            round_=round_,
                            server_pids=pids,
                        )
                        points.append(floor)
                        continue
                    log(f"reportProgress, {n} clients, {count} server(s), round {round_} …")
                    point = await progress_point(
                        urls,
                        n,
                        run_id,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        mongo=mongo,
                        server_pids=pids,
                        round_=round_,
                    )
                    point.round = round_
                    server_points.append(point)
                    points.append(point)
                if floor is not None and floor.rate:
                    for point in server_points:
                        point.vs_floor = point.rate / floor.rate

        # Claims: rounds of the floor, claimTask and claimTasks (each server count), in alternating order.
        claim_counts = sorted(set(args.claim_servers))
        kinds: list[tuple[str, int]] = [
            *([] if args.no_floor else [(FLOOR, claim_counts[0])]),
            *((SINGLE, c) for c in claim_counts),
            *((BATCH, c) for c in claim_counts if args.claim_batch > 0),
        ]
        if not args.no_claims and args.claim_batch > 0:
            urls, _ = run_servers(claim_counts[0])
            batch_skipped = await claim_tasks_missing(urls[0], f"bench-probe-{run_id}", args.claim_batch)
            if batch_skipped:
                log(batch_skipped)
                kinds = [(kind, c) for kind, c in kinds if kind != BATCH]
        for round_ in range(1, args.claim_rounds + 1) if not args.no_claims else ():
            order = kinds if round_ % 2 == 1 else kinds[::-1]
            round_runs: list[ClaimRun] = []
            for kind, count in order:
                urls, pids = run_servers(count)
                log(f"{kind}, {args.claimers} claimers, {count} server(s), round {round_} …")
                round_runs.append(
                    await claim_run(
                        kind,
                        round_,
                        urls,
                        pids,
                        run_id,
                        tasks=args.claim_tasks,
                        claimers=args.claimers,
                        batch=args.claim_batch,
                        mongo=mongo,
                        floor_db=floor_db,
                        give_up_after=args.claim_timeout,
                    )
                )
            floor_rate = next((r.rate for r in round_runs if r.kind == FLOOR), None)
            for r in round_runs:
                if r.kind != FLOOR and floor_rate:
                    r.vs_floor = r.rate / floor_rate
            claim_runs.extend(round_runs)
        log_lines = server_log_summary(started)
    finally:
        await mongo.close()
    server_ratios = ratios(points)
    progress_floor = floor_ratios(points)
    claim_summary = claim_ratios(claim_runs)
    if points:
        print_progress_table(points, args.seconds, args.warmup, out)
        print_floor_ratios(progress_floor, out)
        print_ratios(server_ratios, out)
    print_claim_table(claim_runs, claim_summary, batch_skipped, out)
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
        "floor_ratios": progress_floor,
        "server_ratios": server_ratios,
        "claims": [{**asdict(r), "label": r.label} for r in claim_runs],
        "claim_ratios": claim_summary,
        "claim_batch_skipped": batch_skipped,
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
        help="rounds per N, each measuring the floor and each server count, in alternating order"
        " (floor 1 2, 2 1 floor, …; default 2)",
    )
    parser.add_argument("--claimers", type=int, default=16, help="concurrent claimers (default 16)")
    parser.add_argument(
        "--claim-tasks", type=int, help="pending tasks to claim per run (default 2000; quick: 200)"
    )
    parser.add_argument(
        "--claim-batch",
        type=int,
        default=10,
        help="tasks per claimTasks request (default 10; 0 skips the claimTasks runs)",
    )
    parser.add_argument(
        "--claim-rounds",
        type=int,
        help="rounds of floor, claimTask and claimTasks, in alternating order (default 3; quick: 2)",
    )
    parser.add_argument(
        "--claim-servers", type=int, nargs="+", default=[1], help="server process counts for the claim runs"
    )
    parser.add_argument(
        "--claim-timeout", type=float, default=600.0, help="give up draining a queue after this long"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the plain-PyMongo floors")
    parser.add_argument("--no-progress", action="store_true", help="skip the reportProgress run")
    parser.add_argument("--no-claims", action="store_true", help="skip the claim runs")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 and 4 clients, 3 s, 200 tasks to claim, 2 claim rounds",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (mongod data, server logs)"
    )
    args = parser.parse_args(argv)
    quick = {"clients": [1, 4], "seconds": 3.0, "warmup": 0.5, "claim_tasks": 200, "claim_rounds": 2}
    defaults = {
        "clients": [1, 4, 16, 64],
        "seconds": 15.0,
        "warmup": 2.0,
        "claim_tasks": 2000,
        "claim_rounds": 3,
        **(quick if args.quick else {}),
    }
    for name, value in defaults.items():  # explicit flags win over --quick
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min([*args.clients, *args.servers, *args.claim_servers, args.claimers, args.rounds]) < 1:
        parser.error("client, server and claimer counts must be at least 1")
    if min(args.claim_tasks, args.claim_rounds) < 1 or args.claim_batch < 0:
        parser.error("--claim-tasks and --claim-rounds must be at least 1, --claim-batch at least 0")
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
