"""Standalone agent tasks (seed 000/001: a task with only its state, outside the hierarchy) and the edits
of any task's descriptive state fields.

A state's status is the lifecycle's (`app.lifecycle.transitions`); here only what a client may set —
agent, inputs, priority, dependencies, parent — is written, with compare-and-set on `version`.

An agent-bound caller (`app.lifecycle.levels`, "Agent-bound callers") may create, edit or delete only
its agents' tasks, may give a task only to one of its agents, and may add a child to, move a task to or
from, or delete a child of only its agents' tasks (a standalone task's parent is the one its
`parent_task_id` names).
"""

from __future__ import annotations

import datetime as dt
import uuid

from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import Status, TaskKind, normalise_status
from app.lifecycle import dependencies as deps_rules
from app.lifecycle import state_machine as sm
from app.lifecycle.documents import check_not_expired, new_state_doc, state_fields
from app.lifecycle.errors import Conflict, Invalid, NotFound, check_agent
from app.lifecycle.events import EventType
from app.lifecycle.levels import LEVELS, HierarchyService, Written, check_id, check_size, task_event
from app.lifecycle.transitions import check_version, version_of
from app.store import states as state_store
from app.store import tasks as task_store
from app.store.events import append_events
from app.store.types import Doc


class AgentTaskWrites(HierarchyService):
    """Create, edit and delete standalone agent tasks; edit any task's state fields."""

    async def create_standalone(
        self,
        task_id: str | None,
        state: Doc,
        *,
        idempotency_key: str | None = None,
        parent_id: str | None = None,
    ) -> Written:
        """A task outside the hierarchy (seed 000/001): only its state document.

        With `parent_id` (seed 001 `add_subtask`) the task is created under that parent: the parent is
        the subject of the request, so an unknown one is NotFound rather than an invalid input field,
        and an input naming another parent is refused.
        """
        operation = "create_agent_task" if parent_id is None else f"add_subtask:{parent_id}"
        check_agent(state.get("agent_name"), "the new task")
        if parent_id is not None:
            named = state.get("parent_task_id")
            if named is not None and named != parent_id:
                raise Invalid(
                    "input.parent_task_id", f"a sub-task of '{parent_id}' cannot name '{named}' as parent"
                )
            state = {**state, "parent_task_id": parent_id}

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            tid = check_id(task_id, "input.id") if task_id is not None else str(uuid.uuid4())
            if await state_store.exists(self.db, tid, session):
                raise Conflict(f"a task with id '{tid}' already exists")
            parent = state.get("parent_task_id")
            if parent is not None and not await state_store.exists(self.db, parent, session):
                raise NotFound(f"no parent task with id '{parent}'", id=parent)
            if parent is not None:
                await self.check_agents(session, {parent: f"the parent task '{parent}'"})
            deps = deps_rules.normalise(state.get("dependencies") or [], "input.dependencies", tid)
            statuses = await deps_rules.check_graph(self.db, session, {tid: deps}, {tid: "input"})
            check_not_expired(state, now, "input")
            doc = new_state_doc(
                tid,
                TaskKind.STANDALONE,
                None,
                state,
                deps,
                sm.initial_status(deps, statuses),
                now,
                timeout_defaults=self.lifecycle.timeouts,
            )
            check_size(doc, "input")
            await state_store.insert(self.db, [doc], session)
            events = [
                task_event(
                    EventType.TASK_CREATED,
                    tid,
                    None,
                    doc,
                    {"task_id": tid, "task_kind": TaskKind.STANDALONE.value, "status": doc["status"]},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            return Written(doc=doc, states=[doc], events=events)

        return await self.once(idempotency_key, operation, work, {"id": task_id, "state": state})

    async def update_state(
        self,
        task_id: str,
        patch: Doc,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Written:
        """Edit the descriptive fields of any task's state (not its status: that is the lifecycle's).

        An agent-bound caller must be allowed for the task's current agent, for the agent it is given to
        (`agent_name` in `patch`, null included) and, when `parent_task_id` changes, for the old and the new
        parent (each if it exists)."""
        operation = f"update_agent_task:{task_id}"

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            state = await state_store.get(self.db, task_id, session)
            if state is None:
                raise NotFound(f"no task with id '{task_id}'", id=task_id)
            check_agent(state.get("agent_name"), f"task '{task_id}'")
            check_version(state, expected_version)
            changes = state_fields(patch)
            if not changes:
                raise Invalid("input", "nothing to update")
            if "agent_name" in changes:
                check_agent(changes["agent_name"], f"task '{task_id}', given to its new agent,")
            old_parent, new_parent = state.get("parent_task_id"), changes.get("parent_task_id")
            if "parent_task_id" in changes and new_parent != old_parent:
                parents = {}
                if old_parent:
                    parents[old_parent] = f"the current parent task '{old_parent}' of task '{task_id}'"
                if new_parent:
                    parents[new_parent] = f"the new parent task '{new_parent}' of task '{task_id}'"
                await self.check_agents(session, parents, existing_only=True)
            if "dependencies" in changes:
                changes.update(await self._dependency_changes(session, state, changes["dependencies"], now))
            # A new timeout (or start time) moves the deadline it runs under; a status change above already
            # armed or cleared its own.
            for name, deadline in sm.retimed(state, changes, now).items():
                changes.setdefault(name, deadline)
            parent = changes.get("parent_task_id")
            if parent is not None:
                if parent == task_id:
                    raise Invalid("input.parent_task_id", "a task cannot be its own parent")
                if not await state_store.exists(self.db, parent, session):
                    raise Invalid("input.parent_task_id", f"unknown parent task '{parent}'")
            changes["updated_at"] = now
            check_size({**state, **changes}, "input")
            updated = await state_store.update_if_version(
                self.db, state, changes, version_of(state) + 1, session
            )
            if updated is None:
                raise Conflict(f"task '{task_id}' changed concurrently; read it again and retry")
            workflow_id = await self.lifecycle.workflow_id(session, updated)
            events: list[Doc] = []
            if updated.get("status") != state.get("status"):
                payload = {
                    "task_id": task_id,
                    "from_status": state.get("status"),
                    "to_status": updated.get("status"),
                }
                events.append(
                    task_event(EventType.STATUS_CHANGED, task_id, workflow_id, updated, payload, now)
                )
            fields = sorted(k for k in changes if k != "updated_at")
            events.append(
                task_event(
                    EventType.TASK_UPDATED,
                    task_id,
                    workflow_id,
                    updated,
                    {"task_id": task_id, "fields": fields},
                    now,
                )
            )
            await append_events(self.db, session, events)
            return Written(doc=updated, states=[updated], events=events)

        return await self.once(
            idempotency_key, operation, work, {"patch": patch, "version": expected_version}
        )

    async def _dependency_changes(
        self, session: AsyncClientSession, state: Doc, new: list[Doc] | None, now: dt.datetime
    ) -> Doc:
        """The state fields that new dependencies change: the dependencies themselves and, when they block a
        task that has not started or release one that waited, its status."""
        task_id = state["_id"]
        deps = deps_rules.normalise(new or [], "input.dependencies", task_id)
        statuses = await deps_rules.check_graph(self.db, session, {task_id: deps}, {task_id: "input"})
        changes: Doc = {"dependencies": deps}
        status = normalise_status(state.get("status"))
        met = sm.dependencies_met({"dependencies": deps}, statuses)
        if status in (Status.PENDING, Status.RETRYING) and not met:
            changes.update(sm.block(state, now).set_fields)
        elif status == Status.AWAITING_DEPENDENCY and met:
            changes.update(sm.release(state, now).set_fields)
        return changes

    async def delete_standalone(self, task_id: str) -> Written:
        """Delete a standalone task's state; refused while another task depends on it or names it parent.

        An agent-bound caller must be allowed for the task and for its parent (if it has one that exists)."""

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            state = await state_store.get(self.db, task_id, session)
            if state is None:
                raise NotFound(f"no task with id '{task_id}'", id=task_id)
            check_agent(state.get("agent_name"), f"task '{task_id}'")
            parent = state.get("parent_task_id")
            if parent:
                await self.check_agents(
                    session, {parent: f"the parent task '{parent}' of task '{task_id}'"}, existing_only=True
                )
            for level in LEVELS.values():
                if await task_store.exists(self.db, level.spec, task_id, session):
                    raise Conflict(
                        f"'{task_id}' is a {level.label}; delete it as one (its state goes with it)"
                    )
            dependent = await state_store.first_dependent(self.db, [task_id], session=session)
            if dependent is not None:
                raise Conflict(f"task '{dependent}' depends on '{task_id}'; change its dependencies first")
            child = await state_store.first_child(self.db, task_id, session)
            if child is not None:
                raise Conflict(f"task '{child}' has '{task_id}' as its parent; delete or move it first")
            await state_store.delete(self.db, [task_id], session)
            events = [
                task_event(
                    EventType.TASK_DELETED,
                    task_id,
                    state.get("workflow_id"),
                    state,
                    {"task_id": task_id, "deleted_ids": [task_id], "cascade": False},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            return Written(doc=state, states=[], events=events, deleted_ids=[task_id])

        return await self.run(work)
