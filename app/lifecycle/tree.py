"""Writing the task tree: create (one task or a whole workflow), update, move, delete (with cascade) and
finalize. One generic code path serves the three levels, driven by `Level`; every operation is one
transaction that also writes its events.

Rules (seed 002), on top of those in `app.lifecycle.levels`:
- deleting a task with children is refused unless `cascade`, which removes the subtree with its outputs and
  states; a delete that would leave another task depending on a removed one is refused;
- finalizing a sub-task appends it to its meta task's `task_outputs.finalized_sub_task_ids`;
- an agent-bound caller may act only on its agents' tasks: the task, the subtree a move or a cascade
  takes along, and the parent that gains or loses a child (`app.lifecycle.levels`, "Agent-bound callers").
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import TaskKind
from app.lifecycle import dependencies as deps_rules
from app.lifecycle import state_machine as sm
from app.lifecycle import timeouts
from app.lifecycle.documents import check_not_expired, new_state_doc
from app.lifecycle.errors import Conflict, Invalid, Refused, check_agent
from app.lifecycle.events import EventType
from app.lifecycle.levels import (
    LEVELS,
    HierarchyService,
    Level,
    NewTask,
    Written,
    check_id,
    check_size,
    refuse_finalized,
    task_event,
)
from app.store import states as state_store
from app.store import tasks as task_store
from app.store.events import append_events
from app.store.types import Doc


@dataclass(frozen=True)
class _Flat:
    """One task of a create request, flattened: its level, the request part and the document to insert."""

    level: Level
    task: NewTask
    doc: Doc


class TreeWrites(HierarchyService):
    """Create, update, move, delete and finalize tasks of the hierarchy."""

    # ------------------------------------------------------------------ creating

    async def create(
        self, new: NewTask, *, idempotency_key: str | None = None, operation: str | None = None
    ) -> Written:
        """Create a task (with its state and optional output), or a whole tree when it has children."""
        operation = operation or f"create:{new.kind}"
        # Counted before the transaction starts: a huge workflow is refused at once, not after seconds of
        # inserts ending in MongoDB's "transaction is too large".
        count, stack = 0, [new]
        while stack:
            task = stack.pop()
            count += 1
            check_agent(task.state.get("agent_name"), f"the new task at {task.path}")
            _inherit_retry_policy(task)
            _inherit_timeouts(task)
            stack.extend(task.children)
        if count > self.lifecycle.max_workflow_tasks:
            raise Invalid(
                new.path,
                f"a workflow of {count} tasks is more than MAX_WORKFLOW_TASKS"
                f" ({self.lifecycle.max_workflow_tasks}) in one request; create it in parts",
            )

        async def work(session: AsyncClientSession) -> Written:
            return await self._create_tree(session, new, self.lifecycle.clock())

        return await self.once(idempotency_key, operation, work, new)

    async def _create_tree(self, session: AsyncClientSession, root: NewTask, now: dt.datetime) -> Written:
        level = LEVELS[root.kind]
        parent_doc = await self._parent_of_new(session, level, root)
        flat: list[_Flat] = []
        _flatten(root, level, None, flat)
        ids = [f.doc["_id"] for f in flat]
        if len(set(ids)) != len(ids):
            raise Invalid(root.path, "the same id is used twice in this request")
        await self._refuse_existing(session, flat)
        _check_prev_links(flat, parent_doc)
        workflow_id = _workflow_of_new(level, flat[0].doc, parent_doc)
        states = await self._new_states(session, flat, workflow_id, now)
        for f, state in zip(flat, states, strict=True):
            check_size(f.doc, f.task.path)
            check_size(state, f"{f.task.path}.state")
            if f.task.output is not None:
                check_size(f.task.output, f"{f.task.path}.output")
        await self._insert_tree(session, flat, states)
        if parent_doc is not None and level.parent is not None and level.parent.children_field:
            await task_store.link_child(
                self.db, level.parent.spec, parent_doc["_id"], level.parent.children_field, ids[0], session
            )
        events = [
            task_event(
                EventType.TASK_CREATED,
                s["_id"],
                workflow_id,
                s,
                {"task_id": s["_id"], "task_kind": s["task_kind"], "status": s["status"]},
                now,
            )
            for s in states
        ]
        await append_events(self.db, session, events)
        return Written(doc=flat[0].doc, states=states, events=events)

    async def _parent_of_new(self, session: AsyncClientSession, level: Level, root: NewTask) -> Doc | None:
        """The existing parent a new sub-task or behavior task is created under (it must not be finalized)."""
        if level.parent is None or level.parent_field is None:
            return None
        parent_id = root.fields.get(level.parent_field)
        if not parent_id:
            raise Invalid(f"{root.path}.{level.parent_field}", f"a {level.label} needs its parent's id")
        parent_doc = await self.load(session, level.parent, parent_id)
        await self.check_agents(session, {parent_id: f"the parent {level.parent.label} '{parent_id}'"})
        refuse_finalized(level.parent, parent_doc, "add children to")
        return parent_doc

    async def _refuse_existing(self, session: AsyncClientSession, flat: list[_Flat]) -> None:
        """Ids are unique across the hierarchy (a task has one state document), so check every collection."""
        ids = [f.doc["_id"] for f in flat]
        taken = await state_store.first_taken(self.db, ids, session)
        for lvl in LEVELS.values():
            taken = taken or await task_store.first_taken(self.db, lvl.spec, ids, session)
        if taken:
            path = next(f.task.path for f in flat if f.doc["_id"] == taken)
            raise Conflict(f"a task with id '{taken}' already exists ({path})")

    async def _new_states(
        self, session: AsyncClientSession, flat: list[_Flat], workflow_id: str | None, now: dt.datetime
    ) -> list[Doc]:
        """The state of every new task, its dependencies checked and its initial status decided (a task
        waits for dependencies created in the same request, in dependency order)."""
        written = {
            f.doc["_id"]: deps_rules.normalise(
                f.task.state.get("dependencies") or [], f"{f.task.path}.state.dependencies", f.doc["_id"]
            )
            for f in flat
        }
        paths = {f.doc["_id"]: f"{f.task.path}.state" for f in flat}
        statuses = await deps_rules.check_graph(self.db, session, written, paths)
        for f in flat:
            check_not_expired(f.task.state, now, f"{f.task.path}.state")
        initial: dict[str, str] = {}
        for tid in deps_rules.topological(written):
            initial[tid] = sm.initial_status(written[tid], {**statuses, **initial})
        return [
            new_state_doc(
                f.doc["_id"],
                f.level.kind,
                workflow_id,
                f.task.state,
                written[f.doc["_id"]],
                initial[f.doc["_id"]],
                now,
                timeout_defaults=self.lifecycle.timeouts,
            )
            for f in flat
        ]

    async def _insert_tree(self, session: AsyncClientSession, flat: list[_Flat], states: list[Doc]) -> None:
        """Tasks per collection, then their outputs, then their states."""
        for lvl in LEVELS.values():
            at_level = [f for f in flat if f.level is lvl]
            await task_store.insert(self.db, lvl.spec, [f.doc for f in at_level], session)
            outputs = [{**f.task.output, "_id": f.doc["_id"]} for f in at_level if f.task.output is not None]
            await task_store.insert(self.db, lvl.output_spec, outputs, session)
        await state_store.insert(self.db, states, session)

    # ------------------------------------------------------------------ updating and moving

    async def update(
        self, kind: str, task_id: str, patch: Doc, *, idempotency_key: str | None = None
    ) -> Written:
        """Set the given seed fields of a task; a new parent id moves it (both id lists updated).

        An agent-bound caller must be allowed for the task and, for a move, for its subtree and for the
        old and the new parent."""
        level = LEVELS[kind]
        operation = f"update:{kind}:{task_id}"

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            doc = await self.load(session, level, task_id)
            await self.check_agents(session, {task_id: f"{level.label} '{task_id}'"})
            refuse_finalized(level, doc, "edit")
            changes = {
                k: v for k, v in patch.items() if k not in ("_id", level.children_field, "is_finalized")
            }
            if not changes:
                raise Invalid("input", "nothing to update")
            if level.parent_field in changes and not changes[level.parent_field]:
                # A child always belongs to a parent: a null parent id would leave it dangling.
                raise Invalid(
                    f"input.{level.parent_field}",
                    f"a {level.label} needs a parent; give another id to move it",
                )
            new_parent = changes.get(level.parent_field) if level.parent_field else None
            if new_parent is not None and new_parent != doc.get(level.parent_field or ""):
                await self._move(session, level, doc, new_parent)
            if changes.get("prev_sub_task_id") is not None:
                meta = await self.load(
                    session, LEVELS[TaskKind.META_WORKFLOW], changes.get("task_id") or doc.get("task_id")
                )
                _check_prev_links([_Flat(level, NewTask(kind, {}, path="input"), {**doc, **changes})], meta)
            updated = {**doc, **changes}
            check_size(updated, "input")
            await task_store.set_fields(self.db, level.spec, task_id, changes, session)
            state = await state_store.get(self.db, task_id, session)
            workflow_id = await self.lifecycle.workflow_id(session, state or {"_id": task_id})
            events = [
                task_event(
                    EventType.TASK_UPDATED,
                    task_id,
                    workflow_id,
                    state,
                    {"task_id": task_id, "fields": sorted(changes)},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            return Written(doc=updated, states=[state] if state else [], events=events)

        return await self.once(idempotency_key, operation, work, patch)

    async def _move(self, session: AsyncClientSession, level: Level, doc: Doc, new_parent_id: str) -> None:
        parent_level = level.parent
        assert parent_level is not None and parent_level.children_field is not None  # only children move
        new_parent = await self.load(session, parent_level, new_parent_id)
        subtree = await self._subtree(session, level, doc)
        moved = f"(moved with {level.label} '{doc['_id']}')"
        await self.check_agents(
            session,
            {
                new_parent_id: f"the new parent {parent_level.label} '{new_parent_id}'",
                **{d["_id"]: f"{lvl.label} '{d['_id']}' {moved}" for lvl, d in subtree[1:]},
            },
        )
        refuse_finalized(parent_level, new_parent, "add children to")
        old_parent_id = doc.get(level.parent_field or "")
        if old_parent_id:
            old_parent = await task_store.get(self.db, parent_level.spec, old_parent_id, session)
            if old_parent is not None:
                await self.check_agents(
                    session, {old_parent_id: f"the current parent {parent_level.label} '{old_parent_id}'"}
                )
                refuse_finalized(parent_level, old_parent, "remove children from")
                await task_store.unlink_child(
                    self.db,
                    parent_level.spec,
                    old_parent_id,
                    parent_level.children_field,
                    doc["_id"],
                    session,
                )
        await task_store.link_child(
            self.db, parent_level.spec, new_parent_id, parent_level.children_field, doc["_id"], session
        )
        # The subtree's states now belong to another workflow.
        workflow_id = (
            new_parent_id if parent_level.kind == TaskKind.META_WORKFLOW else new_parent.get("task_id")
        )
        await state_store.set_workflow(self.db, [d["_id"] for _, d in subtree], workflow_id, session)

    # ------------------------------------------------------------------ deleting

    async def delete(self, kind: str, task_id: str, *, cascade: bool = False) -> Written:
        """Delete a task, its output and state; with `cascade`, its whole subtree too.

        An agent-bound caller must be allowed for every task deleted and for the parent losing it."""
        level = LEVELS[kind]

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            doc = await self.load(session, level, task_id)
            await self.check_agents(session, {task_id: f"{level.label} '{task_id}'"})
            refuse_finalized(level, doc, "delete")
            children = doc.get(level.children_field) or [] if level.children_field else []
            if children and not cascade and level.child is not None:
                raise Conflict(
                    f"{level.label} '{task_id}' has {len(children)} {level.child.label}(s);"
                    " pass cascade: true to delete them too"
                )
            parent_id = doc.get(level.parent_field) if level.parent_field else None
            if parent_id and level.parent is not None:
                # A finalized parent's child list is final too: no path may take a child out of it.
                parent = await task_store.get(self.db, level.parent.spec, parent_id, session)
                if parent is not None:
                    await self.check_agents(
                        session, {parent_id: f"the parent {level.parent.label} '{parent_id}'"}
                    )
                    refuse_finalized(level.parent, parent, "remove children from")
            subtree = await self._subtree(session, level, doc)
            deleted = f"(deleted with {level.label} '{task_id}')"
            await self.check_agents(
                session, {d["_id"]: f"{lvl.label} '{d['_id']}' {deleted}" for lvl, d in subtree[1:]}
            )
            for lvl, descendant in subtree[1:]:
                # A cascade that would remove a finalized descendant is refused as a whole.
                if descendant.get("is_finalized"):
                    raise Refused(
                        f"cannot delete {level.label} '{task_id}': its {lvl.label} '{descendant['_id']}'"
                        " is finalized (a cascade never removes a finalized task)"
                    )
            ids = [d["_id"] for _, d in subtree]
            dependent = await state_store.first_dependent(self.db, ids, outside=ids, session=session)
            if dependent is not None:
                raise Conflict(
                    f"task '{dependent}' depends on a task being deleted; change its dependencies first"
                )
            state = await state_store.get(self.db, task_id, session)
            workflow_id = await self.lifecycle.workflow_id(
                session, state or {"_id": task_id, "task_kind": kind}
            )
            for lvl in LEVELS.values():
                lvl_ids = [d["_id"] for l_, d in subtree if l_ is lvl]
                await task_store.delete(self.db, lvl.spec, lvl_ids, session)
                await task_store.delete(self.db, lvl.output_spec, lvl_ids, session)
            await state_store.delete(self.db, ids, session)
            if parent_id and level.parent is not None and level.parent.children_field:
                await task_store.unlink_child(
                    self.db, level.parent.spec, parent_id, level.parent.children_field, task_id, session
                )
            events = [
                task_event(
                    EventType.TASK_DELETED,
                    task_id,
                    workflow_id if kind != TaskKind.META_WORKFLOW else task_id,
                    state,
                    {"task_id": task_id, "deleted_ids": ids, "cascade": cascade},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            return Written(doc=doc, states=[], events=events, deleted_ids=ids)

        return await self.run(work)

    async def _subtree(self, session: AsyncClientSession, level: Level, doc: Doc) -> list[tuple[Level, Doc]]:
        """The task and every descendant, one `find` per level below it."""
        out: list[tuple[Level, Doc]] = [(level, doc)]
        current, docs = level, [doc]
        while current.child is not None and current.children_field and docs:
            child_level = current.child
            child_ids = [cid for d in docs for cid in d.get(current.children_field) or []]
            docs = await task_store.children(
                self.db,
                child_level.spec,
                child_ids,
                child_level.parent_field or "",
                [d["_id"] for d in docs],
                session,
            )
            out += [(child_level, d) for d in docs]
            current = child_level
        return out

    # ------------------------------------------------------------------ finalizing

    async def finalize(self, kind: str, task_id: str, *, idempotency_key: str | None = None) -> Written:
        """Mark a task finalized (one-way); a sub-task is also recorded in its meta task's output."""
        level = LEVELS[kind]
        operation = f"finalize:{kind}:{task_id}"

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            doc = await self.load(session, level, task_id)
            await self.check_agents(session, {task_id: f"{level.label} '{task_id}'"})
            if doc.get("is_finalized"):
                raise Refused(f"{level.label} '{task_id}' is already finalized")
            await task_store.set_fields(self.db, level.spec, task_id, {"is_finalized": True}, session)
            if kind == TaskKind.SUB_TASK and doc.get("task_id"):
                await task_store.record_finalized_sub_task(self.db, doc["task_id"], task_id, session)
            state = await state_store.get(self.db, task_id, session)
            events = [
                task_event(
                    EventType.TASK_FINALIZED,
                    task_id,
                    await self.lifecycle.workflow_id(session, state or {"_id": task_id, "task_kind": kind}),
                    state,
                    {"task_id": task_id, "task_kind": kind},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            return Written(doc={**doc, "is_finalized": True}, states=[state] if state else [], events=events)

        return await self.once(idempotency_key, operation, work)


def _inherit_retry_policy(task: NewTask) -> None:
    """A task's retry policy goes to each child that names none (`createWorkflow` sets a subtree's policy
    once); a child's own `max_attempts` wins over the inherited `maximum_attempts`. Its concurrency key
    goes down the same way."""
    key = task.state.get("concurrency_key")
    if key is not None:
        for child in task.children:
            if child.state.get("concurrency_key") is None:
                child.state = {**child.state, "concurrency_key": key}
    policy = task.state.get("retry_policy")
    if policy is None:
        return
    for child in task.children:
        if child.state.get("retry_policy") is None:
            inherited = dict(policy)
            if child.state.get("max_attempts") is not None:
                inherited.pop("maximum_attempts", None)
            elif inherited.get("maximum_attempts") is None and task.state.get("max_attempts") is not None:
                inherited["maximum_attempts"] = task.state["max_attempts"]
            child.state = {**child.state, "retry_policy": inherited}


def _inherit_timeouts(task: NewTask) -> None:
    """Each of a task's timeouts goes to each child that names none of that kind (`createWorkflow` sets a
    subtree's timeouts once; a child's own value, 0 included, wins)."""
    given = {name: task.state[name] for name in timeouts.FIELDS if task.state.get(name) is not None}
    if not given:
        return
    for child in task.children:
        missing = {name: value for name, value in given.items() if child.state.get(name) is None}
        if missing:
            child.state = {**child.state, **missing}


def _flatten(task: NewTask, level: Level, parent_id: str | None, out: list[_Flat]) -> None:
    """Append the task and its descendants to `out`, depth first, assigning ids and linking children."""
    if task.kind != level.kind:
        raise Invalid(task.path, f"expected a {level.label}")
    task_id = check_id(task.id, f"{task.path}.id") if task.id is not None else str(uuid.uuid4())
    doc: Doc = {"_id": task_id, **{k: v for k, v in task.fields.items() if k != "_id"}}
    if level.children_field:
        doc[level.children_field] = []
    if parent_id is not None and level.parent_field:
        doc[level.parent_field] = parent_id
    doc.setdefault("is_finalized", False)
    out.append(_Flat(level, task, doc))
    if task.children and (level.child is None or not level.children_field):
        raise Invalid(f"{task.path}.children", f"a {level.label} has no children")
    previous: str | None = None
    for child in task.children:
        assert level.child is not None and level.children_field is not None  # checked above
        position = len(out)
        _flatten(child, level.child, task_id, out)
        child_doc = out[position].doc
        if level.child.kind == TaskKind.SUB_TASK and "prev_sub_task_id" not in child.fields:
            child_doc["prev_sub_task_id"] = previous  # chain sub-tasks in list order by default
        doc[level.children_field].append(child_doc["_id"])
        previous = child_doc["_id"]


def _workflow_of_new(level: Level, root_doc: Doc, parent_doc: Doc | None) -> str | None:
    """The workflow of every new task: the new meta task itself, or the existing parent's workflow."""
    if level.kind == TaskKind.META_WORKFLOW:
        return root_doc["_id"]
    assert parent_doc is not None  # a sub-task or behavior task is created under an existing parent
    if level.kind == TaskKind.SUB_TASK:  # its parent is the meta task
        return parent_doc["_id"]
    return parent_doc.get("task_id")  # a behavior task's parent sub-task names the meta task


def _check_prev_links(flat: list[_Flat], parent_doc: Doc | None) -> None:
    """A sub-task's `prev_sub_task_id` names a sub-task of the same meta task."""
    siblings = {f.doc["_id"] for f in flat if f.level.kind == TaskKind.SUB_TASK}
    if parent_doc is not None and "sub_task_ids" in parent_doc:
        siblings |= set(parent_doc.get("sub_task_ids") or [])
    for f in flat:
        prev = f.doc.get("prev_sub_task_id")
        if f.level.kind == TaskKind.SUB_TASK and prev is not None and prev not in siblings:
            raise Invalid(
                f"{f.task.path}.prev_sub_task_id", f"'{prev}' is not a sub-task of the same meta task"
            )
