"""Several server processes on one port (`agent-tasks serve --workers N`): the parent that supervises them.

The parent has already bound the HTTP port and, without `MONGODB_URI`, started the embedded mongod (once:
the workers are handed its URI). It starts N workers with multiprocessing's `spawn` (a fresh interpreter
each: no event loop, client or lock of the parent's is ever copied into a child), hands each the listening
socket, and each runs the same one-process server as `--workers 1` over it: the kernel gives every new
connection to one of the processes waiting in `accept`. uvicorn's own supervisor (`uvicorn.run(...,
workers=N)`) was not used: it builds a plain `uvicorn.Server` from an import string in each child, which
would drop what `agent-tasks serve` adds around it (the URL-limited HTTP protocol, the open-resources-then-
listen start-up, subscriptions ended first at shutdown).

Each worker opens its own resources (MongoDB clients, event hub, expiry sweeper, presence registration):
those are already safe with several processes on one database (docs/OPERATIONS.md).

Invariants:
- Workers MUST ignore SIGINT. Ctrl-C in a terminal reaches every process of its group; the parent alone
  acts on it and sends each worker SIGTERM once, so a worker never takes the terminal's signal as a second,
  forcing one.
- A worker that exits before saying it is ready failed to start (MongoDB unusable, …; it printed why):
  the parent MUST stop the others and exit with that code, never start it again (that would loop).
- A worker MUST stop (gracefully, as on SIGTERM) when the parent is gone, even killed with SIGKILL: else
  it would go on serving on the port, unsupervised. Each worker holds one end of a socket pair whose other
  end only the parent holds; the kernel closes it when the parent dies, and the worker's watcher thread
  reads the end of file (`watch_parent`).
- A worker that dies after it was ready is replaced (a warning says which and how); its live gauges are
  dropped from the metrics directory (`mark_process_dead`).
- The metrics directory (`PROMETHEUS_MULTIPROC_DIR`) MUST hold no file of an earlier run when the first
  worker starts; one the parent created is removed when it exits.

Tuning: how long a worker may take to stop after SIGTERM before it is killed is `stop_seconds` (the
caller passes its shutdown grace plus time to close the resources).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

logger = logging.getLogger("agent_tasks")

#: The variable prometheus_client reads (in each worker, when it is imported) to keep its values in files.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: How often the parent looks at its stop flag while waiting for its workers.
_POLL_SECONDS = 0.5

#: A worker's entry point: `target(sock, channel, *args)`; it calls `watch_parent(channel)` first, sends its
#: pid on `channel` once it serves, and exits with its exit code.
WorkerTarget = Callable[..., None]


@contextlib.contextmanager
def metrics_directory() -> Iterator[Path]:
    """The directory the workers' Prometheus values are kept in, set in the environment they inherit.

    `PROMETHEUS_MULTIPROC_DIR` when the operator set it (its `*.db` files are removed first: values of an
    earlier run would be added to this one's), else a new temporary directory, removed afterwards."""
    given = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="agent-tasks-metrics-"))
    os.environ[MULTIPROC_DIR_VARIABLE] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_DIR_VARIABLE, None)
        shutil.rmtree(path, ignore_errors=True)


class _Worker:
    def __init__(
        self, context: Any, target: WorkerTarget, sock: socket.socket, args: tuple[Any, ...]
    ) -> None:
        # Both ways: the worker says it is ready; the parent's end closing says the parent is gone.
        self.ready_reader, channel = context.Pipe(duplex=True)
        self.process: BaseProcess = context.Process(
            target=target, args=(sock, channel, *args), name="agent-tasks-worker"
        )
        self.process.start()
        channel.close()  # the child holds its copy
        self.ready = False

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


def supervise(
    count: int,
    target: WorkerTarget,
    sock: socket.socket,
    args: tuple[Any, ...],
    *,
    on_ready: Callable[[list[int]], None],
    stop_seconds: float,
) -> int:
    """Run `count` workers until SIGTERM or SIGINT, then stop them all; the exit code (0 when stopped by a
    signal, a failed worker's code when one could not start). `on_ready(pids)` runs once, when every
    worker serves."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            print("agent-tasks: already stopping (each worker drains, then stops)", file=sys.stderr)
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in _SIGNALS}
    # Workers inherit an ignored SIGINT (Python leaves it ignored at start-up): see the invariants.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    workers: list[_Worker] = []
    code = 0
    try:
        workers = [_Worker(context, target, sock, args) for _ in range(count)]
        signal.signal(signal.SIGINT, stop)
        announced = False
        while not stopping:
            by_sentinel = {w.process.sentinel: w for w in workers}
            by_reader = {w.ready_reader: w for w in workers if not w.ready}
            for event in wait([*by_sentinel, *by_reader], timeout=_POLL_SECONDS):
                if isinstance(event, Connection) and event in by_reader:
                    worker = by_reader[event]
                    with contextlib.suppress(EOFError, OSError):  # EOF: it exited (its sentinel says so)
                        event.recv()
                        worker.ready = True
                elif isinstance(event, int) and event in by_sentinel:
                    worker = by_sentinel[event]
                    worker.process.join()
                    exit_code = worker.process.exitcode
                    if stopping:
                        continue
                    if not worker.ready:
                        code = exit_code if exit_code else 1
                        stopping = True
                        break
                    print(
                        f"agent-tasks: worker {worker.pid} exited ({_how(exit_code)}); starting another",
                        file=sys.stderr,
                        flush=True,
                    )
                    _mark_dead(worker.pid)
                    worker.ready_reader.close()
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    workers[workers.index(worker)] = _Worker(context, target, sock, args)
                    signal.signal(signal.SIGINT, stop)
            if not announced and all(w.ready for w in workers):
                announced = True
                on_ready([w.pid for w in workers])
    finally:
        signal.signal(signal.SIGINT, stop)
        stopping = True
        _stop_all(workers, stop_seconds)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def _stop_all(workers: list[_Worker], stop_seconds: float) -> None:
    """SIGTERM to every live worker at once (they drain in parallel), then wait; kill what outlives
    `stop_seconds`."""
    for worker in workers:
        if worker.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.process.join(stop_seconds)
        if worker.process.exitcode is None:
            print(
                f"agent-tasks: worker {worker.pid} still running {stop_seconds:.0f} s after SIGTERM; killed",
                file=sys.stderr,
                flush=True,
            )
            worker.process.kill()
            worker.process.join()
        elif worker.process.exitcode not in (0, -signal.SIGTERM):
            print(f"agent-tasks: worker {worker.pid} {_how(worker.process.exitcode)}", file=sys.stderr)
        worker.ready_reader.close()


def _how(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        return f"killed by {signal.Signals(-exit_code).name}"
    return f"exit code {exit_code}"


def _mark_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay: they count what it served)."""
    if os.environ.get(MULTIPROC_DIR_VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def watch_parent(channel: Connection) -> None:
    """In a worker: SIGTERM to itself (a graceful stop) when the parent's end of `channel` closes, which
    the kernel does when the parent exits, however it exits. The parent never sends on it."""

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                channel.recv()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
