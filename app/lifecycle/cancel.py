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
finishes the job without touching what is done. The subtree and the batched transactions are
`app.lifecycle.batch`'s, shared with pause/resume and the bulk actions.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from app.domain import Status
from app.lifecycle import state_machine as sm
from app.lifecycle.batch import apply_in_batches, subtree_ids
from app.lifecycle.errors import NotFound, check_agent
from app.lifecycle.transitions import Applied, Lifecycle, _decide
from app.store import states as state_store

__all__ = ["CANCEL_BATCH", "cancel_subtree", "subtree_ids"]

#: Tasks cancelled in one transaction: a subtree of thousands is several bounded transactions.
CANCEL_BATCH = 250


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
        lambda s, t: sm.cancel(s, t, reason), {**root, "status": Status.PENDING}, lifecycle.clock()
    )  # the reason
    ids = await subtree_ids(lifecycle, task_id)
    agents = await state_store.agents(db, ids)
    for tid in ids:  # the whole subtree is the caller's, or nothing is written
        if tid in agents:
            check_agent(agents[tid], f"task '{tid}' (in the subtree of '{task_id}')")
    action = functools.partial(sm.cancel, reason=reason, cascade_root=task_id)

    def decide(state: Mapping[str, Any], now: Any, _statuses: Mapping[Any, Any]) -> sm.Transition:
        return action(state, now)

    outcome = await apply_in_batches(
        lifecycle, ids, "cancel", decide, batch_size=CANCEL_BATCH, root=task_id, skip_expired=False
    )
    state = await state_store.get(db, task_id)
    assert state is not None
    return Applied(state=state, events=outcome.root_events), len(outcome.changed)
