"""`agent-tasks serve --workers 2`: two real server processes on one port under one parent, `/metrics`
adding both up, a crashed worker replaced, and SIGTERM / SIGINT stopping every process with exit 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.polling import wait_until
from tests.support.servers import ROOT, ServerProcess, serve

READY = re.compile(r"agent-tasks: (\d+) worker processes serving \(pids ([\d, ]+)\)")


def children(pid: int) -> set[int]:
    """The live processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def worker_pids(server: ServerProcess) -> list[int]:
    """The pids the parent announced once every worker served."""
    wait_until(lambda: any(READY.search(line) for line in server.output), "the workers' ready line")
    match = next(m for line in server.output if (m := READY.search(line)))
    return [int(p) for p in match.group(2).split(", ")]


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def served_by_pid(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[int, float]:
    return {
        int(dict(labels)["pid"]): value
        for (name, labels), value in samples.items()
        if name == "agent_tasks_process_requests"
    }


def test_two_workers_serve_one_port_and_metrics_add_up(mongo_uri: str) -> None:
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"workers_{uuid.uuid4().hex[:12]}"}
    with serve(env, "--workers", "2") as server:
        pids = worker_pids(server)
        assert len(pids) == 2
        assert set(pids) <= children(server.process.pid)

        # New connections, many at once, until both processes have answered some (the kernel picks).
        sent = 0

        def ready_check(_: int) -> int:
            with httpx.Client(base_url=server.url) as http:
                return http.get("/readyz").status_code

        deadline = time.monotonic() + 120
        with ThreadPoolExecutor(8) as pool:
            while True:
                statuses = list(pool.map(ready_check, range(40)))
                assert statuses == [200] * 40
                sent += 40
                served = served_by_pid(scrape(server.url))
                if set(served) == set(pids) and all(v > 0 for v in served.values()):
                    break
                assert time.monotonic() < deadline, f"one worker never served: {served}"

        samples = scrape(server.url)
        readyz = frozenset(
            {"app_name": "agent_tasks", "path": "/readyz", "method": "GET", "status_code": "200"}.items()
        )
        # Every /readyz answered, whichever process answered it, in one scrape of one process.
        assert samples[("agent_tasks_http_requests_total", readyz)] == sent
        counted = sum(v for (name, _), v in samples.items() if name == "agent_tasks_http_requests_total")
        assert sum(served_by_pid(samples).values()) == counted

        # GraphQL on new connections (either process): the instruments' series add up as well.
        for _ in range(6):
            with httpx.Client(base_url=server.url) as http:
                body = http.post("/graphql", json={"query": "{ __typename }"}).json()
                assert body == {"data": {"__typename": "Query"}}
        operations = sum(
            v
            for (name, _), v in scrape(server.url).items()
            if name == "agent_tasks_graphql_operation_duration_seconds_count"
        )
        assert operations == 6

        family = children(server.process.pid)
        assert server.stop() == 0
        wait_until(lambda: not any(alive(pid) for pid in family), "every child process to exit")
        output = "".join(server.output)
        assert "Traceback" not in output
        assert "killed" not in output


def test_a_crashed_worker_is_replaced_and_sigint_stops_all(mongo_uri: str) -> None:
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"workers_{uuid.uuid4().hex[:12]}"}
    with serve(env, "--workers", "2") as server:
        first, second = worker_pids(server)
        before = children(server.process.pid)
        os.kill(first, signal.SIGKILL)
        wait_until(
            lambda: any(
                f"worker {first} exited (killed by SIGKILL); starting another" in line
                for line in server.output
            ),
            "the parent to notice the crash",
        )
        # Replaced: two workers again, the survivor among them, and the port still answers.
        wait_until(lambda: children(server.process.pid) - before, "a replacement worker")
        assert alive(second)
        wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, "the port to answer")
        family = children(server.process.pid)
        server.process.send_signal(signal.SIGINT)  # Ctrl-C, to the parent alone
        assert server.process.wait(60) == 0
        wait_until(lambda: not any(alive(pid) for pid in family), "every child process to exit")
        assert "Traceback" not in "".join(server.output)


def test_workers_stop_when_the_parent_is_killed(mongo_uri: str) -> None:
    """SIGKILL on the parent (the OOM killer, `kill -9`): the workers must not go on serving unsupervised."""
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"workers_{uuid.uuid4().hex[:12]}"}
    with serve(env, "--workers", "2") as server:
        pids = worker_pids(server)
        family = children(server.process.pid)
        server.process.kill()
        server.process.wait(30)
        wait_until(lambda: not any(alive(pid) for pid in family), "the orphaned workers to stop")
        assert set(pids) <= family
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/healthz")


def test_workers_refused_when_invalid_or_mongodb_unreachable() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")}
    run = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--workers 0 is invalid: input should be greater than or equal to 1" in run.stderr

    # Nothing listens on port 9: the parent says so once, before any worker starts.
    env.update({"MONGODB_URI": "mongodb://127.0.0.1:9/", "MONGODB_STARTUP_TIMEOUT_SECONDS": "1", "PORT": "0"})
    run = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("agent-tasks:")]
    assert len(lines) == 1, run.stderr
    assert "worker" not in run.stderr
    assert "Traceback" not in run.stderr


def test_metrics_directory_is_owned_by_the_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.supervisor import MULTIPROC_DIR_VARIABLE, metrics_directory

    # Not set: a new directory for this run, in the environment the workers inherit, removed afterwards.
    monkeypatch.delenv(MULTIPROC_DIR_VARIABLE, raising=False)
    with metrics_directory() as made:
        assert os.environ[MULTIPROC_DIR_VARIABLE] == str(made)
        assert made.is_dir() and not any(made.iterdir())
    assert not made.exists()
    assert MULTIPROC_DIR_VARIABLE not in os.environ

    # Set by the operator: kept, but an earlier run's values are removed before any worker starts.
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_DIR_VARIABLE, str(given))
    with metrics_directory() as used:
        assert used == given
        assert sorted(p.name for p in given.iterdir()) == ["notes.txt"]
    assert given.is_dir()
