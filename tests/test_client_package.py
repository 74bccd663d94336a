"""The Python client as its own distribution (client/, `agent-tasks-client`): its wheel's metadata asks for
httpx and websockets only (OpenTelemetry as the `tracing` extra) and holds the client's package alone; its
code imports nothing but the standard library, those two and itself (OpenTelemetry only where its absence
is caught); and without OpenTelemetry installed it still runs a worker against a real server."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
import uuid
import zipfile
from email.parser import Parser

import pytest
from packaging.requirements import Requirement

from tests.support.servers import ROOT, serve

CLIENT = ROOT / "client"
PACKAGE = CLIENT / "agent_tasks_client"
#: What the client's code may import besides the standard library and itself.
DEPENDENCIES = {"httpx", "websockets"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The client's wheel, built by pip from a copy of client/ (so the build leaves nothing in the tree)."""
    work = tmp_path_factory.mktemp("client-wheel")
    source = work / "client"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work), str(source)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (built,) = work.glob("agent_tasks_client-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_requires_httpx_and_websockets_only(wheel: zipfile.ZipFile) -> None:
    (metadata_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    assert metadata["Name"] == "agent-tasks-client"
    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    always = {r.name for r in requirements if r.marker is None}
    assert always == DEPENDENCIES
    tracing = {
        r.name for r in requirements if r.marker is not None and r.marker.evaluate({"extra": "tracing"})
    }
    assert tracing == {"opentelemetry-api"}
    assert metadata.get_all("Provides-Extra") == ["tracing"]


def test_the_wheel_holds_the_client_package_alone(wheel: zipfile.ZipFile) -> None:
    files = {n for n in wheel.namelist() if ".dist-info/" not in n}
    assert {n.split("/")[0] for n in files} == {"agent_tasks_client"}
    assert files == {f"agent_tasks_client/{p.name}" for p in PACKAGE.iterdir() if p.is_file()}
    assert "agent_tasks_client/py.typed" in files


def test_the_server_depends_on_the_client_distribution() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {Requirement(r).name for r in server["project"]["dependencies"]}
    assert "agent-tasks-client" in names
    # The server's distribution does not ship the client's package too (one owner of its files).
    assert server["tool"]["setuptools"]["packages"]["find"]["include"] == ["app*"]
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())
    assert client["project"]["name"] == "agent-tasks-client"


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether an import sits in a `try` whose handler catches ImportError (the optional dependency)."""
    while node in parents:
        node, child = parents[node], node
        if isinstance(node, ast.Try) and child in node.body:
            caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            if caught & {"ImportError", "ModuleNotFoundError"}:
                return True
    return False


def test_the_client_imports_only_the_standard_library_httpx_and_websockets() -> None:
    allowed = set(sys.stdlib_module_names) | DEPENDENCIES | {"agent_tasks_client"}
    found: dict[str, set[str]] = {}
    optional: set[str] = set()
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top == "opentelemetry" and _guarded(node, parents):
                    optional.add(path.name)
                elif top not in allowed:
                    found.setdefault(path.name, set()).add(module)
    assert found == {}, "imports outside the client's dependencies"
    assert optional == {"tracing.py"}  # OpenTelemetry is touched in one module, which does without it


WITHOUT_OPENTELEMETRY = textwrap.dedent(
    """
    import asyncio, json, sys

    class NoOpenTelemetry:
        # As if the `tracing` extra were not installed (the server's environment has it).
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "opentelemetry":
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoOpenTelemetry())

    from agent_tasks_client import AgentTasksClient, TaskStatus, tracing

    async def main(url, agent):
        async with AgentTasksClient(url, timeout=60) as client:
            created = await client.create_agent_task(agent, input_parameters={"n": 2})

            async def handle(task):
                await task.record_tool_call("double", {"n": 2})  # a span with OpenTelemetry
                return {"doubled": task.input_parameters["n"] * 2}

            async with client.worker(agent, handle, poll_min=0.05) as worker:
                await worker.wait_idle()
            state = await client.get_task(created.id)
            print(json.dumps({
                "available": tracing.AVAILABLE,
                "tracer": repr(client.tracer),
                "status": state.status,
                "completed": state.status == TaskStatus.COMPLETED,
                "stats": [worker.stats.claimed, worker.stats.completed, worker.stats.errors],
                "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
            }))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_the_client_runs_a_worker_without_opentelemetry(mongo_uri: str) -> None:
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"client_pkg_{uuid.uuid4().hex[:12]}"}
    agent = f"NoTracing-{uuid.uuid4().hex[:8]}"
    with serve(env) as server:
        run = subprocess.run(
            [sys.executable, "-c", WITHOUT_OPENTELEMETRY, server.url, agent],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=CLIENT,  # the client's package from this tree, as an installed client would have it
        )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {
        "available": False,
        "tracer": "NoTracer()",
        "status": "completed",
        "completed": True,
        "stats": [1, 1, 0],
        "loaded": [],
    }


def test_the_client_lives_in_client_only() -> None:
    """One copy of the client's code: client/agent_tasks_client (the distribution's), none at the root."""
    assert not (ROOT / "agent_tasks_client").exists()
    assert (PACKAGE / "__init__.py").is_file()
