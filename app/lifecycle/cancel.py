"""Cancelling a task with its subtree (`cancelTask(scope: SUBTREE)`, issue 21 part 4).

The subtree is the task and every task below it: a meta task's sub-tasks, a sub-task's behavior tasks
(by their parent field and by the parents' id lists) and seed 001's sub-tasks (`parent_task_id`), to any
depth. Every task of it is checked against an agent-bound caller before anything is written
(`check_agent`); then the unfinished ones are cancelled root first, `CANCEL_BATCH` per transaction, each
with compare-and-set and its own events (STATUS_CHANGED, then TASK_CANCELLED with the reason and the
root; the actor is stamped by the outbox). A running task's lease goes with its status: its worker's
next heartbeat (or any write with its attempt) is refused with `LeaseLostError { currentStatus:
CANCELLED, cancelRequested: true }`, which is how it learns.

Run again, it cancels what is still unfinished: a retried request (or one interrupted between batches)
finishes the job without touching what is done.
"""

from __future__ import annotations

import functools
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import TERMINAL
from app.lifecycle import state_machine as sm
from app.lifecycle.errors import Conflict, NotFound, check_agent
from app.lifecycle.events import event_doc
from app.lifecycle.levels import LEVELS
from app.lifecycle.transitions import Applied, Lifecycle, _decide, version_of
from app.store import collections as c
from app.store import states as state_store
from app.store import tasks as task_store
from app.store.events import append_events
from app.store.transactions import in_transaction

#: Tasks cancelled in one transaction: a subtree of thousands is several bounded transactions.
CANCEL_BATCH = 250


async def subtree_ids(lifecycle: Lifecycle, task_id: str) -> list[str]:
    """The task and every descendant, breadth first (root first); each id once."""
    seen, order, frontier = {task_id}, [task_id], [task_id]
    while frontier:
        found: list[Any] = await task_store.ids_with(
            lifecycle.db, c.AGENT_TASK_STATES, "parent_task_id", frontier
        )
        for level in LEVELS.values():
            if level.parent_field:  # children naming a parent of the level above
                found += await task_store.ids_with(lifecycle.db, level.spec, level.parent_field, frontier)
            if level.children_field:  # children listed by their parent
                found += await task_store.listed(lifecycle.db, level.spec, frontier, level.children_field)
        frontier = []
        for child in found:
            if child not in seen:
                seen.add(child)
                order.append(child)
                frontier.append(child)
    return order


async def cancel_subtree(
    lifecycle: Lifecycle, task_id: str, reason: str | None = None
) -> tuple[Applied, int]:
    """Cancel the task and its unfinished descendants; the root's state and events, and how many tasks
    this call cancelled."""
    db = lifecycle.db
    root = await state_store.get(db, task_id)
    if root is None:
        raise NotFound(f"no task with id '{task_id}'", id=task_id)
    _decide(
        lambda s, t: sm.cancel(s, t, reason), {**root, "status": "pending"}, lifecycle.clock()
    )  # the reason
    ids = await subtree_ids(lifecycle, task_id)
    agents = await state_store.agents(db, ids)
    for tid in ids:  # the whole subtree is the caller's, or nothing is written
        if tid in agents:
            check_agent(agents[tid], f"task '{tid}' (in the subtree of '{task_id}')")
    action = functools.partial(sm.cancel, reason=reason, cascade_root=task_id)
    root_events: list[dict[str, Any]] = []
    cancelled = 0
    for start in range(0, len(ids), CANCEL_BATCH):
        batch = ids[start : start + CANCEL_BATCH]

        async def work(session: AsyncClientSession, batch: list[str] = batch) -> tuple[list[Any], int]:
            # One read, one bulk compare-and-set and one insert of events per batch; the dependents of
            # the cancelled tasks (if any wait for them) are released as any status change releases them.
            now = lifecycle.clock()
            writes: list[tuple[Any, dict[str, Any], int]] = []
            events: list[Any] = []
            for state in await state_store.many(db, batch, session):
                if sm.normalise_status(state.get("status")) in TERMINAL:
                    continue
                check_agent(state.get("agent_name"), f"task '{state['_id']}'")
                transition = _decide(action, state, now)
                writes.append((state, transition.set_fields, version_of(state) + 1))
                workflow_id = await lifecycle.workflow_id(session, state)
                events += [
                    event_doc(kind, state["_id"], workflow_id, state.get("agent_name"), payload, now)
                    for kind, payload in transition.events
                ]
            if await state_store.update_many_if_version(db, writes, session) != len(writes):
                raise Conflict(f"a task in the subtree of '{task_id}' changed concurrently; cancel it again")
            await append_events(db, session, events)
            cancelled_ids = [state["_id"] for state, _, _ in writes]
            for tid in await state_store.awaited_among(db, cancelled_ids, session):
                events += await lifecycle.release_dependents(session, tid, now)
            return events, len(writes)

        with lifecycle.writing():
            events, count = await in_transaction(db, work)
            await lifecycle.settle(events)
        cancelled += count
        root_events += [e for e in events if e.get("task_id") == task_id]
    state = await state_store.get(db, task_id)
    assert state is not None
    return Applied(state=state, events=root_events), cancelled
