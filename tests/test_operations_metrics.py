"""The metrics operators alert on (issue 23 part 5), scraped from a real server process after real traffic:
GraphQL operations by name and type (latency, errors by code, names bounded by METRICS_LABEL_VALUES_MAX),
MongoDB commands by command and collection, claims, lease lapses, retries and expiries counted once each,
the sampled task gauges matching the database, and the event hub's lag. On a server that requires keys,
scraped without one through METRICS_PUBLIC=true."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from tests.support.servers import ROOT, serve

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics")  # no credentials: METRICS_PUBLIC
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


def poll(url: str, done: Callable[[Samples], bool], seconds: float = 60) -> Samples:
    """Scrape until `done` holds (the sweeper and the sampler run on their own schedule), or fail."""
    deadline = time.monotonic() + seconds
    while True:
        samples = scrape(url)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_operations_metrics_match_the_traffic_sent(mongo_uri: str) -> None:
    db_name = f"opsmetrics_{uuid.uuid4().hex[:12]}"
    env = {
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": db_name,
        "AUTH_MODE": "keys",
        "METRICS_PUBLIC": "true",
        "EXPIRY_SWEEP_SECONDS": "0.2",
        "METRICS_SAMPLE_SECONDS": "1",
        "METRICS_LABEL_VALUES_MAX": "8",
    }
    created = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--name", "ops", "--scopes", "read,write"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    key = re.findall(r"atk_\S+", created.stdout)[0]
    a, b = f"agent-a-{uuid.uuid4().hex[:6]}", f"agent-b-{uuid.uuid4().hex[:6]}"
    try:
        with (
            serve(env) as server,
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as client,
        ):

            def gql(name: str, document: str) -> dict[str, Any]:
                answer = client.post("/graphql", json={"query": document, "operationName": name})
                assert answer.status_code in (200, 400), answer.text
                return answer.json()

            def create(task_id: str, agent: str, extra: str = "") -> None:
                made = gql(
                    "MakeTask",
                    f'mutation MakeTask {{ createAgentTask(input: {{id: "{task_id}", agentName: "{agent}",'
                    f" maxAttempts: 3{extra}}}) {{ __typename }} }}",
                )
                assert "errors" not in made, made

            def claim(agent: str, lease: int) -> str:
                claimed = gql(
                    "ClaimOne",
                    f'mutation ClaimOne {{ claimTask(agentName: "{agent}", leaseSeconds: {lease}) {{'
                    " ... on TaskTransitionSuccess { state { id } } } }",
                )
                return claimed["data"]["claimTask"]["state"]["id"]

            for i in range(5):
                create(f"a{i}", a)
            create("b0", b)
            soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
            create("b-expiring", b, f', expiresAt: "{soon}"')
            create("b-unstarted", b, ", scheduleToStartTimeout: 1")  # nobody claims it in time

            claimed = [claim(a, 60) for _ in range(3)]
            failed = gql(
                "FailOne",
                f'mutation FailOne {{ failTask(id: "{claimed[0]}", error: "flaky", attempt: 1) {{ __typename }} }}',
            )
            assert failed["data"]["failTask"]["__typename"] == "TaskTransitionSuccess", failed
            claim(b, 1)  # its lease lapses at the next sweep after a second: back to retrying

            for _ in range(2):
                refused = gql("BadPage", 'query BadPage { agentTasks(after: "forged") { totalCount } }')
                assert refused["errors"][0]["extensions"]["code"] == "BAD_CURSOR", refused
            invalid = gql("Nope", "query Nope { nope }")
            assert invalid["errors"], invalid
            for i in range(10):  # more names than METRICS_LABEL_VALUES_MAX leaves: the rest are `other`
                gql(f"Spam{i}", f"query Spam{i} {{ __typename }}")

            after = poll(
                server.url,
                lambda s: (
                    value(s, "agent_tasks_lease_lapses_total", agent=b) == 1
                    and value(s, "agent_tasks_expiries_total", agent=b) == 1
                    and value(s, "agent_tasks_timeouts_total", agent=b, kind="SCHEDULE_TO_START") == 1
                ),
            )
            # Lifecycle counters: each counted once, by agent.
            assert value(after, "agent_tasks_claims_total", agent=a) == 3
            assert value(after, "agent_tasks_claims_total", agent=b) == 1
            assert value(after, "agent_tasks_retries_total", agent=a) == 1  # the failure
            assert value(after, "agent_tasks_retries_total", agent=b) == 1  # the lapse
            assert value(after, "agent_tasks_lease_lapses_total", agent=b) == 1
            assert value(after, "agent_tasks_lease_lapses_total", agent=a) == 0
            assert value(after, "agent_tasks_expiries_total", agent=b) == 1
            assert value(after, "agent_tasks_timeouts_total", agent=b, kind="SCHEDULE_TO_START") == 1

            # GraphQL operations by name and type; errors by code.
            duration = "agent_tasks_graphql_operation_duration_seconds_count"
            assert value(after, duration, operation="MakeTask", type="mutation") == 8
            assert value(after, duration, operation="ClaimOne", type="mutation") == 4
            assert value(after, duration, operation="BadPage", type="query") == 2
            errors = "agent_tasks_graphql_operation_errors_total"
            assert value(after, errors, operation="BadPage", type="query", code="BAD_CURSOR") == 2
            assert value(after, errors, operation="MakeTask", type="mutation", code="BAD_CURSOR") == 0
            assert value(after, errors, operation="Nope", type="query", code="GRAPHQL_VALIDATION_FAILED") == 1
            names = {s["operation"] for s in series(after, duration)}
            assert len(names - {"other"}) <= 8 and "other" in names, names
            spam = sum(
                value(after, duration, operation=name, type="query")
                for name in names
                if name.startswith("Spam") or name == "other"
            )
            assert spam == 10

            # MongoDB commands by command and collection.
            commands = "agent_tasks_mongodb_command_duration_seconds_count"
            assert value(after, commands, command="insert", collection="agent_task_states") >= 7
            assert value(after, commands, command="aggregate", collection="agent_task_states") >= 1
            assert value(after, commands, command="commitTransaction", collection="") >= 1
            assert not [s for s in series(after, commands) if s["collection"].startswith(("a0", "b0"))]

            # The event hub released this traffic's events, with their lag.
            assert value(after, "agent_tasks_event_hub_lag_seconds_count") >= 7
            assert ("agent_tasks_event_hub_backlog", frozenset()) in after

            # The sampled task gauges: what the database holds (sampled again within a second or so).
            with MongoClient(mongo_uri) as mongo:
                states = mongo[db_name].agent_task_states
                now = dt.datetime.now(dt.UTC)
                want = {
                    (doc["_id"]["status"], doc["_id"]["agent"]): doc["n"]
                    for doc in states.aggregate(
                        [{"$group": {"_id": {"status": "$status", "agent": "$agent_name"}, "n": {"$sum": 1}}}]
                    )
                }
                claimable_a = states.count_documents(
                    {
                        "agent_name": a,
                        "status": {"$in": ["pending", "retrying"]},
                        "next_attempt_at": {"$not": {"$gt": now}},
                    }
                )
            assert want[("in_progress", a)] == 2 and want[("failed", b)] == 2, want

            def gauges_match(s: Samples) -> bool:
                return (
                    all(
                        value(s, "agent_tasks_tasks", status=status, agent=agent) == n
                        for (status, agent), n in want.items()
                    )
                    and value(s, "agent_tasks_claimable_tasks", agent=a) == claimable_a
                )

            sampled = poll(server.url, gauges_match)
            assert gauges_match(sampled), (want, series(sampled, "agent_tasks_tasks"))
            assert claimable_a == 3  # two never claimed and the failed one, retrying at once
            assert value(sampled, "agent_tasks_tasks_sampled_timestamp_seconds") > 0
    finally:
        with MongoClient(mongo_uri) as mongo:
            mongo.drop_database(db_name)
