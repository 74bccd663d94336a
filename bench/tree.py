"""Tree benchmark: the whole-tree GraphQL query against the raw-driver floor, and against walking the same
tree through the REST routes.

    python -m bench.tree [--sub-tasks 20] [--behaviors 25] [--repeat 30]

- floors: the same documents fetched with the same batched `find`s in PyMongo async, JSON-encoded with
  orjson (the fair floor: the server's own driver, a fast encoder) and with `bson.json_util` (the old one,
  about twice as slow, kept beside it for comparison with earlier figures);
- graphql: `queries/WorkflowTree.graphql`, with every output, state, dependency and the progress roll-up,
  both in-process (the app over ASGI, comparable with the floor) and over HTTP to a real
  `agent-tasks serve` process (uvicorn, loopback, keep-alive, comparable with the REST walk);
- rest: the same tree walked through seed 002's REST routes of that server (one GET per document, as a
  REST client must).

Prints the median of `--repeat` runs of each and the ratios, and for the server process over HTTP its CPU
per query and per task and its peak RSS growth against the response's size. The targets
(docs/ARCHITECTURE.md, "Speed"; issue 20): graphql within 3× the fair floor in-process and 3.5× over
HTTP, at most 60 µs of server CPU per task on a 1×100×100 tree with peak RSS growth at most 3× the
response, and at least 20× faster than the REST walk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from bson import json_util
from pymongo import AsyncMongoClient

from app.cli import freeze_start_up_heap
from app.demo.documents import synthetic_tree, write_documents
from app.mongo.embedded import EmbeddedMongod
from app.server import create_app
from app.settings import Settings
from tests.support.servers import serve

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = "bench_tree"


#: This process's CPU per run (ms, median) of the last `timed` call: on a loaded machine wall time counts
#: the waits for a core too, and the in-process query and the floor both run in this process.
last_cpu_ms = 0.0


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """The median wall time of `repeat` runs after a warm-up, in ms (the median CPU in `last_cpu_ms`)."""
    global last_cpu_ms
    await fn()  # warm-up
    runs, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        await fn()
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    last_cpu_ms = statistics.median(cpu) * 1000
    return statistics.median(runs) * 1000


async def main(args: argparse.Namespace) -> None:
    mongod = EmbeddedMongod(Path(tempfile.mkdtemp(prefix="bench-tree-")), port=0)
    uri = mongod.start()
    try:
        db_name = f"bench_{uuid.uuid4().hex[:8]}"
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        env = {"MONGODB_URI": uri, "MONGODB_DB": db_name, "LOG_LEVEL": "warning"}
        with serve(env) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                db = client[db_name]
                await write_documents(db, synthetic_tree(WORKFLOW, args.sub_tasks, args.behaviors))
                query = (ROOT / "queries" / "WorkflowTree.graphql").read_text()

                async def fetch() -> dict[str, Any]:
                    meta = await db.meta_workflow_tasks.find_one({"_id": WORKFLOW})
                    assert meta is not None
                    ids = [WORKFLOW]
                    subs = [d async for d in db.sub_tasks.find({"_id": {"$in": meta["sub_task_ids"]}})]
                    beh_ids = [b for s in subs for b in s["behavior_task_ids"]]
                    behaviors = [d async for d in db.behavior_tasks.find({"_id": {"$in": beh_ids}})]
                    ids += [s["_id"] for s in subs]
                    found: dict[str, list[dict[str, Any]]] = {}
                    for name, keys in (
                        ("task_outputs", [WORKFLOW]),
                        ("sub_task_outputs", [s["_id"] for s in subs]),
                        ("behavior_task_outputs", beh_ids),
                        ("agent_task_states", [WORKFLOW]),
                        ("agent_task_states", [s["_id"] for s in subs]),
                        ("agent_task_states", beh_ids),
                    ):
                        found.setdefault(name, []).extend(
                            [d async for d in db[name].find({"_id": {"$in": keys}})]
                        )
                    return {"meta": meta, "subs": subs, "behaviors": behaviors, **found}

                async def floor() -> bytes:
                    return orjson.dumps(await fetch())

                async def old_floor() -> str:
                    return json_util.dumps(await fetch())

                async def graphql() -> dict[str, Any]:
                    response = await http.post(
                        "/graphql", json={"query": query, "variables": {"id": WORKFLOW}}
                    )
                    body = response.json()
                    assert "errors" not in body, body["errors"]
                    return body

                async def rest() -> list[Any]:
                    async def get(path: str) -> Any:
                        response = await http.get(path)
                        return response.json() if response.status_code == 200 else None

                    meta = await get(f"/meta-tasks/{WORKFLOW}")
                    docs = [
                        meta,
                        await get(f"/task-outputs/{WORKFLOW}"),
                        await get(f"/agent-tasks/{WORKFLOW}"),
                    ]
                    for sub_id in meta["sub_task_ids"]:
                        sub = await get(f"/sub-tasks/{sub_id}")
                        docs += [
                            sub,
                            await get(f"/sub-task-outputs/{sub_id}"),
                            await get(f"/agent-tasks/{sub_id}"),
                        ]
                        for beh_id in sub["behavior_task_ids"]:
                            docs += [
                                await get(f"/behavior-tasks/{beh_id}"),
                                await get(f"/behavior-task-outputs/{beh_id}"),
                                await get(f"/agent-tasks/{beh_id}"),
                            ]
                    return docs

                # `_env_file` is pydantic-settings' own init argument, which mypy does not see.
                settings = Settings(_env_file=None, mongodb_uri=uri, mongodb_db=db_name)  # type: ignore[call-arg]
                app = create_app(settings)
                async with (
                    app.router.lifespan_context(app),
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
                    ) as local,
                ):
                    freeze_start_up_heap()  # as `agent-tasks serve` does once its app is built

                    async def graphql_in_process() -> Any:
                        body = {"query": query, "variables": {"id": WORKFLOW}}
                        return (await local.post("/graphql", json=body)).json()

                    in_process_ms = await timed(graphql_in_process, args.repeat)
                    in_process_cpu_ms = last_cpu_ms
                pid = server.process.pid
                rss_before = _status_kib(pid, "VmRSS")
                size = len(json.dumps(await graphql()))
                floor_ms = await timed(floor, args.repeat)
                floor_cpu_ms = last_cpu_ms
                old_floor_ms = await timed(old_floor, args.repeat)
                cpu_before = _cpu_seconds(pid)
                graphql_ms = await timed(graphql, args.repeat)
                cpu_ms = (_cpu_seconds(pid) - cpu_before) / (args.repeat + 1) * 1000
                rss_growth = (_status_kib(pid, "VmHWM") - rss_before) * 1024
                has_rest = (
                    not args.skip_rest and (await http.get(f"/meta-tasks/{WORKFLOW}")).status_code == 200
                )
                rest_ms = await timed(rest, max(3, args.repeat // 10)) if has_rest else float("nan")
                concurrent_lines = []
                for servers in (1, 2) if args.clients else ():
                    with contextlib.ExitStack() as more:
                        urls = [server.url] + [more.enter_context(serve(env)).url for _ in range(servers - 1)]
                        concurrent_lines.append(
                            await concurrent(urls, query, args.clients, args.seconds, servers)
                        )
        tasks = 1 + args.sub_tasks * (1 + args.behaviors)
        print(
            f"tree                   1 meta × {args.sub_tasks} sub-tasks × {args.behaviors} behavior tasks = {tasks} tasks, each with output and state ({size / 1024:.0f} KiB of JSON)"
        )
        print(f"fair floor             {floor_ms:.1f} ms (9 batched finds, PyMongo async, orjson)")
        print(f"old floor              {old_floor_ms:.1f} ms (the same finds, bson.json_util)")
        print(
            f"graphql, in-process    {in_process_ms:.1f} ms   ({in_process_ms / floor_ms:.1f}× the fair floor, target ≤ 3×;"
            f" {in_process_ms / old_floor_ms:.1f}× the old one)"
        )
        print(
            f"  CPU in this process  floor {floor_cpu_ms:.1f} ms, graphql in-process {in_process_cpu_ms:.1f} ms"
            f" ({in_process_cpu_ms / floor_cpu_ms:.1f}×; CPU alone: the floor also waits on mongod, a loaded"
            " machine adds waits for a core)"
        )
        print(
            f"graphql, over HTTP     {graphql_ms:.1f} ms   ({graphql_ms / floor_ms:.1f}× the fair floor, target ≤ 3.5×;"
            " a real uvicorn process on loopback)"
        )
        print(
            f"server CPU, over HTTP  {cpu_ms:.1f} ms per query, {cpu_ms * 1000 / tasks:.0f} µs per task"
            f" (target ≤ 60 µs at 1×100×100); peak RSS growth {rss_growth / 2**20:.1f} MiB"
            f" = {rss_growth / size:.1f}× the response (target ≤ 3×)"
        )
        if has_rest:
            print(
                f"rest walk, over HTTP   {rest_ms:.1f} ms   (graphql is {rest_ms / graphql_ms:.0f}× faster; target ≥ 20×)"
            )
        for line in concurrent_lines:
            print(line)
        await client.close()
    finally:
        mongod.stop()


async def concurrent(urls: list[str], query: str, clients: int, seconds: float, servers: int) -> str:
    """`clients` clients asking for the tree back to back for `seconds` (client i on server i mod n): the
    trees answered per second, latencies, and the answers that were not the tree (errors, timeouts)."""
    body = {"query": query, "variables": {"id": WORKFLOW}}
    latencies: list[float] = []
    failed = 0
    deadline = time.monotonic() + seconds

    async def one_client(url: str) -> None:
        nonlocal failed
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = await http.post("/graphql", json=body)
                latencies.append(time.perf_counter() - start)
                # The body is not parsed (7 MB at 10,101 tasks): errors come after `data`, at its end.
                if response.status_code != 200 or b'"errors":' in response.content[-4096:]:
                    failed += 1

    started = time.monotonic()
    await asyncio.gather(*(one_client(urls[i % len(urls)]) for i in range(clients)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return (
        f"{clients} clients, {servers} server process{'es' if servers > 1 else ''}: "
        f"{(len(latencies) - failed) / elapsed:.2f} trees/s answered, {failed} not (errors, deadline);"
        f" latency p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, name: str) -> int:
    """A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`: the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise KeyError(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sub-tasks", type=int, default=20)
    parser.add_argument("--behaviors", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--skip-rest", action="store_true", help="leave out the REST walk (long on big trees)"
    )
    parser.add_argument(
        "--clients", type=int, default=0, help="then N concurrent clients, on one and on two server processes"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the concurrent clients run")
    asyncio.run(main(parser.parse_args()))
