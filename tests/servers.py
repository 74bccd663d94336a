"""Starting real `agent-tasks serve` processes (uvicorn) for tests that need a server over the network."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a process manager would send; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@contextmanager
def serve(env: Mapping[str, str], *args: str, timeout: float = 60) -> Iterator[ServerProcess]:
    """Run `agent-tasks serve` on a free port until /healthz answers; stop it afterwards."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")}
    full_env.update({"PORT": str(port), "LOG_LEVEL": "warning", **env})
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = ServerProcess(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}: {process.stdout.read()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in time")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
