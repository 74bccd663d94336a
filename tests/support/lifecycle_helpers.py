"""Shared GraphQL documents and helpers for the lifecycle tests."""

from __future__ import annotations

from typing import Any

from pymongo.errors import OperationFailure

from app.demo.documents import state_doc

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


def keyed_task(task_id: str, status: str, workflow: str, key: str | None, agent: str = "A") -> dict[str, Any]:
    doc = task(task_id, status, agent, workflow_id=workflow)
    if key is not None:
        doc["concurrency_key"] = key
    return doc


async def snapshot(db: Any) -> dict[str, list[dict[str, Any]]]:
    """Every document of every collection, to prove a refusal changed nothing."""
    out = {}
    for name in await db.list_collection_names():
        if name not in ("server_config", "server_processes"):
            out[name] = [d async for d in db[name].find().sort("_id", 1)]
    return out


async def append_stamped(db: Any, events: list[dict[str, Any]]) -> None:
    """Append events as another writer would (outside the API), and wait until the running server's
    event hub has stamped their commit-order positions; each event gets its `seq`."""
    import asyncio

    from pymongo.read_concern import ReadConcern

    from app.store.events import append_events

    await append_events(db, None, events)
    ids = [e["_id"] for e in events]
    # Read as the server's readers do (majority-committed): a stamp can be visible to a local read a moment
    # before it is majority-committed, and a page read then would not include it yet.
    coll = db.task_events.with_options(read_concern=ReadConcern("majority"))
    async with asyncio.timeout(60):  # generous: the machine may be loaded
        while True:
            stored = {d["_id"]: d.get("seq") async for d in coll.find({"_id": {"$in": ids}})}
            if all(stored.get(i) is not None for i in ids):
                break
            await asyncio.sleep(0.01)
    for event in events:
        event["seq"] = stored[event["_id"]]


#: MongoDB's error code for a write that collides with another open transaction's.
WRITE_CONFLICT = 112


async def held(collection: Any, doc_id: str) -> bool:
    """Whether an open transaction has written this document: a write of ours in a transaction is refused
    with WriteConflict then. Ours is aborted either way, so it changes nothing."""
    async with collection.database.client.start_session() as session:
        await session.start_transaction()
        try:
            await collection.update_one({"_id": doc_id}, {"$set": {"held_probe": True}}, session=session)
        except OperationFailure as exc:
            if exc.code == WRITE_CONFLICT:
                return True
            raise
        finally:
            await session.abort_transaction()
    return False
