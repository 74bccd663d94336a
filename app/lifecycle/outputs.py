"""Writing the output documents of the three hierarchy levels (seed 002 §4-6).

An output belongs to its task (same id): the task must exist, and a finalized task's output is frozen.
An agent-bound caller may write only the outputs of its agents' tasks (the task's state's `agent_name`;
an output whose task has no state belongs to no agent).
"""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession

from app.lifecycle.errors import Conflict, NotFound
from app.lifecycle.levels import OUTPUT_LEVELS, HierarchyService, check_size, refuse_finalized
from app.store import tasks as task_store
from app.store.collections import CollectionSpec
from app.store.transactions import in_transaction
from app.store.types import Doc


class OutputWrites(HierarchyService):
    """Create, update and delete task outputs."""

    async def put_output(
        self, output_spec: CollectionSpec, task_id: str, fields: Doc, *, create: bool
    ) -> Doc:
        """Create (`create`) or update a task's output document; the task must exist and not be finalized."""
        level = OUTPUT_LEVELS[output_spec.name]

        async def work(session: AsyncClientSession) -> Doc:
            task = await self.load(session, level, task_id)
            await self.check_agents(session, {task_id: f"{level.label} '{task_id}'"})
            refuse_finalized(level, task, "change the output of")
            existing = await task_store.get(self.db, output_spec, task_id, session)
            if create and existing is not None:
                raise Conflict(f"the {level.label} '{task_id}' already has an output; update it instead")
            if not create and existing is None:
                raise NotFound(f"the {level.label} '{task_id}' has no output yet", id=task_id)
            doc = {**(existing or {}), **{k: v for k, v in fields.items() if k != "_id"}, "_id": task_id}
            check_size(doc, "input")
            await task_store.replace(self.db, output_spec, doc, session)
            return doc

        return await in_transaction(self.db, work)

    async def delete_output(self, output_spec: CollectionSpec, task_id: str) -> Doc:
        """Delete a task's output; the task (if it still exists) must not be finalized."""
        level = OUTPUT_LEVELS[output_spec.name]

        async def work(session: AsyncClientSession) -> Doc:
            existing = await task_store.get(self.db, output_spec, task_id, session)
            if existing is None:
                raise NotFound(f"no output for {level.label} '{task_id}'", id=task_id)
            await self.check_agents(session, {task_id: f"{level.label} '{task_id}'"})
            task = await task_store.get(self.db, level.spec, task_id, session)
            if task is not None:
                refuse_finalized(level, task, "change the output of")
            await task_store.delete(self.db, output_spec, [task_id], session)
            return existing

        return await in_transaction(self.db, work)
