"""Starting real `agent-tasks serve` processes (uvicorn) for tests that need a server over the network.

`serve` starts one for a `with` block; `ServerGroup` (the `module_servers` fixture of conftest.py) starts
the ones a test module shares, each on a database of its own unless told otherwise: a module states only
how its servers' settings differ from the defaults.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str
    # What the process printed so far, read by a thread (so a full pipe never blocks the server).
    output: list[str] = field(default_factory=list)
    # The database it serves (MONGODB_DB), for the tests that read it directly.
    db_name: str = ""

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a process manager would send; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


class _PortTaken(Exception):
    """The port picked for the server was taken before the server could bind it."""


# The server's one line when its HTTP port is taken (it then exits with 1).
BIND_FAILED = "is already in use (another agent-tasks server?)"


def _start(env: Mapping[str, str], args: tuple[str, ...], timeout: float, port: int | None) -> ServerProcess:
    """Start `agent-tasks serve` on `port` (default: a free one) and wait until /healthz answers."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")}
    # Text lines (the tests grep them) unless a test asks for JSON (LOG_FORMAT=auto would pick JSON: the
    # output is a pipe).
    full_env.update({"PORT": str(port), "LOG_LEVEL": "warning", "LOG_FORMAT": "text", **env})
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", db_name=full_env.get("MONGODB_DB", ""))
    drain = threading.Thread(target=server._drain, name="server-output", daemon=True)
    drain.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                drain.join(5)
                if any(BIND_FAILED in line for line in server.output):
                    raise _PortTaken("".join(server.output))
                raise RuntimeError(f"server exited with {process.returncode}: {''.join(server.output)}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in time")
            time.sleep(0.1)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise


@contextmanager
def serve(
    env: Mapping[str, str], *args: str, timeout: float = 60, port: int | None = None
) -> Iterator[ServerProcess]:
    """Run `agent-tasks serve` on a free port until /healthz answers; stop it afterwards.

    The port is free when picked but the process binds it a second or so later, when it has started:
    with the suite on several workers, another process may take it in between, so a lost race is
    retried on a new port. With `port` given (a restart on the port of a server just stopped), no retry.
    """
    for attempt in range(3):
        try:
            server = _start(env, args, timeout, port)
            break
        except _PortTaken:
            if attempt == 2 or port is not None:
                raise
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@contextmanager
def serve_fresh(mongo_uri: str, prefix: str, env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    """`serve` on a database of its own (named `<prefix>_<random>`), dropped afterwards."""
    group = ServerGroup(mongo_uri)
    try:
        yield group.start(prefix, env)
    finally:
        group.close()


class ServerGroup:
    """Server processes that live until `close` (a test module's, through the `module_servers` fixture:
    start-up is the suite's main cost, so a module's tests share them), and their databases, dropped once
    every one of them has stopped."""

    def __init__(self, mongo_uri: str) -> None:
        self.mongo_uri = mongo_uri
        self._stack = ExitStack()
        self._databases: set[str] = set()

    def start(
        self, prefix: str, env: Mapping[str, str] | None = None, *args: str, db_name: str | None = None
    ) -> ServerProcess:
        """`agent-tasks serve *args` with `env` over the defaults, on database `db_name` (shared with the
        servers already started on it) or else on a new one named `<prefix>_<random>`."""
        name = db_name or f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._databases.add(name)
        return self._stack.enter_context(
            serve({"MONGODB_URI": self.mongo_uri, "MONGODB_DB": name, **(env or {})}, *args)
        )

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            mongo: MongoClient[dict[str, object]] = MongoClient(self.mongo_uri)
            with mongo:
                for name in self._databases:
                    mongo.drop_database(name)
