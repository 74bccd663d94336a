"""Tracing overhead: `reportProgress` throughput with tracing on, off, and without the tracing middleware.

    python -m bench.tracing [--clients 4] [--seconds 8] [--warmup 2] [--rounds 3] [--json]

One embedded mongod and three server processes (uvicorn, 127.0.0.1, ports 18300-18399; each on a database
of its own, so no process's event hub works for another's writes), built by this module
(`--serve`) with the app's own `create_app`:

- **on**: tracing on at 100 % sampling (the SDK's default sampler; clients send no `traceparent`, so
  every request is a sampled root), every span exported to the SDK's `InMemorySpanExporter` through its
  `BatchSpanProcessor`, as OTLP would be (the exporter is emptied every second so memory stays flat):
  a span per request, per GraphQL operation and per MongoDB command;
- **off**: the app as shipped with no `OTEL_*` variable (the middleware only looks up `traceparent`);
- **on-no-mongo**: "on" with `TRACE_MONGODB_COMMANDS=false` (request and operation spans only);
- **bare**: "off" with the tracing middleware removed from the app's middleware list: the floor, the
  app as it was before tracing (a `reportProgress` stores no trace context).

`--clients` agents (own HTTP client, own started task) send `reportProgress` back to back for
`--seconds` after `--warmup`, against one server at a time; the modes run in alternating order round
after round (bare, off, on, on-no-mongo; then the reverse; …), `--rounds` times each, so drift in the machine's
load weighs on all three alike. Reported: transitions/s and p50/p99 per point, and the ratios of the
means (on ÷ bare, off ÷ bare). Targets (issue 23): on ≥ 0.90 × off; off indistinguishable from bare.
Read the figures beside the load average printed with them: the machine is small and shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from app.mongo.embedded import EmbeddedMongod
from bench.writes import Point, Processes, Server, load_average, log, progress_point
from tests.support.servers import ROOT

#: The ports this benchmark's processes listen on (mongod and the servers): the first free ones here.
PORTS = range(18300, 18400)


def port_in_range(taken: set[int] | None = None) -> int:
    """A free port of `PORTS` (not in `taken`)."""
    for port in PORTS:
        if taken and port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def start_mongod(procs: Processes, taken: set[int]) -> str:
    """The embedded mongod (a one-node replica set) on a port of `PORTS`."""
    port = port_in_range(taken)
    taken.add(port)
    procs.mongod = EmbeddedMongod(procs.workdir / "mongod", port=port)
    return procs.mongod.start()


MODES = ("bare", "off", "on", "on-no-mongo")


def serve(mode: str, port: int) -> None:
    """The `--serve` child: the app in `mode` on 127.0.0.1:`port` until SIGTERM."""
    import uvicorn

    from app.server import create_app
    from app.settings import Settings
    from app.tracing import TracingMiddleware

    provider = None
    if mode.startswith("on"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter))

        def empty() -> None:
            while True:
                time.sleep(1)
                exporter.clear()

        threading.Thread(target=empty, daemon=True).start()
    app = create_app(Settings(trace_mongodb_commands=mode == "on"), tracer_provider=provider)
    if mode == "bare":
        app.user_middleware = [
            m for m in app.user_middleware if getattr(m, "cls", None) is not TracingMiddleware
        ]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start(
    procs: Processes, mode: str, uri: str, db_name: str, taken: set[int], timeout: float = 60
) -> Server:
    port = port_in_range(taken)
    taken.add(port)
    log_path = procs.workdir / f"server-{mode}.log"
    env = {"MONGODB_URI": uri, "MONGODB_DB": db_name, "PATH": "/usr/bin:/bin"}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.tracing", "--serve", mode, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    procs.servers.append(server)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{mode} server exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1, trust_env=False).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mode} server did not become healthy in {timeout:.0f} s")
        time.sleep(0.1)


async def run(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    out = sys.stderr if args.json else sys.stdout
    log(f"load average {load_average()}; starting mongod and three servers …")
    taken: set[int] = set()
    uri = start_mongod(procs, taken)
    run_id = uuid.uuid4().hex[:8]
    servers = {mode: start(procs, mode, uri, f"bench_tracing_{mode}_{run_id}", taken) for mode in MODES}
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True, appname="bench-tracing")
    points: dict[str, list[Point]] = {mode: [] for mode in MODES}
    try:
        for round_ in range(args.rounds):
            order = MODES if round_ % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                server = servers[mode]
                log(f"round {round_ + 1}: tracing {mode}, {args.clients} clients …")
                point = await progress_point(
                    [server.url],
                    args.clients,
                    f"{run_id}-{mode}",
                    seconds=args.seconds,
                    warmup=args.warmup,
                    mongo=mongo,
                    server_pids=[server.process.pid],
                    round_=round_ + 1,
                )
                points[mode].append(point)
                print(
                    f"round {round_ + 1} {mode:>11}: {point.rate:8.1f} transitions/s  p50 {point.p50_ms:6.1f} ms"
                    f"  p99 {point.p99_ms:6.1f} ms  errors {point.errors['graphql_errors']}"
                    f"/{point.errors['error_results']}/{point.errors['http_failures']}"
                    f"  server CPU {point.cpu_ms_per_op.get('servers', float('nan')):.2f} ms/op"
                    f"  load {point.load_average}",
                    file=out,
                    flush=True,
                )
    finally:
        await mongo.close()
    means = {mode: statistics.mean(p.rate for p in points[mode]) for mode in MODES}
    p99 = {mode: statistics.mean(p.p99_ms for p in points[mode]) for mode in MODES}
    cpu = {mode: statistics.mean(p.cpu_ms_per_op.get("servers", 0.0) for p in points[mode]) for mode in MODES}
    summary = {
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "mean_rate": means,
        "server_cpu_ms_per_op": cpu,
        "mean_p99_ms": p99,
        "on_vs_off": means["on"] / means["off"],
        "on_no_mongo_vs_off": means["on-no-mongo"] / means["off"],
        "on_vs_bare": means["on"] / means["bare"],
        "off_vs_bare": means["off"] / means["bare"],
        "load_average": load_average(),
        "points": {mode: [p.rate for p in points[mode]] for mode in MODES},
    }
    print(
        f"\nmeans: bare {means['bare']:.1f}/s, off {means['off']:.1f}/s, on {means['on']:.1f}/s,"
        f" on-no-mongo {means['on-no-mongo']:.1f}/s; on/off {summary['on_vs_off']:.3f},"
        f" on-no-mongo/off {summary['on_no_mongo_vs_off']:.3f}, on/bare {summary['on_vs_bare']:.3f},"
        f" off/bare {summary['off_vs_bare']:.3f}; server CPU ms/op "
        + ", ".join(f"{m} {cpu[m]:.2f}" for m in MODES)
        + f"; load {summary['load_average']}",
        file=out,
    )
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as workdir:
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
