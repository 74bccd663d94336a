"""Writing the task hierarchy: create (one task or a whole workflow), update, move, delete (with cascade),
finalize, the output documents, and standalone agent tasks. One generic code path serves the three levels,
driven by `Level`; every operation is one transaction that also writes its events.

Rules (DESIGN.md §2, seed 002):
- a parent's id list (`sub_task_ids`, `behavior_task_ids`) and the child's parent id are written together;
- every task gets its `agent_task_states` document (same id) when it is created, and loses it when deleted;
- deleting a task with children is refused unless `cascade`, which removes the subtree with its outputs and
  states; a delete that would leave another task depending on a removed one is refused;
- finalization is one-way; a finalized task refuses edits, moves, deletes and new children or outputs;
  finalizing a sub-task appends it to its meta task's `task_outputs.finalized_sub_task_ids`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from app.lifecycle import dependencies as deps_rules
from app.lifecycle import idempotency
from app.lifecycle import state_machine as sm
from app.lifecycle.errors import Conflict, Invalid, NotFound, Refused
from app.lifecycle.events import EventType, event_doc
from app.lifecycle.transitions import Lifecycle, check_version, version_filter, version_of
from app.store import collections as c
from app.store.collections import CollectionSpec
from app.store.events import append_events
from app.store.storable import Unstorable, check_storable
from app.store.transactions import in_transaction

Doc = dict[str, Any]
MAX_ID_LENGTH = 200
MAX_DOCUMENT_BYTES = 256 * 1024
PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy and how it links to its parent and children."""

    kind: str
    label: str
    spec: CollectionSpec
    output_spec: CollectionSpec
    parent_kind: str | None = None
    parent_field: str | None = None
    children_field: str | None = None
    child_kind: str | None = None


LEVELS: dict[str, Level] = {
    "meta_workflow": Level(
        "meta_workflow",
        "meta workflow task",
        c.META_WORKFLOW_TASKS,
        c.TASK_OUTPUTS,
        children_field="sub_task_ids",
        child_kind="sub_task",
    ),
    "sub_task": Level(
        "sub_task",
        "sub-task",
        c.SUB_TASKS,
        c.SUB_TASK_OUTPUTS,
        parent_kind="meta_workflow",
        parent_field="task_id",
        children_field="behavior_task_ids",
        child_kind="behavior_task",
    ),
    "behavior_task": Level(
        "behavior_task",
        "behavior task",
        c.BEHAVIOR_TASKS,
        c.BEHAVIOR_TASK_OUTPUTS,
        parent_kind="sub_task",
        parent_field="sub_task_id",
    ),
}
OUTPUT_LEVELS: dict[str, Level] = {level.output_spec.name: level for level in LEVELS.values()}


@dataclass
class NewTask:
    """A task to create: seed fields, state input, an optional output and, for a workflow, children."""

    kind: str
    fields: Doc
    state: Doc = field(default_factory=dict)
    output: Doc | None = None
    children: list[NewTask] = field(default_factory=list)
    id: str | None = None
    path: str = "input"


@dataclass(frozen=True)
class Written:
    """What an operation wrote: the main document, the states it touched and the events, in order."""

    doc: Doc | None
    states: list[Doc]
    events: list[Doc]
    deleted_ids: list[str] = field(default_factory=list)


def _check_id(value: str, path: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
        raise Invalid(path, f"an id must be 1 to {MAX_ID_LENGTH} characters long")
    return value


def _check_size(doc: Mapping[str, Any], path: str) -> None:
    """Refuse a document MongoDB could not store as sent (app/store/storable.py), or one too large."""
    try:
        check_storable(dict(doc), path)
    except Unstorable as exc:
        raise Invalid(exc.path, str(exc)) from None
    size = len(bson.encode(dict(doc)))
    if size > MAX_DOCUMENT_BYTES:
        raise Invalid(path, f"payload too large: {size} bytes (limit {MAX_DOCUMENT_BYTES})")


class Hierarchy:
    """Hierarchy writes over one database; lifecycle rules come from `Lifecycle`."""

    def __init__(self, db: AsyncDatabase[Doc], lifecycle: Lifecycle) -> None:
        self.db = db
        self.lifecycle = lifecycle
        self.states = db[c.AGENT_TASK_STATES.name]

    def _coll(self, spec: CollectionSpec):  # -> AsyncCollection
        return self.db[spec.name]

    # ------------------------------------------------------------------ creating

    async def create(
        self, new: NewTask, *, idempotency_key: str | None = None, operation: str | None = None
    ) -> Written:
        """Create a task (with its state and optional output), or a whole tree when it has children."""
        operation = operation or f"create:{new.kind}"

        async def work(session: AsyncClientSession) -> Written:
            written = await self._create_tree(session, new, self.lifecycle.clock())
            return written

        return await self._once(idempotency_key, operation, work)

    async def _create_tree(self, session: AsyncClientSession, root: NewTask, now: dt.datetime) -> Written:
        level = LEVELS[root.kind]
        parent_doc: Doc | None = None
        workflow_id: str | None
        if level.parent_kind is not None:
            parent_id = root.fields.get(level.parent_field or "")
            if not parent_id:
                raise Invalid(
                    f"{root.path}.{_camel(level.parent_field)}", f"a {level.label} needs its parent's id"
                )
            parent_doc = await self._load(session, LEVELS[level.parent_kind], parent_id, f"{root.path}")
            self._refuse_finalized(LEVELS[level.parent_kind], parent_doc, "add children to")
        # Flatten the tree, assigning ids; children link to their parent here.
        flat: list[tuple[Level, NewTask, Doc]] = []
        self._flatten(root, level, None, flat)
        ids = [doc["_id"] for _, _, doc in flat]
        if len(set(ids)) != len(ids):
            raise Invalid(root.path, "the same id is used twice in this request")
        # The workflow of every new task: the new meta task itself, or the existing parent's workflow.
        if level.kind == "meta_workflow":
            workflow_id = flat[0][2]["_id"]
        elif level.kind == "sub_task":  # its parent is the meta task
            workflow_id = parent_doc["_id"]  # type: ignore[index]
        else:  # a behavior task's parent sub-task names the meta task
            workflow_id = parent_doc.get("task_id")  # type: ignore[union-attr]
        await self._refuse_existing(session, flat)
        self._check_prev_links(flat, parent_doc)
        # States and dependencies.
        written_deps = {
            doc["_id"]: deps_rules.normalise(
                task.state.get("dependencies") or [], f"{task.path}.state.dependencies", doc["_id"]
            )
            for _, task, doc in flat
        }
        paths = {doc["_id"]: f"{task.path}.state" for _, task, doc in flat}
        statuses = await deps_rules.check_graph(self.states, session, written_deps, paths)
        initial: dict[str, str] = {}
        for tid in deps_rules.topological(written_deps):
            initial[tid] = sm.initial_status(written_deps[tid], {**statuses, **initial})
        by_id = {doc["_id"]: (lvl, task, doc) for lvl, task, doc in flat}
        states = [
            new_state_doc(
                tid,
                by_id[tid][0].kind,
                workflow_id,
                by_id[tid][1].state,
                written_deps[tid],
                initial[tid],
                now,
            )
            for tid in ids
        ]
        outputs = [
            (lvl, {**task.output, "_id": doc["_id"]}) for lvl, task, doc in flat if task.output is not None
        ]
        for (_, task, doc), state in zip(flat, states, strict=True):
            _check_size(doc, task.path)
            _check_size(state, f"{task.path}.state")
            if task.output is not None:
                _check_size(task.output, f"{task.path}.output")
        # Write: tasks per collection, outputs, states, the link into an existing parent, then events.
        for lvl in LEVELS.values():
            docs = [doc for level_, _, doc in flat if level_ is lvl]
            if docs:
                await self._coll(lvl.spec).insert_many(docs, session=session)
            level_outputs = [out for level_, out in outputs if level_ is lvl]
            if level_outputs:
                await self._coll(lvl.output_spec).insert_many(level_outputs, session=session)
        await self.states.insert_many(states, session=session)
        if parent_doc is not None:
            parent_level = LEVELS[level.parent_kind]  # type: ignore[index]
            await self._coll(parent_level.spec).update_one(
                {"_id": parent_doc["_id"]},
                {"$push": {parent_level.children_field: flat[0][2]["_id"]}},
                session=session,
            )
        events = [
            event_doc(
                EventType.TASK_CREATED,
                s["_id"],
                workflow_id,
                s.get("agent_name") or None,
                {"task_id": s["_id"], "task_kind": s["task_kind"], "status": s["status"]},
                now,
            )
            for s in states
        ]
        await append_events(self.db, session, events)
        return Written(doc=flat[0][2], states=states, events=events)

    def _flatten(
        self, task: NewTask, level: Level, parent_id: str | None, out: list[tuple[Level, NewTask, Doc]]
    ) -> None:
        if task.kind != level.kind:
            raise Invalid(task.path, f"expected a {level.label}")
        task_id = _check_id(task.id, f"{task.path}.id") if task.id is not None else str(uuid.uuid4())
        doc: Doc = {"_id": task_id, **{k: v for k, v in task.fields.items() if k != "_id"}}
        if level.children_field:
            doc[level.children_field] = []
        if parent_id is not None and level.parent_field:
            doc[level.parent_field] = parent_id
        doc.setdefault("is_finalized", False)
        out.append((level, task, doc))
        if task.children and not level.child_kind:
            raise Invalid(f"{task.path}.children", f"a {level.label} has no children")
        previous: str | None = None
        for child in task.children:
            child_level = LEVELS[level.child_kind]  # type: ignore[index]
            position = len(out)
            self._flatten(child, child_level, task_id, out)
            child_doc = out[position][2]
            if child_level.kind == "sub_task" and "prev_sub_task_id" not in child.fields:
                child_doc["prev_sub_task_id"] = previous  # chain sub-tasks in list order by default
            doc[level.children_field].append(child_doc["_id"])  # type: ignore[index]
            previous = child_doc["_id"]

    async def _refuse_existing(
        self, session: AsyncClientSession, flat: list[tuple[Level, NewTask, Doc]]
    ) -> None:
        """Ids are unique across the hierarchy (a task has one state document), so check every collection."""
        ids = [doc["_id"] for _, _, doc in flat]
        taken = await self.states.find_one({"_id": {"$in": ids}}, {"_id": 1}, session=session)
        for lvl in LEVELS.values():
            taken = taken or await self._coll(lvl.spec).find_one(
                {"_id": {"$in": ids}}, {"_id": 1}, session=session
            )
        if taken:
            path = next(task.path for _, task, doc in flat if doc["_id"] == taken["_id"])
            raise Conflict(f"a task with id '{taken['_id']}' already exists ({path})")

    def _check_prev_links(self, flat: list[tuple[Level, NewTask, Doc]], parent_doc: Doc | None) -> None:
        siblings = {doc["_id"] for lvl, _, doc in flat if lvl.kind == "sub_task"}
        if parent_doc is not None and "sub_task_ids" in parent_doc:
            siblings |= set(parent_doc.get("sub_task_ids") or [])
        for lvl, task, doc in flat:
            prev = doc.get("prev_sub_task_id")
            if lvl.kind == "sub_task" and prev is not None and prev not in siblings:
                raise Invalid(
                    f"{task.path}.prevSubTaskId", f"'{prev}' is not a sub-task of the same meta task"
                )

    # ------------------------------------------------------------------ updating and moving

    async def update(
        self, kind: str, task_id: str, patch: Doc, *, idempotency_key: str | None = None
    ) -> Written:
        """Set the given seed fields of a task; a new parent id moves it (both id lists updated)."""
        level = LEVELS[kind]
        operation = f"update:{kind}:{task_id}"

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            doc = await self._load(session, level, task_id, "id")
            self._refuse_finalized(level, doc, "edit")
            changes = {
                k: v for k, v in patch.items() if k not in ("_id", level.children_field, "is_finalized")
            }
            if not changes:
                raise Invalid("input", "nothing to update")
            if level.parent_field in changes and not changes[level.parent_field]:
                # A child always belongs to a parent: a null parent id would leave it dangling.
                raise Invalid(
                    f"input.{_camel(level.parent_field)}",
                    f"a {level.label} needs a parent; give another id to move it",
                )
            new_parent = changes.get(level.parent_field) if level.parent_field else None
            if new_parent is not None and new_parent != doc.get(level.parent_field):
                await self._move(session, level, doc, new_parent)
            if "prev_sub_task_id" in changes and changes["prev_sub_task_id"] is not None:
                parent = await self._load(
                    session,
                    LEVELS["meta_workflow"],
                    changes.get("task_id") or doc.get("task_id"),
                    "input.taskId",
                )
                self._check_prev_links([(level, NewTask(kind, {}, path="input"), {**doc, **changes})], parent)
            updated = {**doc, **changes}
            _check_size(updated, "input")
            await self._coll(level.spec).update_one({"_id": task_id}, {"$set": changes}, session=session)
            state = await self.states.find_one({"_id": task_id}, session=session)
            events = [
                event_doc(
                    EventType.TASK_UPDATED,
                    task_id,
                    await self.lifecycle.workflow_id(session, state or {"_id": task_id}),
                    (state or {}).get("agent_name"),
                    {"task_id": task_id, "fields": sorted(changes)},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            written = Written(doc=updated, states=[state] if state else [], events=events)
            return written

        return await self._once(idempotency_key, operation, work)

    async def _move(self, session: AsyncClientSession, level: Level, doc: Doc, new_parent_id: str) -> None:
        parent_level = LEVELS[level.parent_kind]  # type: ignore[index]
        new_parent = await self._load(
            session, parent_level, new_parent_id, f"input.{_camel(level.parent_field)}"
        )
        self._refuse_finalized(parent_level, new_parent, "add children to")
        old_parent_id = doc.get(level.parent_field)
        if old_parent_id:
            old_parent = await self._coll(parent_level.spec).find_one({"_id": old_parent_id}, session=session)
            if old_parent is not None:
                self._refuse_finalized(parent_level, old_parent, "remove children from")
                await self._coll(parent_level.spec).update_one(
                    {"_id": old_parent_id},
                    {"$pull": {parent_level.children_field: doc["_id"]}},
                    session=session,
                )
        await self._coll(parent_level.spec).update_one(
            {"_id": new_parent_id}, {"$push": {parent_level.children_field: doc["_id"]}}, session=session
        )
        # The subtree's states now belong to another workflow.
        workflow_id = new_parent_id if parent_level.kind == "meta_workflow" else new_parent.get("task_id")
        subtree = await self._subtree(session, level, doc)
        await self.states.update_many(
            {"_id": {"$in": [d["_id"] for _, d in subtree]}},
            {"$set": {"workflow_id": workflow_id}},
            session=session,
        )

    # ------------------------------------------------------------------ deleting

    async def delete(self, kind: str, task_id: str, *, cascade: bool = False) -> Written:
        """Delete a task, its output and state; with `cascade`, its whole subtree too."""
        level = LEVELS[kind]

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            doc = await self._load(session, level, task_id, "id")
            self._refuse_finalized(level, doc, "delete")
            children = doc.get(level.children_field) or [] if level.children_field else []
            if children and not cascade:
                child_label = LEVELS[level.child_kind].label  # type: ignore[index]
                raise Conflict(
                    f"{level.label} '{task_id}' has {len(children)} {child_label}(s);"
                    " pass cascade: true to delete them too"
                )
            subtree = await self._subtree(session, level, doc)
            ids = [d["_id"] for _, d in subtree]
            outside = await self.states.find_one(
                {"dependencies.task_id": {"$in": ids}, "_id": {"$nin": ids}},
                {"_id": 1, "dependencies": 1},
                session=session,
            )
            if outside is not None:
                raise Conflict(
                    f"task '{outside['_id']}' depends on a task being deleted; change its dependencies first"
                )
            state = await self.states.find_one({"_id": task_id}, session=session)
            workflow_id = await self.lifecycle.workflow_id(
                session, state or {"_id": task_id, "task_kind": kind}
            )
            for lvl in LEVELS.values():
                lvl_ids = [d["_id"] for l_, d in subtree if l_ is lvl]
                if lvl_ids:
                    await self._coll(lvl.spec).delete_many({"_id": {"$in": lvl_ids}}, session=session)
                    await self._coll(lvl.output_spec).delete_many({"_id": {"$in": lvl_ids}}, session=session)
            await self.states.delete_many({"_id": {"$in": ids}}, session=session)
            if level.parent_field and doc.get(level.parent_field):
                parent_level = LEVELS[level.parent_kind]  # type: ignore[index]
                await self._coll(parent_level.spec).update_one(
                    {"_id": doc[level.parent_field]},
                    {"$pull": {parent_level.children_field: task_id}},
                    session=session,
                )
            events = [
                event_doc(
                    EventType.TASK_DELETED,
                    task_id,
                    workflow_id if kind != "meta_workflow" else task_id,
                    (state or {}).get("agent_name"),
                    {"task_id": task_id, "deleted_ids": ids, "cascade": cascade},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            return Written(doc=doc, states=[], events=events, deleted_ids=ids)

        return await in_transaction(self.db, work)

    async def _subtree(self, session: AsyncClientSession, level: Level, doc: Doc) -> list[tuple[Level, Doc]]:
        """The task and every descendant, one `find` per level below it."""
        out: list[tuple[Level, Doc]] = [(level, doc)]
        current, docs = level, [doc]
        while current.child_kind and docs:
            child_level = LEVELS[current.child_kind]
            child_ids = [cid for d in docs for cid in d.get(current.children_field) or []]
            # Children are found both through the parent's id list and through their parent field, so a
            # child written by another program with only one side set is not left behind.
            docs = [
                d
                async for d in self._coll(child_level.spec).find(
                    {
                        "$or": [
                            {"_id": {"$in": child_ids}},
                            {child_level.parent_field: {"$in": [d["_id"] for d in docs]}},
                        ]
                    },
                    session=session,
                )
            ]
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
            doc = await self._load(session, level, task_id, "id")
            if doc.get("is_finalized"):
                raise Refused(f"{level.label} '{task_id}' is already finalized")
            await self._coll(level.spec).update_one(
                {"_id": task_id}, {"$set": {"is_finalized": True}}, session=session
            )
            if kind == "sub_task" and doc.get("task_id"):
                await self._coll(c.TASK_OUTPUTS).update_one(
                    {"_id": doc["task_id"]},
                    {"$addToSet": {"finalized_sub_task_ids": task_id}},
                    upsert=True,
                    session=session,
                )
            state = await self.states.find_one({"_id": task_id}, session=session)
            events = [
                event_doc(
                    EventType.TASK_FINALIZED,
                    task_id,
                    await self.lifecycle.workflow_id(session, state or {"_id": task_id, "task_kind": kind}),
                    (state or {}).get("agent_name"),
                    {"task_id": task_id, "task_kind": kind},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            written = Written(
                doc={**doc, "is_finalized": True}, states=[state] if state else [], events=events
            )
            return written

        return await self._once(idempotency_key, operation, work)

    # ------------------------------------------------------------------ outputs

    async def put_output(
        self, output_spec: CollectionSpec, task_id: str, fields: Doc, *, create: bool
    ) -> Doc:
        """Create (`create`) or update a task's output document; the task must exist and not be finalized."""
        level = OUTPUT_LEVELS[output_spec.name]

        async def work(session: AsyncClientSession) -> Doc:
            task = await self._load(session, level, task_id, "taskId")
            self._refuse_finalized(level, task, "change the output of")
            existing = await self._coll(output_spec).find_one({"_id": task_id}, session=session)
            if create and existing is not None:
                raise Conflict(f"the {level.label} '{task_id}' already has an output; update it instead")
            if not create and existing is None:
                raise NotFound(f"the {level.label} '{task_id}' has no output yet", id=task_id)
            doc = {**(existing or {}), **{k: v for k, v in fields.items() if k != "_id"}, "_id": task_id}
            _check_size(doc, "input")
            await self._coll(output_spec).replace_one({"_id": task_id}, doc, upsert=True, session=session)
            return doc

        return await in_transaction(self.db, work)

    async def delete_output(self, output_spec: CollectionSpec, task_id: str) -> Doc:
        level = OUTPUT_LEVELS[output_spec.name]

        async def work(session: AsyncClientSession) -> Doc:
            existing = await self._coll(output_spec).find_one({"_id": task_id}, session=session)
            if existing is None:
                raise NotFound(f"no output for {level.label} '{task_id}'", id=task_id)
            task = await self._coll(level.spec).find_one({"_id": task_id}, session=session)
            if task is not None:
                self._refuse_finalized(level, task, "change the output of")
            await self._coll(output_spec).delete_one({"_id": task_id}, session=session)
            return existing

        return await in_transaction(self.db, work)

    # ------------------------------------------------------------------ standalone tasks and states

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
        operation = "createAgentTask" if parent_id is None else f"addSubtask:{parent_id}"
        if parent_id is not None:
            named = state.get("parent_task_id")
            if named is not None and named != parent_id:
                raise Invalid(
                    "input.parentTaskId", f"a sub-task of '{parent_id}' cannot name '{named}' as parent"
                )
            state = {**state, "parent_task_id": parent_id}

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            tid = _check_id(task_id, "input.id") if task_id is not None else str(uuid.uuid4())
            if await self.states.find_one({"_id": tid}, {"_id": 1}, session=session):
                raise Conflict(f"a task with id '{tid}' already exists")
            parent = state.get("parent_task_id")
            if parent is not None and not await self.states.find_one(
                {"_id": parent}, {"_id": 1}, session=session
            ):
                raise NotFound(f"no parent task with id '{parent}'", id=parent)
            deps = deps_rules.normalise(state.get("dependencies") or [], "input.dependencies", tid)
            statuses = await deps_rules.check_graph(self.states, session, {tid: deps}, {tid: "input"})
            doc = new_state_doc(tid, "standalone", None, state, deps, sm.initial_status(deps, statuses), now)
            _check_size(doc, "input")
            await self.states.insert_one(doc, session=session)
            events = [
                event_doc(
                    EventType.TASK_CREATED,
                    tid,
                    None,
                    doc.get("agent_name") or None,
                    {"task_id": tid, "task_kind": "standalone", "status": doc["status"]},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            written = Written(doc=doc, states=[doc], events=events)
            return written

        return await self._once(idempotency_key, operation, work)

    async def update_state(
        self,
        task_id: str,
        patch: Doc,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Written:
        """Edit the descriptive fields of any task's state (not its status: that is the lifecycle's)."""
        operation = f"updateAgentTask:{task_id}"

        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            state = await self.states.find_one({"_id": task_id}, session=session)
            if state is None:
                raise NotFound(f"no task with id '{task_id}'", id=task_id)
            check_version(state, expected_version)
            changes = state_fields(patch)
            if not changes:
                raise Invalid("input", "nothing to update")
            events: list[Doc] = []
            if "dependencies" in changes:
                deps = deps_rules.normalise(changes["dependencies"] or [], "input.dependencies", task_id)
                statuses = await deps_rules.check_graph(
                    self.states, session, {task_id: deps}, {task_id: "input"}
                )
                changes["dependencies"] = deps
                status = sm.normalise_status(state.get("status"))
                met = sm.dependencies_met({"dependencies": deps}, statuses)
                # New dependencies can block a task that has not started, or release one that waited.
                if status in ("pending", "retrying") and not met:
                    changes.update(sm.block(state, now).set_fields)
                elif status == "awaiting_dependency" and met:
                    changes.update(sm.release(state, now).set_fields)
            if "parent_task_id" in changes and changes["parent_task_id"] is not None:
                if changes["parent_task_id"] == task_id:
                    raise Invalid("input.parentTaskId", "a task cannot be its own parent")
                if not await self.states.find_one(
                    {"_id": changes["parent_task_id"]}, {"_id": 1}, session=session
                ):
                    raise Invalid("input.parentTaskId", f"unknown parent task '{changes['parent_task_id']}'")
            changes["updated_at"] = now
            _check_size({**state, **changes}, "input")
            updated = await self.states.find_one_and_update(
                {"_id": task_id, **version_filter(state)},
                {"$set": {**changes, "version": version_of(state) + 1}},
                return_document=True,
                session=session,
            )
            if updated is None:
                raise Conflict(f"task '{task_id}' changed concurrently; read it again and retry")
            workflow_id = await self.lifecycle.workflow_id(session, updated)
            if updated.get("status") != state.get("status"):
                events.append(
                    event_doc(
                        EventType.STATUS_CHANGED,
                        task_id,
                        workflow_id,
                        updated.get("agent_name"),
                        {
                            "task_id": task_id,
                            "from_status": state.get("status"),
                            "to_status": updated.get("status"),
                        },
                        now,
                    )
                )
            events.append(
                event_doc(
                    EventType.TASK_UPDATED,
                    task_id,
                    workflow_id,
                    updated.get("agent_name"),
                    {"task_id": task_id, "fields": sorted(k for k in changes if k != "updated_at")},
                    now,
                )
            )
            await append_events(self.db, session, events)
            written = Written(doc=updated, states=[updated], events=events)
            return written

        return await self._once(idempotency_key, operation, work)

    async def delete_standalone(self, task_id: str) -> Written:
        async def work(session: AsyncClientSession) -> Written:
            now = self.lifecycle.clock()
            state = await self.states.find_one({"_id": task_id}, session=session)
            if state is None:
                raise NotFound(f"no task with id '{task_id}'", id=task_id)
            for level in LEVELS.values():
                if await self._coll(level.spec).find_one({"_id": task_id}, {"_id": 1}, session=session):
                    raise Conflict(
                        f"'{task_id}' is a {level.label}; delete it as one (its state goes with it)"
                    )
            dependent = await self.states.find_one(
                {"dependencies.task_id": task_id}, {"_id": 1}, session=session
            )
            if dependent is not None:
                raise Conflict(
                    f"task '{dependent['_id']}' depends on '{task_id}'; change its dependencies first"
                )
            child = await self.states.find_one({"parent_task_id": task_id}, {"_id": 1}, session=session)
            if child is not None:
                raise Conflict(
                    f"task '{child['_id']}' has '{task_id}' as its parent; delete or move it first"
                )
            await self.states.delete_one({"_id": task_id}, session=session)
            events = [
                event_doc(
                    EventType.TASK_DELETED,
                    task_id,
                    state.get("workflow_id"),
                    state.get("agent_name"),
                    {"task_id": task_id, "deleted_ids": [task_id], "cascade": False},
                    now,
                )
            ]
            await append_events(self.db, session, events)
            return Written(doc=state, states=[], events=events, deleted_ids=[task_id])

        return await in_transaction(self.db, work)

    # ------------------------------------------------------------------ helpers

    async def _load(self, session: AsyncClientSession, level: Level, task_id: Any, path: str) -> Doc:
        doc = await self._coll(level.spec).find_one({"_id": task_id}, session=session)
        if doc is None:
            raise NotFound(f"no {level.label} with id '{task_id}'", id=task_id)
        return doc

    @staticmethod
    def _refuse_finalized(level: Level, doc: Mapping[str, Any], verb: str) -> None:
        if doc.get("is_finalized"):
            raise Refused(f"cannot {verb} {level.label} '{doc['_id']}': it is finalized")

    async def _once(
        self, key: str | None, operation: str, work: Callable[[AsyncClientSession], Awaitable[Written]]
    ) -> Written:
        """Run `work` in a transaction, once per idempotency key; a replay answers what the first wrote."""
        return await idempotency.run_once(
            self.db,
            key,
            operation,
            work,
            encode=_answer,
            decode=lambda answer, events: Written(doc=answer["doc"], states=answer["states"], events=events),
            clock=self.lifecycle.clock,
        )


def _answer(written: Written) -> Doc:
    return {"doc": written.doc, "states": written.states, "event_ids": [e["_id"] for e in written.events]}


def _camel(name: str | None) -> str:
    head, *rest = (name or "").split("_")
    return head + "".join(p.title() for p in rest)


#: State fields a client may set when creating or editing a task (status and counters are the lifecycle's).
STATE_INPUT_FIELDS = (
    "agent_name",
    "triggering_event_id",
    "input_parameters",
    "output_references",
    "dependencies",
    "expires_at",
    "name",
    "description",
    "priority",
    "max_attempts",
    "parent_task_id",
)


def state_fields(patch: Mapping[str, Any]) -> Doc:
    """The editable state fields of `patch`, with `priority_rank` kept in step with `priority`."""
    out = {k: v for k, v in patch.items() if k in STATE_INPUT_FIELDS}
    if "priority" in out:
        out["priority"] = out["priority"] or "medium"
        out["priority_rank"] = PRIORITY_RANK[out["priority"]]
    if out.get("max_attempts") is not None and out["max_attempts"] < 1:
        raise Invalid("input.maxAttempts", "maxAttempts must be at least 1")
    return out


def new_state_doc(
    task_id: str,
    kind: str,
    workflow_id: str | None,
    state: Mapping[str, Any],
    dependencies: list[dict[str, str]],
    status: str,
    now: dt.datetime,
) -> Doc:
    """A new `agent_task_states` document: seed 000's fields, seed 001's extras, and the server's own."""
    fields = state_fields(state)
    priority = fields.get("priority") or "medium"
    return {
        "_id": task_id,
        "agent_name": fields.get("agent_name") or "",
        "triggering_event_id": fields.get("triggering_event_id"),
        "input_parameters": fields.get("input_parameters") or {},
        "status": status,
        "progress_percentage": 0,
        "current_step": None,
        "attempts": 0,
        "last_error": None,
        "output_references": fields.get("output_references") or {},
        "dependencies": dependencies,
        "created_at": now,
        "updated_at": now,
        "expires_at": fields.get("expires_at"),
        "name": fields.get("name"),
        "description": fields.get("description"),
        "priority": priority,
        "priority_rank": PRIORITY_RANK[priority],
        "started_at": None,
        "completed_at": None,
        "execution_time_seconds": None,
        "parent_task_id": fields.get("parent_task_id"),
        "max_attempts": fields.get("max_attempts") or sm.DEFAULT_MAX_ATTEMPTS,
        "task_kind": kind,
        "workflow_id": workflow_id,
        "version": 1,
    }
