"""Shared GraphQL documents and helpers for the lifecycle tests."""

from __future__ import annotations

from typing import Any

from app.demo import state_doc

RESULT_FIELDS = """
  __typename
  ... on Error { message }
  ... on TransitionError { currentStatus }
  ... on ConflictError { currentVersion }
  ... on ValidationError { field }
  ... on NotFoundError { id }
  ... on TaskTransitionSuccess {
    state { id status attempts progressPercentage currentStep version executionTimeSeconds startedAt completedAt
            lastError { message details } }
    event { __typename type taskId workflowId agentId }
    events { __typename type taskId }
  }
"""


def mutation(name: str, args: str) -> str:
    return f"mutation {{ r: {name}({args}) {{ {RESULT_FIELDS} }} }}"


def task(task_id: str, status: str, agent: str = "AgentA", **kw: Any) -> dict[str, Any]:
    """A standalone task's state as the server stores it."""
    kw.setdefault("workflow_id", None)
    return state_doc(task_id, "standalone", agent, status, **kw)


async def snapshot(db: Any) -> dict[str, list[dict[str, Any]]]:
    """Every document of every collection, to prove a refusal changed nothing."""
    out = {}
    for name in await db.list_collection_names():
        if name not in ("server_config",):
            out[name] = [d async for d in db[name].find().sort("_id", 1)]
    return out
