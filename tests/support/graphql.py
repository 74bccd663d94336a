"""GraphQL against a real server process, over HTTP and WebSocket: what the live tests (subscriptions,
live limits) share: the settings of their servers, a workflow to watch, the hub's subscriber count."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.polling import until

# The live tests' servers never sweep while a test runs (so the only events are the ones a test causes).
LIVE = {"EXPIRY_SWEEP_SECONDS": "3600"}

EVENTS = """subscription($w: ID, $t: ID, $types: [EventType!], $after: String) {
  taskEvents(workflowId: $w, taskId: $t, types: $types, after: $after) { cursor type taskId } }"""


def live_env(mongo_uri: str, db_name: str, **extra: str) -> dict[str, str]:
    """The environment of a live test's server on `db_name`, with `extra` settings."""
    return {"MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, **LIVE, **extra}


async def gql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = (await http.post("/graphql", json={"query": query, "variables": variables or {}})).json()
    assert "errors" not in body, body
    return body["data"]


async def create_workflow(url: str, agent: str = "Agent") -> str:
    """A workflow with two sub-tasks (the second waits for the first); returns its id."""
    wid = f"wf_{uuid.uuid4().hex[:8]}"
    workflow = {
        "id": wid,
        "state": {"agentName": "Orchestrator"},
        "subTasks": [
            {"id": f"{wid}_s1", "state": {"agentName": agent}},
            {"id": f"{wid}_s2", "state": {"agentName": agent, "dependencies": [{"taskId": f"{wid}_s1"}]}},
        ],
    }
    data = await gql(
        url,
        "mutation($i: CreateMetaWorkflowTaskInput!) { createWorkflow(input: $i) { __typename } }",
        {"i": workflow},
    )
    assert data["createWorkflow"]["__typename"] == "MetaWorkflowTaskSuccess"
    return wid


async def subscribers(url: str) -> int:
    async with httpx.AsyncClient(base_url=url) as http:
        return (await http.get("/healthz")).json()["event_hub"]["subscribers"]


async def wait_for_subscribers(url: str, count: int) -> None:
    """Until the server's hub holds `count` subscribers."""

    async def registered() -> bool:
        return await subscribers(url) == count

    await until(registered, f"{count} subscribers at the hub")
