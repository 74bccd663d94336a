"""Starting and stopping `agent-tasks serve` as real processes: every start-up failure exits non-zero
within a bound with one line saying what to do; SIGTERM ends SSE and WebSocket subscribers and exits 0
within the grace period."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from app.mongo.embedded import find_mongod_binary
from tests.support.graphql import wait_for_subscribers
from tests.support.servers import BIND_FAILED, ROOT, free_port, serve
from tests.support.wsclient import GraphQLWebSocket

EVENTS = 'subscription($w: ID) { taskEvents(workflowId: $w, after: "HEAD") { cursor type } }'


@dataclass
class Run:
    code: int
    lines: list[str]
    seconds: float


def run_cli(tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 30) -> Run:
    """`agent-tasks serve` (or `args`) to its end; its output lines (stdout and stderr) and duration."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")}
    # Never the worktree's .data, nor the default ports, whatever the case under test starts.
    full_env.update({"DATA_DIR": str(tmp_path / "data"), "EMBEDDED_MONGO_PORT": "0", "PORT": "0", **env})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *(args or ("serve",))],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return Run(done.returncode, done.stdout.strip().splitlines(), time.monotonic() - started)


def one_line(run: Run) -> str:
    assert len(run.lines) == 1, run.lines
    assert run.lines[0].startswith("agent-tasks: "), run.lines
    return run.lines[0]


# ----------------------------------------------------------------------------------------- start-up


def test_taken_http_port_names_port_and_starts_nothing(tmp_path: Path, mongo_uri: str) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        # With MONGODB_URI set (it used to keep running), with the embedded mongod, and with --port.
        with_uri = run_cli(tmp_path, {"MONGODB_URI": mongo_uri, "PORT": str(port)})
        embedded = run_cli(tmp_path, {"PORT": str(port)})
        option = run_cli(tmp_path, {"MONGODB_URI": mongo_uri}, "serve", "--port", str(port))
    for run in (with_uri, embedded, option):
        assert run.code == 1, run
        line = one_line(run)
        assert f"port {port} on 127.0.0.1 {BIND_FAILED}" in line
        assert "PORT" in line and "--port" in line
        assert "GraphiQL" not in line
    # The port is checked first: no embedded mongod was started for nothing.
    assert not (tmp_path / "data").exists()


def test_unreachable_mongodb_fails_within_the_startup_timeout(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    run = run_cli(
        tmp_path, {"MONGODB_URI": f"mongodb://127.0.0.1:{port}/", "MONGODB_STARTUP_TIMEOUT_SECONDS": "1"}
    )
    assert run.code == 1
    # It waited its 1 s (the message names it), not the driver's own 30 s: said by the message, not timed.
    assert run.seconds >= 1, run
    line = one_line(run)
    assert "did not answer within 1 s" in line and f"127.0.0.1:{port}" in line
    assert "MONGODB_URI" in line and "MONGODB_STARTUP_TIMEOUT_SECONDS" in line


def test_invalid_mongodb_uri_is_one_sentence(tmp_path: Path) -> None:
    run = run_cli(tmp_path, {"MONGODB_URI": "postgres://localhost/db"})
    assert run.code == 1
    assert "MONGODB_URI is not a usable MongoDB connection string" in one_line(run)


@pytest.fixture(scope="module")
def standalone_mongod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A mongod that is not a replica set member (what `mongod` alone starts)."""
    data = tmp_path_factory.mktemp("standalone")
    for _ in range(3):
        port = free_port()
        args = ["--dbpath", str(data), "--port", str(port), "--bind_ip", "127.0.0.1", "--nounixsocket"]
        process = subprocess.Popen(
            [str(find_mongod_binary()), *args, "--wiredTigerCacheSizeGB", "0.25"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        if process.poll() is None:
            break
    else:
        raise RuntimeError("the standalone mongod did not start")
    try:
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(20)


def test_standalone_mongod_is_refused_with_what_to_do(tmp_path: Path, standalone_mongod: str) -> None:
    run = run_cli(tmp_path, {"MONGODB_URI": standalone_mongod})
    assert run.code == 1, run
    line = one_line(run)
    assert "is a standalone server, but agent-tasks needs a replica set" in line and "--replSet" in line


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"LOG_LEVEL": "bogus"}, (), "LOG_LEVEL=bogus is invalid: input should be 'critical', 'error',"),
        ({"PORT": "99999"}, (), "PORT=99999 is invalid: input should be less than or equal to 65535"),
        ({"PORT": "http"}, (), "PORT=http is invalid: input should be a valid integer"),
        ({}, ("--port", "70000"), "--port 70000 is invalid: input should be less than or equal to 65535"),
        ({"SHUTDOWN_GRACE_SECONDS": "-1"}, (), "SHUTDOWN_GRACE_SECONDS=-1 is invalid"),
    ],
)
def test_invalid_settings_and_options_are_one_sentence(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], expected: str
) -> None:
    run = run_cli(tmp_path, env, "serve", *args)
    assert run.code == 2
    assert expected in one_line(run)
    assert not (tmp_path / "data").exists()


def test_unknown_option_is_one_line(tmp_path: Path) -> None:
    run = run_cli(tmp_path, {}, "serve", "--prot", "8000")
    assert run.code == 2
    assert run.lines == ["agent-tasks: unrecognized arguments: --prot 8000 (see agent-tasks --help)"]


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (`SigCgt` in /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def test_sigterm_during_startup_exits_0_at_once(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")}
    env.update(
        {
            "MONGODB_URI": f"mongodb://127.0.0.1:{port}/",
            "PORT": "0",
            "DATA_DIR": str(tmp_path),
            # Longer than any wait below: an exit 0 can only be the signal's doing, not start-up giving up.
            "MONGODB_STARTUP_TIMEOUT_SECONDS": "600",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    code = None
    try:
        # SIGTERM once the server handles it (its bit in the kernel's mask of caught signals), not after a
        # fixed sleep: on a loaded machine the process may still be importing after seconds.
        deadline = time.monotonic() + 120
        while not catches_sigterm(process.pid) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        code = process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        output = process.stdout.read()
    assert code == 0, output
    assert "Traceback" not in output, output


def test_empty_mongodb_uri_means_the_embedded_mongod(tmp_path: Path) -> None:
    env = {"MONGODB_URI": "", "DATA_DIR": str(tmp_path / "data"), "EMBEDDED_MONGO_PORT": "0"}
    with serve(env) as server:
        assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
        assert server.stop() == 0
    output = "".join(server.output)
    assert "embedded MongoDB ready" in output
    # "GraphiQL at" comes once the server listens, with the port it listens on
    assert f"agent-tasks: GraphiQL at {server.url}/graphql" in output
    assert (tmp_path / "data" / "db" / "mongod.lock").read_text().strip() == ""  # stopped cleanly


# ----------------------------------------------------------------------------------------- stopping


async def _sse_until_complete(url: str, wid: str, opened: asyncio.Event) -> list[str]:
    """Follow an SSE subscription; the event names received until the stream ends."""
    body = {"query": EVENTS, "variables": {"w": wid}}
    names: list[str] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        http.stream("POST", "/graphql", json=body, headers={"Accept": "text/event-stream"}) as response,
    ):
        assert response.status_code == 200
        opened.set()
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                names.append(line[6:].strip())
    return names


async def test_sigterm_ends_sse_and_websocket_subscribers_and_exits_0(mongo_uri: str) -> None:
    grace = 5.0
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"stop_{uuid.uuid4().hex[:12]}"}
    with serve({**env, "SHUTDOWN_GRACE_SECONDS": str(grace)}) as server:
        wid = f"wf_{uuid.uuid4().hex[:8]}"
        ws = await GraphQLWebSocket.open(server.url)
        op = await ws.subscribe(EVENTS, {"w": wid})
        idle = await GraphQLWebSocket.open(server.url)  # a connection without any subscription
        opened = asyncio.Event()
        sse = asyncio.create_task(_sse_until_complete(server.url, wid, opened))
        await asyncio.wait_for(opened.wait(), 10)
        await wait_for_subscribers(server.url, 2)

        server.process.send_signal(signal.SIGTERM)
        # The WebSocket subscription completes, then the connection is closed with 1001 "going away".
        assert await ws.receive(wait=grace) == {"id": op, "type": "complete"}
        for connection in (ws, idle):
            with pytest.raises(ConnectionClosed) as closed:
                await connection.receive(wait=grace)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            assert closed.value.rcvd.reason == "server shutting down"
        # The SSE stream ends with `complete` (a finished stream, not a network failure).
        names = await asyncio.wait_for(sse, grace)
        assert names[-1] == "complete", names
        code = await asyncio.to_thread(server.process.wait, grace + 5)
    assert code == 0
    # Nothing was left for the grace period to cut off: uvicorn says so when it has to (below), not a clock.
    output = "".join(server.output)
    assert "Traceback" not in output and "timeout graceful shutdown exceeded" not in output, output


def test_requests_still_running_are_cut_off_after_the_grace_period(mongo_uri: str) -> None:
    env = {
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": f"stop_{uuid.uuid4().hex[:12]}",
        "SHUTDOWN_GRACE_SECONDS": "1",
    }
    with serve(env) as server:
        port = int(server.url.rsplit(":", 1)[1])
        # A request whose body never finishes arriving: it would hold the server up for ever.
        with socket.create_connection(("127.0.0.1", port)) as stuck:
            stuck.sendall(b"POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n")
            stuck.sendall(b'Content-Length: 100\r\n\r\n{"query":')
            time.sleep(0.3)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            code = server.process.wait(10)
            elapsed = time.monotonic() - started
            stuck.settimeout(5)
            answer = stuck.recv(1000)
    assert code == 0
    assert elapsed >= 1, elapsed  # it waited the grace period (that it then cut off: the log line below)
    assert answer.startswith(b"HTTP/1.1 500 ")  # uvicorn's answer to a request it had to cancel
    output = "".join(server.output)
    assert "timeout graceful shutdown exceeded" in output and "Traceback" not in output, output
