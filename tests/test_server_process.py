"""The real server: `agent-tasks serve` as a uvicorn process, over real HTTP, on the test mongod and on
its own embedded mongod, stopping cleanly on SIGTERM."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from app.mongo.embedded import EmbeddedMongod
from tests.conftest import read_query
from tests.support.servers import serve


def test_uvicorn_process_serves_the_demo_tree(mongo_uri: str) -> None:
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"proc_{uuid.uuid4().hex[:12]}"}
    with serve(env, "--demo") as server:
        answer = httpx.post(
            f"{server.url}/graphql",
            json={"query": read_query("WorkflowTree.graphql"), "variables": {"id": "meta_podcast_ai_ethics"}},
        )
        assert answer.status_code == 200
        tree = answer.json()["data"]["metaWorkflowTask"]
        assert [s["id"] for s in tree["subTasks"]] == ["sub_snippet", "sub_script", "sub_voice"]
        # GraphiQL for a browser
        page = httpx.get(f"{server.url}/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        assert server.stop() == 0


def test_serve_starts_and_stops_its_own_embedded_mongod(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # Port 0: mongod's port is picked by the server itself, just before mongod binds it (a port picked
    # here could be taken by another test worker while the server process starts).
    env = {"DATA_DIR": str(data_dir), "EMBEDDED_MONGO_PORT": "0"}
    with serve(env, "--demo") as server:
        answer = httpx.post(f"{server.url}/graphql", json={"query": '{ subTask(id: "sub_voice") { id } }'})
        assert answer.json() == {"data": {"subTask": {"id": "sub_voice"}}}
        assert (data_dir / "db" / "mongod.lock").read_text().strip() != ""  # mongod is running
        assert server.stop() == 0
    # mongod was shut down cleanly: its lock file is released and emptied
    assert (data_dir / "db" / "mongod.lock").read_text().strip() == ""
    # and the data survives: a new mongod on the same directory still has the demo
    with EmbeddedMongod(data_dir, port=0) as mongod:
        from pymongo import MongoClient

        with MongoClient(mongod.uri) as client:
            assert client.agent_tasks.sub_tasks.find_one({"_id": "sub_voice"}) is not None


def test_taken_port_ends_in_one_clear_sentence(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from tests.support.servers import ROOT

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = {"DATA_DIR": str(tmp_path / "d"), "EMBEDDED_MONGO_PORT": str(port), "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"Port {port} is already in use" in lines[0] and "EMBEDDED_MONGO_PORT" in lines[0]
