"""`agent-tasks demo-agent` against a real server: the demo's agents, on the Python client, finish a new
episode and the demo's own workflow, leaving every task completed and every event behind."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ROOT, ServerGroup, ServerProcess, serve


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    return module_servers.start("agent", {"EXPIRY_SWEEP_SECONDS": "0.5"}, "--demo")


def demo_agent(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "demo-agent",
            "--url",
            server.url,
            "--pace",
            "0.05",
            "--seed",
            "7",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tree_statuses(server: ServerProcess, workflow_id: str) -> set[str]:
    query = "query($id: ID!) { metaWorkflowTask(id: $id) { state { status } subTasks { state { status } behaviorTasks { state { status } } } } }"
    tree = httpx.post(f"{server.url}/graphql", json={"query": query, "variables": {"id": workflow_id}}).json()
    meta = tree["data"]["metaWorkflowTask"]
    statuses = {meta["state"]["status"]}
    for sub in meta["subTasks"]:
        statuses.add(sub["state"]["status"])
        statuses.update(b["state"]["status"] for b in sub["behaviorTasks"])
    return statuses


def test_the_demo_agent_produces_a_new_episode(server: ServerProcess) -> None:
    run = demo_agent(server)
    assert run.returncode == 0, run.stdout + run.stderr
    created = next(line for line in run.stdout.splitlines() if "created workflow" in line)
    workflow_id = created.rsplit(" ", 1)[1]
    assert f"workflow {workflow_id} completed" in run.stdout
    assert tree_statuses(server, workflow_id) == {"COMPLETED"}
    # What a watcher saw, printed live: progress, tool calls, completions.
    for kind in ("TASK_PROGRESS", "TOOL_CALL", "TOOL_RESULT", "TASK_COMPLETED"):
        assert kind in run.stdout
    assert "OrchestratorAgent: claimed" in run.stdout


def test_the_demo_agent_finishes_the_demo_workflow(server: ServerProcess) -> None:
    run = demo_agent(server, "--workflow", "meta_podcast_ai_ethics")
    assert run.returncode == 0, run.stdout + run.stderr
    # The demo's history left these in progress with no lease: handed back, then finished.
    assert "beh_write_script was in progress with no lease" in run.stdout
    assert tree_statuses(server, "meta_podcast_ai_ethics") == {"COMPLETED"}


def test_the_readme_worker_runs_as_written(mongo_uri: str, tmp_path: Path) -> None:
    """The README's worker, against the demo: it finishes VoiceForgeAgent's claimable tasks, then stops."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", readme, re.S)  # the tour's worker, the README's only one
    assert example is not None
    code = example.group(1)
    assert len(code.strip().splitlines()) <= 20
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"readme_{uuid.uuid4().hex[:12]}"}
    with serve(env, "--demo") as server:
        script = tmp_path / "worker.py"
        script.write_text(code.replace("http://127.0.0.1:8000", server.url), encoding="utf-8")
        run = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("WorkerStats(claimed=")
        query = '{ agentTask(id: "beh_select_voice") { status } taskEvents(taskId: "beh_select_voice", types: [TASK_COMPLETED]) { edges { node { ... on TaskCompletedEvent { result } } } } }'
        data = httpx.post(f"{server.url}/graphql", json={"query": query}).json()["data"]
    assert data["agentTask"]["status"] == "COMPLETED"  # the demo's retrying task, done by the README's worker
    assert [e["node"]["result"] for e in data["taskEvents"]["edges"]] == [{"voice": "calm_narrator"}]
