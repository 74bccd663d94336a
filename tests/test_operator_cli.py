"""The operator's commands next to a running server (issue 23 part 7): `agent-tasks keys` and `agent-tasks
demo --reset` reach the database of a server running on the embedded mongod (found from its data
directory's `server.json`), and a key they create works on that server at once; with nothing to reach,
one line saying what to pass and exit code 2, never a traceback. And the start-up line of a server bound to
0.0.0.0 names a URL that server accepts."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx

from tests.support.cli import cli, one_line_refusal
from tests.support.servers import free_port, serve


def test_with_nothing_running_each_command_says_in_one_line_what_to_pass(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data")}
    for args in (("keys", "list"), ("keys", "create", "--name", "x"), ("demo", "--reset")):
        line = one_line_refusal(cli(env, *args), 2)
        assert "no agent-tasks server is running" in line and "MONGODB_URI" in line, line
        assert "--embedded" in line, line
    # A server.json left by a server that is gone (its pid is not alive) is no running server either.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "server.json").write_text(
        json.dumps({"uri": "mongodb://127.0.0.1:1/", "database": "x", "pid": 2**22 + 7})
    )
    assert "no agent-tasks server is running" in one_line_refusal(cli(env, "keys", "list"), 2)
    # A MongoDB that does not answer: one line too (exit code 1, as `serve` says it).
    closed = free_port()
    unreachable = {"MONGODB_URI": f"mongodb://127.0.0.1:{closed}/", "MONGODB_STARTUP_TIMEOUT_SECONDS": "1"}
    line = one_line_refusal(cli(unreachable, "keys", "list"), 1)
    assert "did not answer" in line, line


def test_keys_and_demo_reach_the_running_embedded_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"DATA_DIR": str(data_dir), "EMBEDDED_MONGO_PORT": "0", "AUTH_MODE": "keys"}
    with serve(env) as server:
        found = json.loads((data_dir / "server.json").read_text())
        assert found["pid"] == server.process.pid and found["database"] == "agent_tasks"

        created = cli({"DATA_DIR": str(data_dir)}, "keys", "create", "--name", "ops", "--scopes", "read")
        assert created.returncode == 0, created.stderr
        secret = re.findall(r"atk_\S+", created.stdout)[0]
        key_id = secret.split("_")[1]
        # At once, on the running server.
        headers = {"Authorization": f"Bearer {secret}"}
        query = {"query": "{ metaWorkflowTasks(first: 1) { totalCount } }"}
        assert "errors" in httpx.post(f"{server.url}/graphql", json=query).json()  # keys required
        answered = httpx.post(f"{server.url}/graphql", json=query, headers=headers)
        assert answered.status_code == 200 and "errors" not in answered.json(), answered.text
        listed = cli({"DATA_DIR": str(data_dir)}, "keys", "list")
        assert listed.returncode == 0 and key_id in listed.stdout, listed.stderr

        assert (
            httpx.get(f"{server.url}/meta-tasks/meta_podcast_ai_ethics", headers=headers).status_code == 404
        )
        demo = cli({"DATA_DIR": str(data_dir)}, "demo", "--reset")
        assert demo.returncode == 0, demo.stderr
        loaded = httpx.get(f"{server.url}/meta-tasks/meta_podcast_ai_ethics", headers=headers)
        assert loaded.status_code == 200, loaded.text

        revoked = cli({"DATA_DIR": str(data_dir)}, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        assert server.stop() == 0
    assert not (data_dir / "server.json").exists()  # withdrawn when the server stopped
    line = one_line_refusal(cli({"DATA_DIR": str(data_dir)}, "keys", "list"), 2)
    assert "no agent-tasks server is running" in line
    # With --embedded, the command starts the embedded mongod on the same data: the key is still there.
    embedded = cli({"DATA_DIR": str(data_dir), "EMBEDDED_MONGO_PORT": "0"}, "keys", "--embedded", "list")
    assert embedded.returncode == 0 and key_id in embedded.stdout and "revoked" in embedded.stdout, (
        embedded.stderr
    )


def test_the_start_up_line_of_a_server_on_every_interface_names_a_url_it_accepts(mongo_uri: str) -> None:
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"cli_{uuid.uuid4().hex[:12]}", "HOST": "0.0.0.0"}
    with serve(env) as server:
        port = server.url.rsplit(":", 1)[1]
        line = next(line for line in server.output if "GraphiQL at" in line)
        url = line.split("GraphiQL at ", 1)[1].strip()
        assert url == f"http://localhost:{port}/graphql", line
        assert httpx.get(url.replace("/graphql", "/healthz")).status_code == 200
        # What it printed before: a host TRUSTED_HOSTS refuses.
        refused = httpx.get(f"{server.url}/healthz", headers={"Host": f"0.0.0.0:{port}"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "untrusted_host"
