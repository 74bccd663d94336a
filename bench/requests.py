"""Request-path benchmark: the fixed cost of a GraphQL request against a bare ASGI app on the same stack.

    python -m bench.requests [--rounds 3] [--seconds 3] [--connections 1 8]

Two operations, each answered by two servers on the same uvicorn stack (uvloop, httptools, one process,
loopback, keep-alive):

- `typename`: `{ __typename }`; the floor is a bare ASGI app that reads the body and answers the very
  bytes this server answers;
- `lookup`: `agentTask(id:)` with five fields; the floor reads the body, parses it with orjson, does
  one `find_one` with PyMongo async and answers the same bytes, orjson-encoded.

The floor and `agent-tasks serve` are measured alternately, round by round (floor, server, floor,
server…), each round `--seconds` long, at each number of connections; the ratio is the server's
requests/s over the floor's, from the sums of all rounds. Beside it, the server CPU each request cost
(the process's user + system time over the round). The load comes from this process: one asyncio
protocol per connection sending the request again as soon as the answer is in (the client's own CPU
share is printed, so a client that saturates its core is seen). Targets (issue 20): typename ≥ 0.35×,
lookup ≥ 0.6× the floor's requests/s, at 1 and 8 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import AsyncMongoClient

from app.demo.documents import state_doc, write_documents
from app.mongo.embedded import EmbeddedMongod
from tests.support.servers import free_port, serve

ROOT = Path(__file__).resolve().parent.parent
TASK_ID = "bench_lookup"
TYPENAME = "{ __typename }"
LOOKUP = "query Lookup($id: ID!) { agentTask(id: $id) { id agentName status priority progressPercentage } }"
#: The lookup's fields, as the floor reads them from the document (GraphQL enums are upper case).
LOOKUP_FIELDS = ("agent_name", "status", "priority", "progress_percentage")


# ---- the floor: a bare ASGI app --------------------------------------------------------------------


def floor_app(uri: str, db_name: str, typename_body: bytes, content_type: bytes) -> Callable[..., Any]:
    """A bare ASGI app: `POST /typename` answers `typename_body`; `POST /lookup` parses the JSON body,
    runs one `find_one` and answers the document's five fields orjson-encoded, as the server does."""
    client: AsyncMongoClient[dict[str, Any]] | None = None
    headers = [(b"content-type", content_type)]

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    client = AsyncMongoClient(uri, tz_aware=True)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if client is not None:
                        await client.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/lookup":
            assert client is not None
            task_id = orjson.loads(body)["variables"]["id"]
            doc = await client[db_name].agent_task_states.find_one(
                {"_id": task_id}, dict.fromkeys(LOOKUP_FIELDS, 1)
            )
            assert doc is not None
            payload = orjson.dumps(
                {
                    "data": {
                        "agentTask": {
                            "id": doc["_id"],
                            "agentName": doc["agent_name"],
                            "status": doc["status"].upper(),
                            "priority": doc["priority"].upper(),
                            "progressPercentage": doc["progress_percentage"],
                        }
                    }
                }
            )
        else:
            payload = typename_body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*headers, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def run_floor(port: int, uri: str, db_name: str, typename_body: str, content_type: str) -> None:
    """The floor's process: uvicorn with the server's loop and HTTP protocol, one worker."""
    import uvicorn

    app = floor_app(uri, db_name, typename_body.encode(), content_type.encode())
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning")


@contextmanager
def floor_process(uri: str, db_name: str, typename_body: bytes, content_type: str) -> Any:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.requests",
            "--floor-serve",
            str(port),
            uri,
            db_name,
            typename_body.decode(),
            content_type,
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(f"http://127.0.0.1:{port}/typename", content=b"{}", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the floor app did not start") from None
                time.sleep(0.1)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


# ---- the load ---------------------------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One keep-alive connection sending `request` again as soon as its answer is complete."""

    def __init__(self, request: bytes, done: Callable[[], bool]) -> None:
        self.request = request
        self.done = done
        self.buffer = b""
        self.count = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            start = head.find(b"content-length:")
            if start < 0:
                raise RuntimeError(f"no content-length in {head!r}")
            length = int(head[start + 15 : head.find(b"\r\n", start) if b"\r\n" in head[start:] else None])
            if not head.startswith(b"http/1.1 200"):
                raise RuntimeError(f"unexpected answer {self.buffer[: head_end + 4 + length]!r}")
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            self.count += 1
            assert self.transport is not None
            if self.done():
                self.transport.close()
                return
            self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def http_request(url: str, path: str, body: bytes) -> bytes:
    host = url.removeprefix("http://")
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"accept: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    url: str, request: bytes, connections: int, seconds: float, pid: int
) -> tuple[int, float, float]:
    """(requests answered, server CPU seconds, client CPU share) for `seconds` of load."""
    loop = asyncio.get_running_loop()
    host, port = url.removeprefix("http://").split(":")
    deadline = [float("inf")]
    protocols = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(
            lambda: Connection(request, lambda: time.monotonic() >= deadline[0]), host, int(port)
        )
        protocols.append(protocol)
    # The connections were opened with one request each; count from a clean start.
    await asyncio.sleep(0.2)
    base = sum(p.count for p in protocols)
    cpu_before, client_before, started = cpu_seconds(pid), time.process_time(), time.monotonic()
    deadline[0] = started + seconds
    await asyncio.gather(*(p.closed for p in protocols))
    elapsed = time.monotonic() - started
    answered = sum(p.count for p in protocols) - base
    return answered, cpu_seconds(pid) - cpu_before, (time.process_time() - client_before) / elapsed


async def measure(
    targets: dict[str, tuple[str, int, dict[str, bytes]]], args: argparse.Namespace
) -> AsyncIterator[str]:
    for operation in ("typename", "lookup"):
        for connections in args.connections:
            totals = {name: [0, 0.0, 0.0, 0.0] for name in targets}  # requests, seconds, server cpu, client
            for _ in range(args.rounds):
                for name, (url, pid, requests) in targets.items():
                    answered, cpu, client = await load(
                        url, requests[operation], connections, args.seconds, pid
                    )
                    totals[name][0] += answered
                    totals[name][1] += args.seconds
                    totals[name][2] += cpu
                    totals[name][3] = max(totals[name][3], client)
            rate = {name: t[0] / t[1] for name, t in totals.items()}
            cpu_us = {name: t[2] / max(t[0], 1) * 1e6 for name, t in totals.items()}
            target = 0.35 if operation == "typename" else 0.6
            ratio = rate["server"] / rate["floor"]
            yield (
                f"{operation:9} {connections} conn   floor {rate['floor']:7.0f} req/s {cpu_us['floor']:6.0f} µs CPU"
                f"   server {rate['server']:7.0f} req/s {cpu_us['server']:6.0f} µs CPU"
                f"   ratio {ratio:.2f}× (target ≥ {target}×{', met' if ratio >= target else ', NOT met'})"
                f"   client CPU ≤ {max(t[3] for t in totals.values()):.0%}"
            )


async def main(args: argparse.Namespace) -> None:
    mongod = EmbeddedMongod(Path(tempfile.mkdtemp(prefix="bench-requests-")), port=0)
    uri = mongod.start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db_name = f"bench_{uuid.uuid4().hex[:8]}"
        docs: dict[str, list[dict[str, Any]]] = {
            "agent_task_states": [
                state_doc(TASK_ID, "behavior_task", "Agent0", "in_progress", workflow_id=None)
            ]
        }
        await write_documents(client[db_name], docs)
        env = {"MONGODB_URI": uri, "MONGODB_DB": db_name, "LOG_LEVEL": "warning"}
        typename_body = orjson.dumps({"query": TYPENAME})
        lookup_body = orjson.dumps({"query": LOOKUP, "variables": {"id": TASK_ID}})
        with serve(env) as server:
            http = httpx.AsyncClient(timeout=30)
            answer = await http.post(
                f"{server.url}/graphql", content=typename_body, headers={"content-type": "application/json"}
            )
            lookup = await http.post(
                f"{server.url}/graphql", content=lookup_body, headers={"content-type": "application/json"}
            )
            assert lookup.json()["data"]["agentTask"]["id"] == TASK_ID, lookup.text
            with floor_process(uri, db_name, answer.content, answer.headers["content-type"]) as (
                floor,
                floor_url,
            ):
                floor_lookup = await http.post(f"{floor_url}/lookup", content=lookup_body)
                await http.aclose()
                assert floor_lookup.content == lookup.content, (floor_lookup.content, lookup.content)
                targets = {
                    "floor": (
                        floor_url,
                        floor.pid,
                        {
                            "typename": http_request(floor_url, "/typename", typename_body),
                            "lookup": http_request(floor_url, "/lookup", lookup_body),
                        },
                    ),
                    "server": (
                        server.url,
                        server.process.pid,
                        {
                            "typename": http_request(server.url, "/graphql", typename_body),
                            "lookup": http_request(server.url, "/graphql", lookup_body),
                        },
                    ),
                }
                print(
                    f"{args.rounds} rounds of {args.seconds:g} s each, floor and server alternated;"
                    f" response bytes: typename {len(answer.content)}, lookup {len(lookup.content)}"
                )
                async for line in measure(targets, args):
                    print(line, flush=True)
    finally:
        await client.close()
        mongod.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--floor-serve":
        port, uri, db_name, body, content_type = sys.argv[2:7]
        run_floor(int(port), uri, db_name, body, content_type)
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    import uvloop

    uvloop.run(main(parser.parse_args()))
