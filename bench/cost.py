"""Cost-limit benchmark: how long a trivial query from another client waits while big queries run, and
while another client floods the server with documents at the token limit.

    python -m bench.cost [--workflows 5] [--sub-tasks 25] [--behaviors 20] [--seconds 10]
    python -m bench.cost --flood-only [--rounds 3] [--round-seconds 8]

Loads `--workflows` synthetic workflows (the issue's 5 of 25×20), starts a real `agent-tasks serve`, then:

- sends the issue's costly query (and 1,000 copies of `agentTasks(first: 5) { totalCount }`) and times
  the refusal;
- runs, back to back for `--seconds`, the largest queries the default cost limit allows over that data
  (the whole tree of one workflow, `queries/WorkflowTree.graphql`, and every workflow's tasks with their
  states), while a second client sends `{ __typename }` every 20 ms; prints how long those waited
  (median, 99th percentile, maximum) next to how long one big query takes;
- the flood (issue 18, finding 6): a probe client sends `{ __typename }` every 20 ms while, in alternate
  rounds of `--round-seconds`, nobody else does anything (the floor) or one client in another process
  sends, back to back over 4 connections, distinct documents at the token limit (10,000-ish aliases, directives, operations,
  or over the limit), each refused. Prints the probe's median and p99 for both, the p99 ratio, and what
  the flooder got back (refusals by code, requests per second).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from app.demo.documents import synthetic_tree, write_documents
from app.mongo.embedded import EmbeddedMongod
from tests.support.servers import serve

ROOT = Path(__file__).resolve().parent.parent

COSTLY = (
    "{ metaWorkflowTasks(first: 100) { edges { node { subTasks { behaviorTasks { subTask { behaviorTasks {"
    " subTask { behaviorTasks { id } } } } } } } } } }"
)
COPIES = "{" + " ".join(["agentTasks(first: 5) { totalCount }"] * 1000) + "}"
ALL_TASKS = """query($n: Int) { metaWorkflowTasks(first: $n) { edges { node { id subTasks { id behaviorTasks {
  id actionType state { id status progressPercentage updatedAt } } } } } } }"""


async def post(http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None) -> Any:
    return (await http.post("/graphql", json={"query": query, "variables": variables or {}})).json()


async def measure(
    http: httpx.AsyncClient, url: str, query: str, variables: dict[str, Any], seconds: float
) -> tuple[list[float], list[float]]:
    """Run `query` back to back for `seconds` while another client sends `{ __typename }` every 20 ms;
    the big query's durations and the trivial one's waits."""
    durations: list[float] = []
    deadline = time.perf_counter() + seconds

    async def heavy() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await post(http, query, variables)
            durations.append(time.perf_counter() - start)

    # The probe in a thread of its own: decoding the big answers in this process must not delay it.
    _, waits = await asyncio.gather(heavy(), asyncio.to_thread(probe, url, seconds))
    return durations, waits


#: Connections the flooder sends over, each back to back.
FLOOD_CONNECTIONS = 4
#: Documents at the token limit (20,000), each refused; `{n}` makes every one distinct (no cache hits).
FLOODS = {
    "aliases": lambda n: "{" + " ".join(f"a{n}_{i}: __typename" for i in range(6_600)) + "}",
    "directives": lambda n: f"query Q{n} {{ __typename " + " ".join(["@a"] * 9_990) + "}",
    "operations": lambda n: " ".join(f"query q{n}_{i} {{ __typename }}" for i in range(3_990)),
    "over the token limit": lambda n: f"query Q{n} {{" + " __typename" * 25_000 + "}",
}


def flooder(url: str, kind: str, seconds: float, connections: int = FLOOD_CONNECTIONS) -> None:
    """Send documents of one kind back to back over `connections` connections for `seconds` (run in a
    process of its own); print a JSON line of what came back."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    make = FLOODS[kind]
    codes: collections.Counter[str] = collections.Counter()
    deadline = time.perf_counter() + seconds
    start = random.randrange(1 << 30)

    def send(lane: int) -> None:
        n = start + lane * 1_000_000
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.perf_counter() < deadline:
                n += 1
                errors = http.post("/graphql", json={"query": make(n)}).json().get("errors") or [{}]
                codes[str(errors[0].get("extensions", {}).get("code"))] += 1

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(send, range(connections)))
    print(json.dumps({"codes": codes, "per_second": sum(codes.values()) / seconds}), flush=True)


def probe(url: str, seconds: float) -> list[float]:
    """`{ __typename }` every 20 ms for `seconds`; each answer's latency."""
    waits: list[float] = []
    deadline = time.perf_counter() + seconds
    with httpx.Client(base_url=url, timeout=120) as other:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            other.post("/graphql", json={"query": "{ __typename }"}).json()
            waits.append(time.perf_counter() - start)
            time.sleep(0.02)
    return waits


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def flood(url: str, rounds: int, seconds: float) -> None:
    """Alternate floor and flood rounds for each kind of document; print the probe's latencies."""
    import json

    for kind in FLOODS:
        floor: list[float] = []
        flooded: list[float] = []
        got: collections.Counter[str] = collections.Counter()
        rates: list[float] = []
        for _ in range(rounds):
            floor += probe(url, seconds)
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.cost", "--flooder", url, kind, str(seconds + 1)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.5)  # the flood is under way before the probe starts
            flooded += probe(url, seconds)
            out, _ = process.communicate()
            result = json.loads(out.strip().splitlines()[-1])
            got.update(result["codes"])
            rates.append(result["per_second"])
        print(
            f"flood of {kind}: probe median {statistics.median(floor) * 1000:.1f} -> "
            f"{statistics.median(flooded) * 1000:.1f} ms, p99 {percentile(floor, 0.99) * 1000:.1f} -> "
            f"{percentile(flooded, 0.99) * 1000:.1f} ms (x{percentile(flooded, 0.99) / percentile(floor, 0.99):.2f}),"
            f" max {max(flooded) * 1000:.1f} ms; flooder {statistics.mean(rates):.1f} requests/s,"
            f" answers {dict(got)} ({len(floor)} + {len(flooded)} probes)"
        )


async def main(args: argparse.Namespace) -> None:
    mongod = EmbeddedMongod(Path(tempfile.mkdtemp(prefix="bench-cost-")), port=0)
    uri = mongod.start()
    try:
        db_name = f"bench_{uuid.uuid4().hex[:8]}"
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        for i in range(args.workflows):
            await write_documents(client[db_name], synthetic_tree(f"wf{i}", args.sub_tasks, args.behaviors))
        env = {"MONGODB_URI": uri, "MONGODB_DB": db_name, "LOG_LEVEL": "warning"}
        tree = (ROOT / "queries" / "WorkflowTree.graphql").read_text()
        with serve(env) as server:
            if args.flood_only:
                await asyncio.to_thread(flood, server.url, args.rounds, args.round_seconds)
                return
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
                for name, query in (
                    ("the issue's depth-10 query", COSTLY),
                    ("1,000 totalCount copies", COPIES),
                ):
                    start = time.perf_counter()
                    body = await post(http, query)
                    took = (time.perf_counter() - start) * 1000
                    print(f"{name}: {body['errors'][0]['extensions']} in {took:.0f} ms")

                big = [
                    ("WorkflowTree", tree, {"id": "wf0"}),
                    ("all workflows' tasks", ALL_TASKS, {"n": args.workflows}),
                ]
                for name, query, variables in big:
                    answer = await post(http, query, variables)
                    assert "errors" not in answer, answer["errors"]
                    durations, waits = await measure(http, server.url, query, variables, args.seconds)
                    waits.sort()
                    print(
                        f"{name} ({len(str(answer)) // 1024} KB answer): one takes "
                        f"{statistics.median(durations) * 1000:.0f} ms (median of {len(durations)}); "
                        f"meanwhile {{ __typename }} waited median {statistics.median(waits) * 1000:.1f} ms, "
                        f"p99 {waits[int(len(waits) * 0.99)] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms "
                        f"({len(waits)} requests)"
                    )
            await asyncio.to_thread(flood, server.url, args.rounds, args.round_seconds)
        await client.close()
    finally:
        mongod.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=5)
    parser.add_argument("--sub-tasks", type=int, default=25)
    parser.add_argument("--behaviors", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--flood-only", action="store_true", help="only the flood comparison")
    parser.add_argument("--rounds", type=int, default=3, help="floor/flood round pairs per kind")
    parser.add_argument("--round-seconds", type=float, default=8)
    parser.add_argument("--flooder", nargs=3, metavar=("URL", "KIND", "SECONDS"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.flooder:
        flooder(arguments.flooder[0], arguments.flooder[1], float(arguments.flooder[2]))
    else:
        asyncio.run(main(arguments))
