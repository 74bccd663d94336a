"""A fuzz run of /graphql (issue 11): schemathesis generates queries and mutations for every root field
from the schema (by introspection) and sends them; no answer may be a 5xx or carry "Unexpected error.".

Bounded (`GRAPHQL_FUZZ_EXAMPLES` per root field, 3 by default) so the run stays short; raise it for a
longer hunt."""

from __future__ import annotations

import os
from typing import Any

import pytest
from graphql import parse_value
from pymongo import MongoClient

from app.server import create_app
from app.settings import Settings


@pytest.mark.slow
def test_fuzzing_graphql_finds_no_server_errors(settings: Settings) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    # JSON arguments (filters, payloads) are free-form: a few literals of each shape, valid or not, as
    # GraphQL value nodes (schemathesis has no strategy of its own for a JSON scalar).
    from hypothesis import strategies as st
    from schemathesis.python import asgi

    json_literals = [
        "{}",
        '{status: "pending"}',
        '{agent_name: {_in: ["A"]}}',
        '"text"',
        "[1, 2]",
        "null",
        "42",
    ]
    schemathesis.graphql.scalar("JSON", st.sampled_from(json_literals).map(parse_value))

    # schemathesis calls the app as Starlette's test client does, with `Host: testserver`.
    app = create_app(settings.model_copy(update={"trusted_hosts": [*settings.trusted_hosts, "testserver"]}))
    examples = int(os.environ.get("GRAPHQL_FUZZ_EXAMPLES", "3"))
    failures: list[str] = []
    try:
        schema = schemathesis.graphql.from_asgi("/graphql", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 40  # every query and mutation root field

        for operation in operations:
            _fuzz(operation, examples, failures)
        assert not failures, failures
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan ran in schemathesis's own event loop
        with MongoClient(settings.mongodb_uri) as mongo:
            mongo.drop_database(settings.mongodb_db)


def _fuzz(operation: Any, examples: int, failures: list[str]) -> None:
    """Send `examples` generated requests for one root field; record any 5xx or masked error."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: Any) -> None:
        response = case.call()
        if response.status_code >= 500 or "Unexpected error" in response.text:
            failures.append(
                f"{operation.label}: {response.status_code} {response.text[:300]} for {case.body}"
            )

    run()
