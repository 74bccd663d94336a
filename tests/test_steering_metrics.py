"""The concurrency and start rate limits' state in `/metrics` (issue 22 part 5), read with prometheus_client's
own parser: per limit its maximum, the tasks in progress and claimable under it; per start rate limit its
budget, window, starts and next window; series bounded by METRICS_LABEL_VALUES_MAX; and with two server
processes (`--workers 2`) every scrape answers the database's figures, never added up across processes."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from app.settings import Settings
from tests.conftest import GraphQLClient
from tests.support.inprocess import in_process
from tests.support.lifecycle_helpers import keyed_task
from tests.support.servers import serve

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return sorted((dict(labels) for (n, labels) in samples if n == name), key=lambda d: sorted(d.items()))


@pytest.fixture
async def app_client(settings: Settings, db: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app sampling at most every second, with series for the first two limits of each kind."""
    async with in_process(settings, metrics_sample_seconds=1, metrics_label_values_max=2) as http:
        yield http


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


async def poll(http: httpx.AsyncClient, done: Any, seconds: float = 60) -> Samples:
    """Scrape until `done` holds (a sample is at most a second old here), or return the last scrape."""
    import asyncio

    deadline = time.monotonic() + seconds
    while True:
        samples = await scrape(http)
        if done(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.2)


CLAIM = """mutation { r: claimTask(agentName: "A") {
  __typename ... on TaskTransitionSuccess { state { id } } ... on NothingToClaim { message } } }"""


async def test_limits_and_rates_are_in_metrics_per_key(app_client: httpx.AsyncClient, db: Any) -> None:
    http = app_client
    gql = GraphQLClient(http)
    for path, body in [
        ("/concurrency-limits/workflow/w1", {"max": 2}),
        ("/concurrency-limits/key/gpu", {"max": 3}),
        ("/concurrency-limits/workflow/w2", {"max": 9}),  # third by id: counted, no series of its own
        ("/start-rate-limits/agent/A", {"max": 10, "per": "minute"}),
    ]:
        assert (await http.put(path, json=body)).status_code == 200
    await db.agent_task_states.insert_many(
        [
            keyed_task("w1-a", "pending", "w1", "gpu"),
            keyed_task("w1-b", "pending", "w1", None),
            keyed_task("w1-c", "pending", "w1", None),
            keyed_task("w2-a", "pending", "w2", "gpu"),
            keyed_task("other", "in_progress", "w9", "gpu", agent="B"),
        ]
    )
    # Two claims: both of A's oldest tasks, started under the rate limit.
    for _ in range(2):
        assert (await gql.data(CLAIM))["r"]["__typename"] == "TaskTransitionSuccess"
    started_at = dt.datetime.now(dt.UTC)

    def claimed(samples: Samples) -> bool:
        return value(samples, "agent_tasks_start_rate_started", scope="agent", key="A") == 2

    samples = await poll(http, claimed)
    claimed_ids = {doc["_id"] async for doc in db.agent_task_states.find({"status": "in_progress"})}
    in_w1 = len({i for i in claimed_ids if i.startswith("w1-")})
    in_gpu = len(claimed_ids & {"w1-a", "w2-a", "other"})

    # Only the first two concurrency limits by id (key:gpu, workflow:w1) have series; all three counted.
    assert series(samples, "agent_tasks_concurrency_limit") == [
        {"key": "gpu", "scope": "key"},
        {"key": "w1", "scope": "workflow"},
    ]
    assert value(samples, "agent_tasks_steering_limits", kind="concurrency") == 3
    assert value(samples, "agent_tasks_steering_limits", kind="start_rate") == 1
    assert value(samples, "agent_tasks_concurrency_limit", scope="workflow", key="w1") == 2
    assert value(samples, "agent_tasks_concurrency_limit", scope="key", key="gpu") == 3
    assert value(samples, "agent_tasks_concurrency_running", scope="workflow", key="w1") == in_w1
    assert value(samples, "agent_tasks_concurrency_ready", scope="workflow", key="w1") == 3 - in_w1
    # B's task runs under the key too: a key's limit spans agents.
    assert value(samples, "agent_tasks_concurrency_running", scope="key", key="gpu") == in_gpu
    assert value(samples, "agent_tasks_concurrency_ready", scope="key", key="gpu") == 3 - in_gpu
    assert value(samples, "agent_tasks_start_rate_limit", scope="agent", key="A") == 10
    assert value(samples, "agent_tasks_start_rate_window_seconds", scope="agent", key="A") == 60
    next_window = value(
        samples, "agent_tasks_start_rate_next_window_timestamp_seconds", scope="agent", key="A"
    )
    assert next_window is not None and next_window % 60 == 0
    assert started_at.timestamp() - 60 < next_window <= started_at.timestamp() + 60
    assert value(samples, "agent_tasks_steering_sampled_timestamp_seconds") is not None
    # The requests are counted under the OpenAPI document's template, not the router's `{key:tail}`.
    labels = {"app_name": "agent_tasks", "method": "PUT", "status_code": "200"}
    put = value(
        samples, "agent_tasks_http_requests_total", path="/concurrency-limits/{scope}/{key}", **labels
    )
    assert put is not None and put >= 3

    # A completed task frees its slot; a cleared limit loses its series.
    task_id = sorted(i for i in claimed_ids if i.startswith("w1-"))[0]
    done = await gql.data(f'mutation {{ r: completeTask(id: "{task_id}") {{ __typename }} }}')
    assert done["r"]["__typename"] == "TaskTransitionSuccess"
    assert (await http.delete("/concurrency-limits/key/gpu")).status_code == 200

    def updated(samples: Samples) -> bool:
        return value(samples, "agent_tasks_steering_limits", kind="concurrency") == 2

    samples = await poll(http, updated)
    assert value(samples, "agent_tasks_concurrency_running", scope="workflow", key="w1") == in_w1 - 1
    assert series(samples, "agent_tasks_concurrency_limit") == [
        {"key": "w1", "scope": "workflow"},
        {"key": "w2", "scope": "workflow"},
    ]
    assert value(samples, "agent_tasks_concurrency_ready", scope="workflow", key="w2") == (
        0 if "w2-a" in claimed_ids else 1
    )


async def test_no_limits_no_series(app_client: httpx.AsyncClient) -> None:
    samples = await scrape(app_client)
    assert series(samples, "agent_tasks_concurrency_limit") == []
    assert value(samples, "agent_tasks_steering_limits", kind="concurrency") == 0
    assert value(samples, "agent_tasks_steering_limits", kind="start_rate") == 0


def test_two_workers_answer_the_databases_figures_not_their_sum(mongo_uri: str) -> None:
    """Each scrape reaches one of the two processes (new connections; the kernel picks): every answer shows
    the limit and the running count as stored, and both processes answer (their samples' times differ)."""
    name = f"steermetrics_{uuid.uuid4().hex[:12]}"
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": name, "METRICS_SAMPLE_SECONDS": "3600"}
    try:
        with serve(env, "--workers", "2") as server:
            assert httpx.put(f"{server.url}/concurrency-limits/agent/A", json={"max": 4}).status_code == 200
            with MongoClient(mongo_uri) as mongo:
                mongo[name].agent_task_states.insert_many(
                    [keyed_task(f"t{n}", "in_progress", "w", None) for n in range(3)]
                    + [keyed_task("p", "pending", "w", None)]
                )
            sampled_at: set[float] = set()
            deadline = time.monotonic() + 120
            while len(sampled_at) < 2:
                assert time.monotonic() < deadline, "one worker never answered a scrape"
                response = httpx.get(f"{server.url}/metrics")
                assert response.status_code == 200
                samples = parse(response.text)
                assert value(samples, "agent_tasks_concurrency_limit", scope="agent", key="A") == 4
                assert value(samples, "agent_tasks_concurrency_running", scope="agent", key="A") == 3
                assert value(samples, "agent_tasks_concurrency_ready", scope="agent", key="A") == 1
                assert value(samples, "agent_tasks_steering_limits", kind="concurrency") == 1
                stamp = value(samples, "agent_tasks_steering_sampled_timestamp_seconds")
                assert stamp is not None
                sampled_at.add(stamp)
            assert server.stop() == 0
            assert "Traceback" not in "".join(server.output)
    finally:
        with MongoClient(mongo_uri) as mongo:
            mongo.drop_database(name)
