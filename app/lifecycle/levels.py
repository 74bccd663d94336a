"""The hierarchy's shape and what every hierarchy write shares: the three levels and how they link,
the request and result types, the checks on ids and sizes, and the base class of the hierarchy services.

Rules (seed 002):
- a parent's id list (`sub_task_ids`, `behavior_task_ids`) and the child's parent id are written together;
- every task gets its `agent_task_states` document (same id) when it is created, and loses it when deleted;
- finalization is one-way; a finalized task refuses edits, moves, deletes and new children or outputs.

Agent-bound callers (`app.principal.Principal.agents`): a task's agent is its state's `agent_name` (a
hierarchy task has a state of the same id; one without a state, or without an agent, belongs to no bound
caller). Every write refuses with `NotYourAgent`, unless the caller may act for the agent of every task it
changes (`HierarchyService.check_agents`, inside the write's transaction, before anything is written):

- the task it edits, finalizes, deletes, or whose output or state it writes, at its current agent; and its
  new agent when the write changes `agent_name`;
- every task of a subtree the write takes along: all of a cascade's deletions, all of a moved subtree
  (their states change workflow);
- the parent that gains or loses a child: the existing parent a task is created under, the new and the
  old parent of a move, the parent of a deleted task (a task's children are part of it: its workflow,
  its roll-up).

What the services derive from an allowed write is not checked again: dependents released by a
completion, the record of a finalized sub-task in its meta task's output. The read that checks is in
the write's own snapshot-isolated transaction, and only `update_state` changes an agent (compare-and-set
on the state's `version`), so a concurrent reassignment either conflicts with the write or is ordered
after it: never a write checked against an agent the task no longer has.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import MAX_DOCUMENT_BYTES, MAX_ID_LENGTH, TaskKind, has_control_characters
from app.lifecycle import idempotency
from app.lifecycle.errors import Invalid, NotFound, Refused, agent_bound, check_agent
from app.lifecycle.events import EventType, event_doc
from app.lifecycle.transitions import Lifecycle
from app.store import collections as c
from app.store import states as state_store
from app.store import tasks as task_store
from app.store.collections import CollectionSpec
from app.store.storable import Unstorable, check_storable, encoded_size
from app.store.transactions import in_transaction
from app.store.types import Db, Doc


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

    @property
    def parent(self) -> Level | None:
        return None if self.parent_kind is None else LEVELS[self.parent_kind]

    @property
    def child(self) -> Level | None:
        return None if self.child_kind is None else LEVELS[self.child_kind]


LEVELS: dict[str, Level] = {
    TaskKind.META_WORKFLOW: Level(
        TaskKind.META_WORKFLOW,
        "meta workflow task",
        c.META_WORKFLOW_TASKS,
        c.TASK_OUTPUTS,
        children_field="sub_task_ids",
        child_kind=TaskKind.SUB_TASK,
    ),
    TaskKind.SUB_TASK: Level(
        TaskKind.SUB_TASK,
        "sub-task",
        c.SUB_TASKS,
        c.SUB_TASK_OUTPUTS,
        parent_kind=TaskKind.META_WORKFLOW,
        parent_field="task_id",
        children_field="behavior_task_ids",
        child_kind=TaskKind.BEHAVIOR_TASK,
    ),
    TaskKind.BEHAVIOR_TASK: Level(
        TaskKind.BEHAVIOR_TASK,
        "behavior task",
        c.BEHAVIOR_TASKS,
        c.BEHAVIOR_TASK_OUTPUTS,
        parent_kind=TaskKind.SUB_TASK,
        parent_field="sub_task_id",
    ),
}
OUTPUT_LEVELS: dict[str, Level] = {level.output_spec.name: level for level in LEVELS.values()}


@dataclass
class NewTask:
    """A task to create: seed fields, state input, an optional output and, for a workflow, children.

    `path` is where the task sits in the request, in domain (snake_case) names, e.g.
    `input.sub_tasks[2]`; errors about it name fields below that path.
    """

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


def check_id(value: Any, path: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
        raise Invalid(path, f"an id must be 1 to {MAX_ID_LENGTH} characters long")
    if has_control_characters(value):
        raise Invalid(path, "an id must not contain control characters (C0, C1, bidi controls)")
    return value


def check_size(doc: Mapping[str, Any], path: str) -> None:
    """Refuse a document MongoDB could not store as sent (app/store/storable.py), or one too large."""
    try:
        check_storable(dict(doc), path)
    except Unstorable as exc:
        raise Invalid(exc.path, str(exc)) from None
    size = encoded_size(doc)
    if size > MAX_DOCUMENT_BYTES:
        raise Invalid(path, f"payload too large: {size} bytes (limit {MAX_DOCUMENT_BYTES})")


def refuse_finalized(level: Level, doc: Mapping[str, Any], verb: str) -> None:
    if doc.get("is_finalized"):
        raise Refused(f"cannot {verb} {level.label} '{doc['_id']}': it is finalized")


def task_event(
    type: EventType,
    task_id: str,
    workflow_id: str | None,
    state: Mapping[str, Any] | None,
    payload: Doc,
    now: dt.datetime,
) -> Doc:
    """An event about a task, by the agent its state names (if it has one)."""
    return event_doc(type, task_id, workflow_id, (state or {}).get("agent_name") or None, payload, now)


class HierarchyService:
    """What the hierarchy services share: the database, the lifecycle (clock, workflow lookup) and the
    idempotent transaction runner."""

    def __init__(self, db: Db, lifecycle: Lifecycle) -> None:
        self.db = db
        self.lifecycle = lifecycle

    async def load(self, session: AsyncClientSession, level: Level, task_id: Any) -> Doc:
        """The task, or NotFound."""
        doc = await task_store.get(self.db, level.spec, task_id, session)
        if doc is None:
            raise NotFound(f"no {level.label} with id '{task_id}'", id=task_id)
        return doc

    async def check_agents(
        self, session: AsyncClientSession, tasks: Mapping[str, str], *, existing_only: bool = False
    ) -> None:
        """Refuse (`NotYourAgent`) unless the current caller may act for the agent of every task in `tasks`
        (task id → how the refusal names it, e.g. `"sub-task 's1'"`), read from their states in `session`'s
        transaction; in order, so the first one refused is named. With `existing_only`, ids without a
        state are skipped (a parent that no longer exists has nobody to protect); otherwise such a task
        belongs to no agent. One read, and none for a caller not bound to agents."""
        if not tasks or not agent_bound():
            return
        agents = await state_store.agents(self.db, tasks, session)
        for task_id, what in tasks.items():
            if task_id in agents or not existing_only:
                check_agent(agents.get(task_id), what)

    async def once(
        self,
        key: str | None,
        operation: str,
        work: Callable[[AsyncClientSession], Awaitable[Written]],
        payload: Any = None,
    ) -> Written:
        """Run `work` in a transaction, once per idempotency key; a replay answers what the first wrote."""
        with self.lifecycle.writing():
            written = await idempotency.run_once(
                self.db,
                key,
                operation,
                work,
                encode=_answer,
                decode=lambda answer, events: Written(
                    doc=answer["doc"], states=answer["states"], events=events
                ),
                clock=self.lifecycle.clock,
                payload=payload,
            )
            await self.lifecycle.settle(written.events)
        return written

    async def run(self, work: Callable[[AsyncClientSession], Awaitable[Written]]) -> Written:
        """Run `work` in a transaction (no idempotency key: deletes); settle its events."""
        with self.lifecycle.writing():
            written = await in_transaction(self.db, work)
            await self.lifecycle.settle(written.events)
        return written


def _answer(written: Written) -> Doc:
    return {"doc": written.doc, "states": written.states, "event_ids": [e["_id"] for e in written.events]}
