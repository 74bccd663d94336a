"""`/metrics` on a real server process, read with prometheus_client's own parser: requests counted by
route template (never by raw path or id), made-up paths not counted, and the live gauges following an
open subscription."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import serve
from tests.support.wsclient import GraphQLWebSocket

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of `/metrics` by name and labels."""
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_to(samples: Samples, path: str, method: str, status: str) -> float:
    labels = frozenset(
        {"app_name": "agent_tasks", "path": path, "method": method, "status_code": status}.items()
    )
    return samples.get(("agent_tasks_http_requests_total", labels), 0.0)


def gauge(samples: Samples, name: str) -> float:
    return samples[(name, frozenset())]


def test_metrics_count_requests_by_route_and_follow_live_connections(mongo_uri: str) -> None:
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"metrics_{uuid.uuid4().hex[:12]}"}
    with serve(env, "--demo") as server:
        before = scrape(server.url)
        for task_id in ("meta_podcast_ai_ethics", "no-such-task", "another-missing-one"):
            httpx.get(f"{server.url}/meta-tasks/{task_id}")
        httpx.post(f"{server.url}/graphql", json={"query": "{ __typename }"})
        httpx.get(f"{server.url}/made-up/{uuid.uuid4().hex}")
        after = scrape(server.url)

        # One series per route template and status: the ids never become label values.
        assert (
            requests_to(after, "/meta-tasks/{id}", "GET", "200")
            - requests_to(before, "/meta-tasks/{id}", "GET", "200")
            == 1
        )
        assert (
            requests_to(after, "/meta-tasks/{id}", "GET", "404")
            - requests_to(before, "/meta-tasks/{id}", "GET", "404")
            == 2
        )
        assert (
            requests_to(after, "/graphql", "POST", "200") - requests_to(before, "/graphql", "POST", "200")
            == 1
        )
        paths = {dict(labels).get("path") for (name, labels) in after if name.startswith("agent_tasks_http")}
        assert not any(path and ("no-such-task" in path or "made-up" in path) for path in paths), paths
        assert (
            "agent_tasks_http_request_duration_seconds_count",
            frozenset(
                {
                    "app_name": "agent_tasks",
                    "path": "/meta-tasks/{id}",
                    "method": "GET",
                    "status_code": "404",
                }.items()
            ),
        ) in after

        assert gauge(after, "agent_tasks_event_hub_running") == 1
        assert gauge(after, "agent_tasks_event_hub_orphan_sweeper") == 1  # the only process: it sweeps
        assert gauge(after, "agent_tasks_subscriptions") == 0
        assert gauge(after, "agent_tasks_websocket_connections") == 0

        async def with_a_subscription() -> Samples:
            ws = await GraphQLWebSocket.open(server.url)
            try:
                await ws.subscribe(
                    'subscription { taskEvents(workflowId: "meta_podcast_ai_ethics") { type } }'
                )
                for _ in range(1200):  # 60 s; the server registers the subscriber a moment after `subscribe`
                    samples = await asyncio.to_thread(scrape, server.url)
                    if gauge(samples, "agent_tasks_subscriptions") == 1:
                        return samples
                    await asyncio.sleep(0.05)
                return samples
            finally:
                await ws.close()

        during = asyncio.run(with_a_subscription())
        assert gauge(during, "agent_tasks_subscriptions") == 1
        assert gauge(during, "agent_tasks_websocket_connections") == 1


def test_metrics_follow_the_access_mode(mongo_uri: str) -> None:
    """Issue 18 finding 9: `/metrics` answered anyone on a server that requires keys. There it needs a key
    with the `metrics` scope (401 without credentials, 403 with a key lacking it, in the REST error shape),
    unless METRICS_PUBLIC=true says scrapers may read it without one; an open server stays open (above)."""
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"metrics_{uuid.uuid4().hex[:12]}", "AUTH_MODE": "keys"}

    def key(scopes: str) -> str:
        created = subprocess.run(
            [sys.executable, "-m", "app.cli", "keys", "create", "--name", "scraper", "--scopes", scopes],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        return re.findall(r"atk_\S+", created.stdout)[0]

    reader = key("read")
    with serve(env) as server:
        anonymous = httpx.get(f"{server.url}/metrics")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        error = anonymous.json()["error"]
        assert error["code"] == "unauthenticated" and error["required_scope"] == "metrics"
        forbidden = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {reader}"})
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "forbidden"
        assert "agent_tasks_http_requests_total" not in anonymous.text + forbidden.text
        scraper = key("metrics")
        scraped = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {scraper}"})
        assert scraped.status_code == 200 and "agent_tasks_event_hub_running" in scraped.text
        # The scraper's key reads nothing else.
        tasks = httpx.get(f"{server.url}/agent-tasks/none", headers={"Authorization": f"Bearer {scraper}"})
        assert tasks.status_code == 403
    with serve({**env, "METRICS_PUBLIC": "true"}) as server:  # the explicit opt-out: a private network
        public = httpx.get(f"{server.url}/metrics")
        assert public.status_code == 200 and "agent_tasks_event_hub_running" in public.text
        assert httpx.get(f"{server.url}/agent-tasks/none").status_code == 401  # nothing else opens
