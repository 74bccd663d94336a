"""A MongoDB operation that runs out of MONGODB_TIMEOUT_SECONDS answers DATABASE_TIMEOUT (GraphQL) or
504 `database_timeout` (REST), not "Unexpected error."; and how PyMongo's failures are classified."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import (
    AutoReconnect,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from app.settings import Settings
from app.store.failures import TIMEOUT, UNAVAILABLE, classify, filter_time_limit
from app.store.filters import FilterError
from tests.conftest import GraphQLClient
from tests.support.lifecycle_helpers import mutation, task


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Short, so the test is quick: a transaction and its retries get 1.5 s in all.
    return settings.model_copy(update={"mongodb_timeout_seconds": 1.5})


async def test_a_transaction_blocked_past_the_timeout(
    gql: GraphQLClient, client: httpx.AsyncClient, db: Any, settings: Settings
) -> None:
    await db.agent_task_states.insert_one(task("t1", "pending"))
    other: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
    try:
        async with other.start_session() as session:
            # Another writer's transaction holds the task's document and does not commit in time: every
            # attempt of the server's transaction conflicts with it until the deadline.
            await session.start_transaction()
            await other[settings.mongodb_db].agent_task_states.update_one(
                {"_id": "t1"}, {"$set": {"current_step": "held"}}, session=session
            )
            body = await gql(mutation("startTask", 'id: "t1"'))
            assert body["data"] is None
            [error] = body["errors"]
            assert error["extensions"] == {"code": "DATABASE_TIMEOUT"}
            assert error["message"].startswith("The database did not finish the operation in time.")

            response = await client.patch("/agent-tasks/t1", json={"priority": "urgent"})
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "database_timeout"
            await session.abort_transaction()
    finally:
        await other.close()
    stored = await db.agent_task_states.find_one({"_id": "t1"})
    assert stored["status"] == "pending" and stored["priority"] != "urgent" and stored["version"] == 1
    r = (await gql.data(mutation("startTask", 'id: "t1"')))["r"]  # once the other writer is gone
    assert r["__typename"] == "TaskTransitionSuccess"


def _failure(code: int, label: str | None = None) -> OperationFailure:
    details: dict[str, Any] = {"ok": 0, "code": code, "errmsg": "x"}
    if label:
        details["errorLabels"] = [label]
    return OperationFailure("x", code, details)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ServerSelectionTimeoutError("no server"), UNAVAILABLE),
        (AutoReconnect("connection refused"), UNAVAILABLE),
        (NetworkTimeout("timed out"), TIMEOUT),
        (ExecutionTimeout("operation exceeded time limit", 50), TIMEOUT),
        (_failure(50), TIMEOUT),
        (_failure(11600), UNAVAILABLE),  # InterruptedAtShutdown
        (_failure(10107), UNAVAILABLE),  # NotWritablePrimary
        (_failure(112, "TransientTransactionError"), TIMEOUT),  # WriteConflict until the deadline
        (_failure(2), None),  # BadValue: a request problem, not the database's state
        (
            WriteConcernError("waiting for replication timed out", 64, {"errInfo": {"wtimeout": True}}),
            TIMEOUT,
        ),
        (ValueError("a bug"), None),
    ],
)
def test_classify(exc: BaseException, expected: Any) -> None:
    assert classify(exc) == expected
    wrapped = RuntimeError("while doing something")
    wrapped.__cause__ = exc
    assert classify(wrapped) == expected


async def test_mongodb_refusing_a_filter_is_a_filter_error(db: Any) -> None:
    """The safety net behind the validator: MongoDB's own refusal becomes BAD_FILTER / 400 quoting it."""
    refused = pytest.raises(FilterError, match=r"^MongoDB refused the filter: Failed to parse \$size")
    with refused, filter_time_limit(1000):
        await db.states.find({"a": {"$size": 2**31}}).to_list()
