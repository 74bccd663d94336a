"""What concurrency limits and fair claims cost, and whether fairness holds (issue 22).

    python -m bench.fairness [--tasks 600] [--claimers 16] [--rounds 3] [--port 18500]

Starts its own mongod and one `agent-tasks serve` (ports from `--port`: mongod on it, the server on the
next), then, in alternating rounds on the same server:

- **none**: `--tasks` ready tasks of one agent (10 workflows), no limit, FIFO: `--claimers` concurrent
  clients call `claimTask` until nothing is left; claims/s. This is the floor of the same run.
- **limit**: the same under a limit per workflow that never binds (max 10,000): every claim counts,
  guards and chooses under the limits. The ratio limit/none is the cost of the checks.
- **agent**: the same under one limit over the whole agent (max 10,000): every claim of the agent writes
  one guard document, so its claims are serialised (one per transaction time).
- **fair**: FAIR_BY_WORKFLOW with the per-workflow limits.

Then the fairness target, counted (not timed): workflow A with 1,000 ready tasks (the oldest), B and C with
10 each, a limit of 2 per workflow, FAIR_BY_WORKFLOW, 8 claimers claiming and completing: the position of
the last claim of a B or C task (target: within the first 40 claims). `uptime` is printed beside figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from app.lifecycle.documents import new_state_doc
from app.mongo.embedded import EmbeddedMongod

ROOT = Path(__file__).resolve().parent.parent
CLAIM = """mutation($a: String!) { r: claimTask(agentName: $a) {
  __typename ... on TaskTransitionSuccess { state { id workflowId attempts } } } }"""
COMPLETE = "mutation($id: ID!, $n: Int) { r: completeTask(id: $id, attempt: $n) { __typename } }"
LIMIT = "mutation($s: ConcurrencyScope!, $k: String!, $m: Int!) { r: setConcurrencyLimit(scope: $s, key: $k, max: $m) { __typename } }"
CLEAR = "mutation($s: ConcurrencyScope!, $k: String!) { r: clearConcurrencyLimit(scope: $s, key: $k) { __typename } }"
POLICY = (
    "mutation($a: String!, $p: ClaimPolicy!) { r: setClaimPolicy(agentName: $a, policy: $p) { __typename } }"
)


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


async def gql(http: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = (await http.post("/graphql", json={"query": query, "variables": variables})).json()
    if "errors" in body:
        raise RuntimeError(body["errors"])
    return body["data"]["r"]


async def seed(db: Any, agent: str, workflows: dict[str, int]) -> None:
    base = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    docs, n = [], 0
    for workflow, count in workflows.items():
        for i in range(count):
            n += 1
            docs.append(
                new_state_doc(
                    f"{agent}-{workflow}-{i}",
                    "standalone",
                    workflow,
                    {"agent_name": agent},
                    [],
                    "pending",
                    base + dt.timedelta(milliseconds=n),
                )
            )
    await db.agent_task_states.insert_many(docs)


async def claim_all(url: str, agent: str, claimers: int) -> tuple[int, float]:
    claimed = 0

    async def claimer() -> None:
        nonlocal claimed
        async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
            while True:
                got = await gql(http, CLAIM, {"a": agent})
                if got["__typename"] != "TaskTransitionSuccess":
                    return
                claimed += 1

    start = time.monotonic()
    await asyncio.gather(*(claimer() for _ in range(claimers)))
    return claimed, time.monotonic() - start


async def fairness(url: str, db: Any) -> int:
    agent = "fair-target"
    await seed(db, agent, {"A": 1000, "B": 10, "C": 10})
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
        for w in "ABC":
            await gql(http, LIMIT, {"s": "WORKFLOW", "k": w, "m": 2})
        await gql(http, POLICY, {"a": agent, "p": "FAIR_BY_WORKFLOW"})
    order: list[str] = []

    async def claimer() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
            idle = 0
            while len(order) < 80 and idle < 100:
                got = await gql(http, CLAIM, {"a": agent})
                if got["__typename"] != "TaskTransitionSuccess":
                    idle += 1
                    await asyncio.sleep(0.01)
                    continue
                idle = 0
                order.append(got["state"]["workflowId"])
                await gql(http, COMPLETE, {"id": got["state"]["id"], "n": got["state"]["attempts"]})

    await asyncio.gather(*(claimer() for _ in range(8)))
    small = [i for i, w in enumerate(order) if w in ("B", "C")]
    return (max(small) + 1) if len(small) == 20 else -1


def start_server(uri: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")}
    env.update({"MONGODB_URI": uri, "MONGODB_DB": "bench_fairness", "LOG_LEVEL": "warning"})
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).status_code == 200:
                return server
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"server did not start: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


async def measure(url: str, uri: str, args: argparse.Namespace) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = client["bench_fairness"]
        modes = ("none", "limit", "agent", "fair")
        rates: dict[str, list[float]] = {mode: [] for mode in modes}
        workflows = {f"w{i}": args.tasks // 10 for i in range(10)}
        async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
            for rnd in range(args.rounds):
                for mode in modes:
                    agent = f"bench-{mode}-{rnd}"
                    await seed(db, agent, workflows)
                    if mode == "agent":
                        await gql(http, LIMIT, {"s": "AGENT", "k": agent, "m": 10_000})
                    if mode in ("limit", "fair"):
                        for w in workflows:
                            await gql(http, LIMIT, {"s": "WORKFLOW", "k": w, "m": 10_000})
                    if mode == "fair":
                        await gql(http, POLICY, {"a": agent, "p": "FAIR_BY_WORKFLOW"})
                    claimed, seconds = await claim_all(url, agent, args.claimers)
                    assert claimed == args.tasks, (mode, claimed)
                    rates[mode].append(claimed / seconds)
                    print(f"round {rnd + 1} {mode:5}: {claimed / seconds:7.1f} claims/s  load {uptime()}")
                    # The next round starts without limits (the "none" rounds stay on the FIFO path).
                    await db.concurrency_limits.delete_many({})
                    await db.agent_task_states.delete_many({"agent_name": agent})
        for mode in modes[1:]:
            ratios = [a / b for a, b in zip(rates[mode], rates["none"], strict=True)]
            print(
                f"{mode}/none: {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})"
            )
        position = await fairness(url, db)
        print(f"fairness: last B/C task claimed at claim {position} of 40 allowed  load {uptime()}")
    finally:
        await client.close()


def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    mongod = EmbeddedMongod(work / "mongod", port=args.port)
    uri = mongod.start()
    server: subprocess.Popen[bytes] | None = None
    try:
        server = start_server(uri, args.port + 1, work / "server.log")
        asyncio.run(measure(f"http://127.0.0.1:{args.port + 1}", uri, args))
    finally:
        if server is not None:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(15)
            if server.poll() is None:
                server.kill()
                server.wait()
        mongod.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--claimers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=18500)
    main(parser.parse_args())
