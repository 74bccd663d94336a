"""Subscription benchmark: N WebSocket subscribers over M workflows while a writer applies transitions at a
steady rate. Prints commit-to-receipt latency (p50, p99, max), events lost and duplicated (must be 0), and
the server process's memory.

    python -m bench.subscribers [--subscribers 1000] [--workflows 50] [--rate 20] [--seconds 30]
    python -m bench.subscribers --soak 600 [--sample 30]      # memory over time under steady load
    python -m bench.subscribers --idle 0 1000 5000            # memory per idle subscriber

`--soak S` runs the writer for S seconds and prints the server's RSS every `--sample` seconds, then
whether RSS after the first minute stayed within 10 % of its value at one minute (a leak shows as a
steady climb). `--idle N…` connects subscribers in steps, with no writes, and prints RSS at each step and
the cost per subscriber between steps. Both also print the load average (the machine may be shared).

It starts its own embedded mongod (unless MONGODB_URI is set) and its own `agent-tasks serve` process.
Latency is measured from the event's `timestamp` (taken in the writing transaction just before it
commits, so it slightly over-states the latency) to the moment the client decoded the message.

Every wait has a deadline (`--deadline`, 120 s): subscribers that do not connect or register in time are
reported (how many, and the last count the server gave) and the run goes on with the others or stops
saying so. A subscription the server ends (a `complete` or an `error` message, or a closed socket: for
instance a consumer too slow for SUBSCRIPTION_QUEUE_SIZE on a loaded machine) is counted apart, with its
reason; the events it missed after it ended are "missed after an end", never "lost", which counts only
what an open subscription failed to deliver.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from app.mongo.embedded import EmbeddedMongod
from tests.support.servers import serve

SUBSCRIPTION = (
    """subscription($w: ID!) { taskEvents(workflowId: $w, after: "HEAD") { cursor type timestamp taskId } }"""
)
CREATE = "mutation($i: CreateMetaWorkflowTaskInput!) { createWorkflow(input: $i) { __typename } }"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def sample_rss(pid: int, every: float, start: float, samples: list[tuple[float, float]]) -> None:
    """Print (and keep) the server's RSS every `every` seconds until cancelled."""
    while True:
        await asyncio.sleep(max(0.0, start + (len(samples) + 1) * every - time.monotonic()))
        elapsed, rss = time.monotonic() - start, rss_mb(pid)
        samples.append((elapsed, rss))
        print(f"  t={elapsed:5.0f} s   server RSS {rss:6.1f} MB   load {load_average()}", flush=True)


def soak_verdict(samples: list[tuple[float, float]]) -> str:
    """RSS after the first minute, against its value at one minute: within 10 %?"""
    after = [(t, r) for t, r in samples if t >= 60]
    if len(after) < 2:
        return "too short to judge (needs samples after the first minute)"
    base = after[0][1]
    high = max(r for _, r in after)
    low = min(r for _, r in after)
    drift = (high - base) / base * 100
    slope = (after[-1][1] - base) / (after[-1][0] - after[0][0]) * 60
    ok = high <= base * 1.10
    return (
        f"RSS at {after[0][0]:.0f} s {base:.1f} MB; after it min {low:.1f} / max {high:.1f} MB"
        f" ({drift:+.1f} %), end {after[-1][1]:.1f} MB ({slope:+.2f} MB/min): "
        + ("within 10 %" if ok else "NOT within 10 %")
    )


class Subscriber:
    def __init__(self, url: str, workflow_id: str) -> None:
        self.url = url
        self.workflow_id = workflow_id
        self.cursors: list[str] = []  # positions: fixed-width hex, so text order is commit order
        self.latencies: list[float] = []
        self.errors: list[Any] = []
        self.ready = asyncio.Event()
        #: Why the subscription ended before the benchmark stopped it (None: it did not).
        self.ended: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._run(stop)
        except ConnectionClosed as exc:
            if not stop.is_set():
                self.ended = f"socket closed ({exc.rcvd.code if exc.rcvd else 'no close frame'}"
                self.ended += f" {exc.rcvd.reason})" if exc.rcvd and exc.rcvd.reason else ")"
        except (OSError, AssertionError) as exc:
            self.ended = f"could not subscribe ({type(exc).__name__})"
        finally:
            self.ready.set()  # a subscriber that failed to connect is ready too: the run counts it

    async def _run(self, stop: asyncio.Event) -> None:
        async with connect(
            self.url, subprotocols=[Subprotocol("graphql-transport-ws")], proxy=None, max_queue=None
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            payload = {"query": SUBSCRIPTION, "variables": {"w": self.workflow_id}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            self.ready.set()
            while not stop.is_set():  # cancelled at the end (no polling: 5,000 idle clients stay idle)
                raw = await ws.recv()
                received = time.time()
                message = json.loads(raw)
                if message["type"] in ("complete", "error"):
                    self.errors.append(message)
                    reason = message.get("payload")
                    self.ended = f"server sent {message['type']}" + (
                        f": {json.dumps(reason)[:120]}" if reason else ""
                    )
                    return
                if message["type"] != "next" or "errors" in message["payload"]:
                    self.errors.append(message)
                    continue
                event = message["payload"]["data"]["taskEvents"]
                self.cursors.append(event["cursor"])
                committed = dt.datetime.fromisoformat(event["timestamp"]).timestamp()
                self.latencies.append(received - committed)


async def connect_all(
    server_url: str, subscribers: list[Subscriber], stop: asyncio.Event, deadline: float, before: int = 0
) -> tuple[list[asyncio.Task[None]], str]:
    """Start every subscriber in waves of 100 (no SYN flood on loopback) and wait, at most `deadline`
    seconds in all, until the server counts them registered (beside `before` already there). The runners and a line saying how it went."""
    runners: list[asyncio.Task[None]] = []
    started = time.monotonic()
    registered = 0
    try:
        async with asyncio.timeout(deadline):
            for chunk in range(0, len(subscribers), 100):
                batch = subscribers[chunk : chunk + 100]
                runners += [asyncio.create_task(s.run(stop)) for s in batch]
                await asyncio.gather(*(s.ready.wait() for s in batch))
            wanted = before + sum(s.ended is None for s in subscribers)
            async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
                while (
                    registered := (await http.get("/healthz")).json()["event_hub"]["subscribers"]
                ) < wanted:
                    await asyncio.sleep(0.1)
    except TimeoutError:
        failed = sum(s.ended is not None for s in subscribers)
        return runners, (
            f"NOT all registered within {deadline:g} s: {len(runners)} started, {failed} failed to"
            f" subscribe, the server counted {registered}; going on with those"
        )
    failed = sum(s.ended is not None for s in subscribers)
    note = f", {failed} failed to subscribe" if failed else ""
    return runners, f"connected in {time.monotonic() - started:.1f} s{note}"


def end_reasons(subscribers: list[Subscriber]) -> str:
    """The subscriptions the server ended (or that never started), counted by reason."""
    reasons: dict[str, int] = {}
    for s in subscribers:
        if s.ended is not None:
            reasons[s.ended] = reasons.get(s.ended, 0) + 1
    return "; ".join(f"{n} × {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])) or "none"


async def writer(url: str, tasks: list[str], rate: float, seconds: float) -> tuple[int, int]:
    """Cycle start → progress → (non-final) fail over the tasks at `rate` mutations per second; every one
    commits events (the tasks allow unlimited attempts). Returns (mutations sent, mutations refused)."""
    plan = ["startTask", "reportProgress", "failTask"]
    args = {"reportProgress": ", percentage: 50", "failTask": ', error: "transient"'}
    sent = refused = 0
    interval = 1 / rate
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        step = 0
        while time.monotonic() - start < seconds:
            task = tasks[step % len(tasks)]
            name = plan[(step // len(tasks)) % len(plan)]
            query = f'mutation {{ r: {name}(id: "{task}" {args.get(name, "")}) {{ __typename }} }}'
            answer = (await http.post("/graphql", json={"query": query})).json()
            refused += answer.get("data", {}).get("r", {}).get("__typename") != "TaskTransitionSuccess"
            sent += 1
            step += 1
            await asyncio.sleep(max(0.0, start + step * interval - time.monotonic()))
    return sent, refused


async def main(args: argparse.Namespace) -> None:
    uri = os.environ.get("MONGODB_URI")
    mongod = None
    if uri is None:
        mongod = EmbeddedMongod(Path(tempfile.mkdtemp(prefix="bench-mongod-")), port=0)
        uri = mongod.start()
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    env = {
        "MONGODB_URI": uri,
        "MONGODB_DB": db_name,
        "LOG_LEVEL": "warning",
        "SUBSCRIPTION_QUEUE_SIZE": str(args.queue),
        "MAX_SUBSCRIPTIONS_PER_CONNECTION": "10",
        "WS_MAX_CONNECTIONS": str(max([args.subscribers, *args.idle]) + 100),
    }
    try:
        with serve(env) as server:
            base_rss = rss_mb(server.process.pid)
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                workflows = [f"bw{i}" for i in range(args.workflows)]
                for wid in workflows:
                    sub_tasks = [
                        {"id": f"{wid}_s{j}", "state": {"agentName": "BenchAgent", "maxAttempts": 100000}}
                        for j in range(2)
                    ]
                    body = {"query": CREATE, "variables": {"i": {"id": wid, "subTasks": sub_tasks}}}
                    assert (await http.post("/graphql", json=body)).json()["data"]["createWorkflow"][
                        "__typename"
                    ] == "MetaWorkflowTaskSuccess"
            ws_url = server.url.replace("http", "ws", 1) + "/graphql"
            subscribers = [Subscriber(ws_url, workflows[i % len(workflows)]) for i in range(args.subscribers)]
            stop = asyncio.Event()
            runners, connected = await connect_all(server.url, subscribers, stop, args.deadline)
            idle_rss = rss_mb(server.process.pid)
            tasks = [f"{w}_s0" for w in workflows]
            samples: list[tuple[float, float]] = []
            if args.soak:
                print(
                    f"soak: {args.soak:.0f} s at {args.rate:g} mutations/s, RSS every {args.sample:g} s",
                    flush=True,
                )
                sampler = asyncio.create_task(
                    sample_rss(server.process.pid, args.sample, time.monotonic(), samples)
                )
            sent, refused = await writer(server.url, tasks, args.rate, args.soak or args.seconds)
            loaded_rss = rss_mb(server.process.pid)
            if args.soak:
                sampler.cancel()
            await asyncio.sleep(2)  # let the last deliveries arrive
            stop.set()
            for runner in runners:
                runner.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
            # What each subscriber should have received: every stored event of its workflow after the start.
            expected: dict[str, list[str]] = {}
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                for wid in workflows:
                    cursors: list[str] = []
                    after = None
                    while True:
                        q = "query($w: ID, $a: String) { taskEvents(workflowId: $w, after: $a, first: 100) { pageInfo { hasNextPage endCursor } edges { node { cursor type } } } }"
                        page = (
                            await http.post(
                                "/graphql", json={"query": q, "variables": {"w": wid, "a": after}}
                            )
                        ).json()["data"]["taskEvents"]
                        cursors += [
                            e["node"]["cursor"] for e in page["edges"] if e["node"]["type"] != "TASK_CREATED"
                        ]
                        if not page["pageInfo"]["hasNextPage"]:
                            break
                        after = page["pageInfo"]["endCursor"]
                    expected[wid] = cursors
        open_ones = [s for s in subscribers if s.ended is None]
        lost = sum(len(set(expected[s.workflow_id]) - set(s.cursors)) for s in open_ones)
        missed_after_end = sum(
            len(set(expected[s.workflow_id]) - set(s.cursors)) for s in subscribers if s.ended is not None
        )
        duplicated = sum(len(s.cursors) - len(set(s.cursors)) for s in subscribers)
        out_of_order = sum(s.cursors != sorted(s.cursors) for s in subscribers)
        latencies = sorted(x * 1000 for s in subscribers for x in s.latencies)
        delivered = len(latencies)
        print(f"subscribers            {len(subscribers)} over {len(workflows)} workflows ({connected})")
        seconds = args.soak or args.seconds
        print(
            f"writer                 {sent} mutations in {seconds:.0f} s ({sent / seconds:.1f}/s, {refused} refused)"
        )
        print(
            f"events delivered       {delivered} ({sum(len(v) for v in expected.values())} committed, fanned out)"
        )
        if latencies:
            p50 = statistics.median(latencies)
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            print(f"latency commit→client  p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {latencies[-1]:.1f} ms")
        print(
            f"lost / duplicated      {lost} / {duplicated} (over {len(open_ones)} open subscriptions)"
            f"   out of order: {out_of_order}   errors: {sum(len(s.errors) for s in subscribers)}"
        )
        print(
            f"ended by the server    {len(subscribers) - len(open_ones)}: {end_reasons(subscribers)}"
            f" ({missed_after_end} events missed after an end)"
        )
        print(
            f"server memory (RSS)    {base_rss:.0f} MB idle, {idle_rss:.0f} MB with subscribers, {loaded_rss:.0f} MB under load"
        )
        if args.soak:
            print(f"soak                   {soak_verdict(samples)}")
        print(f"load average           {load_average()} (at the end)")
    finally:
        if mongod is not None:
            mongod.stop()


async def idle(args: argparse.Namespace) -> None:
    """RSS of the server with N idle subscribers (no writes), for each N of `--idle`, in increasing order."""
    uri = os.environ.get("MONGODB_URI")
    mongod = None
    if uri is None:
        mongod = EmbeddedMongod(Path(tempfile.mkdtemp(prefix="bench-mongod-")), port=0)
        uri = mongod.start()
    steps = sorted(set(args.idle))
    env = {
        "MONGODB_URI": uri,
        "MONGODB_DB": f"bench_{uuid.uuid4().hex[:8]}",
        "LOG_LEVEL": "warning",
        "WS_MAX_CONNECTIONS": str(steps[-1] + 100),
    }
    try:
        with serve(env) as server:
            ws_url = server.url.replace("http", "ws", 1) + "/graphql"
            workflows = [f"bw{i}" for i in range(args.workflows)]
            stop = asyncio.Event()
            subscribers: list[Subscriber] = []
            runners: list[asyncio.Task[None]] = []
            previous: tuple[int, float] | None = None
            print("idle subscribers   server RSS   per subscriber since the previous step")
            for count in steps:
                batch = [
                    Subscriber(ws_url, workflows[(len(subscribers) + i) % len(workflows)])
                    for i in range(count - len(subscribers))
                ]
                before = sum(s.ended is None for s in subscribers)
                subscribers += batch
                started, connected = await connect_all(server.url, batch, stop, args.deadline, before)
                runners += started
                if not connected.startswith("connected"):
                    print(f"{count:16d}   {connected}", flush=True)
                await asyncio.sleep(3)  # settle
                rss = rss_mb(server.process.pid)
                per = (
                    "" if previous is None else f"{(rss - previous[1]) * 1024 / (count - previous[0]):.0f} KB"
                )
                print(f"{count:16d}   {rss:7.1f} MB   {per}", flush=True)
                previous = (count, rss)
            stop.set()
            for runner in runners:
                runner.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
        print(f"load average {load_average()}")
    finally:
        if mongod is not None:
            mongod.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--workflows", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0, help="mutations per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--queue", type=int, default=1000, help="SUBSCRIPTION_QUEUE_SIZE of the server")
    parser.add_argument("--soak", type=float, default=0, help="soak: run the writer this many seconds")
    parser.add_argument("--sample", type=float, default=30, help="soak: seconds between RSS samples")
    parser.add_argument(
        "--idle", type=int, nargs="*", default=[], help="idle subscriber counts to measure RSS at"
    )
    parser.add_argument(
        "--deadline", type=float, default=120, help="seconds the subscribers may take to register"
    )
    arguments = parser.parse_args()
    asyncio.run(idle(arguments) if arguments.idle else main(arguments))
    sys.exit(0)
