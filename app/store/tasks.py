"""The three hierarchy collections (meta workflow tasks, sub-tasks, behavior tasks) and their outputs:
every MongoDB call the services make on them, generic over the level's `CollectionSpec`.

Functions take the caller's session so a service can compose them into one transaction; the rules
(who may link to whom, finalization, cascades) live in `app.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.store.collections import BEHAVIOR_TASKS, META_WORKFLOW_TASKS, SUB_TASKS, TASK_OUTPUTS, CollectionSpec
from app.store.types import Db, Doc, Session


async def get(db: Db, spec: CollectionSpec, task_id: Any, session: Session = None) -> Doc | None:
    return await db[spec.name].find_one({"_id": task_id}, session=session)


async def exists(db: Db, spec: CollectionSpec, task_id: Any, session: Session = None) -> bool:
    return await db[spec.name].find_one({"_id": task_id}, {"_id": 1}, session=session) is not None


async def first_taken(db: Db, spec: CollectionSpec, ids: list[str], session: Session = None) -> str | None:
    """One of `ids` already stored in this collection, or None."""
    doc = await db[spec.name].find_one({"_id": {"$in": ids}}, {"_id": 1}, session=session)
    return None if doc is None else doc["_id"]


async def insert(db: Db, spec: CollectionSpec, docs: list[Doc], session: Session = None) -> None:
    if docs:
        await db[spec.name].insert_many(docs, session=session)


async def set_fields(
    db: Db, spec: CollectionSpec, task_id: Any, changes: Mapping[str, Any], session: Session = None
) -> None:
    await db[spec.name].update_one({"_id": task_id}, {"$set": dict(changes)}, session=session)


async def link_child(
    db: Db, spec: CollectionSpec, parent_id: Any, children_field: str, child_id: str, session: Session = None
) -> None:
    """Append `child_id` to the parent's id list (`sub_task_ids` / `behavior_task_ids`)."""
    await db[spec.name].update_one({"_id": parent_id}, {"$push": {children_field: child_id}}, session=session)


async def unlink_child(
    db: Db, spec: CollectionSpec, parent_id: Any, children_field: str, child_id: str, session: Session = None
) -> None:
    """Remove `child_id` from the parent's id list."""
    await db[spec.name].update_one({"_id": parent_id}, {"$pull": {children_field: child_id}}, session=session)


async def children(
    db: Db,
    spec: CollectionSpec,
    child_ids: list[Any],
    parent_field: str,
    parent_ids: list[Any],
    session: Session = None,
) -> list[Doc]:
    """The children of `parent_ids`, found both through the parents' id lists (`child_ids`) and through
    their own parent field, so a child written by another program with only one side set is not missed."""
    query = {"$or": [{"_id": {"$in": child_ids}}, {parent_field: {"$in": parent_ids}}]}
    return [doc async for doc in db[spec.name].find(query, session=session)]


async def delete(db: Db, spec: CollectionSpec, ids: list[Any], session: Session = None) -> None:
    if ids:
        await db[spec.name].delete_many({"_id": {"$in": ids}}, session=session)


async def replace(db: Db, spec: CollectionSpec, doc: Doc, session: Session = None) -> None:
    """Write `doc` whole under its `_id` (created if missing): how outputs are put."""
    await db[spec.name].replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)


async def record_finalized_sub_task(
    db: Db, meta_task_id: Any, sub_task_id: str, session: Session = None
) -> None:
    """Add a finalized sub-task to its meta task's `task_outputs.finalized_sub_task_ids` (output created
    if the meta task has none yet)."""
    await db[TASK_OUTPUTS.name].update_one(
        {"_id": meta_task_id},
        {"$addToSet": {"finalized_sub_task_ids": sub_task_id}},
        upsert=True,
        session=session,
    )


async def workflow_of(db: Db, task_id: Any, session: Session = None) -> str | None:
    """The meta task whose tree holds `task_id`, looked up through the hierarchy (for states written by
    other programs, which do not record it); None for a task outside the hierarchy."""
    if await exists(db, META_WORKFLOW_TASKS, task_id, session):
        return task_id
    sub = await db[SUB_TASKS.name].find_one({"_id": task_id}, {"task_id": 1}, session=session)
    if sub is None:
        behavior = await db[BEHAVIOR_TASKS.name].find_one(
            {"_id": task_id}, {"sub_task_id": 1}, session=session
        )
        if behavior is not None:
            sub = await db[SUB_TASKS.name].find_one(
                {"_id": behavior.get("sub_task_id")}, {"task_id": 1}, session=session
            )
    return sub.get("task_id") if sub else None


async def ids_with(
    db: Db, spec: CollectionSpec, field: str, values: list[Any], session: Session = None
) -> list[Any]:
    """Ids of the documents of `spec` whose `field` is one of `values` (children by their parent field)."""
    if not values:
        return []
    cursor = db[spec.name].find({field: {"$in": values}}, {"_id": 1}, session=session)
    return [doc["_id"] async for doc in cursor]


async def listed(
    db: Db, spec: CollectionSpec, ids: list[Any], field: str, session: Session = None
) -> list[Any]:
    """The ids listed in `field` (an id list, e.g. `sub_task_ids`) of these documents of `spec`."""
    if not ids:
        return []
    cursor = db[spec.name].find({"_id": {"$in": ids}}, {field: 1}, session=session)
    return [child async for doc in cursor for child in (doc.get(field) or [])]
