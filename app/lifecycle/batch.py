"""One state-machine action applied to many tasks in bounded transactions: the engine behind cascading
cancel, pause and resume (a task or a subtree) and the bulk actions by filter (issue 21 parts 4, 5, 7).

`subtree_ids` finds a task's subtree (a meta task's sub-tasks and their behavior tasks, by their parent
fields and by the parents' id lists, and seed 001's sub-tasks by `parent_task_id`, to any depth).
`apply_in_batches` walks a list of ids `batch_size` at a time; each batch is one transaction: one read of
the batch's states (with the caller's filter, for a bulk action), one decision per task, one bulk
compare-and-set on `version`, one insert of the events, and the release of the tasks waiting for a task
whose status changed.

Invariants:
- MUST: every task changed is written by a compare-and-set on the version read in the same transaction,
  with exactly the events of its own transition (STATUS_CHANGED first, then the action's event); a batch
  commits whole or not at all.
- MUST: a decision is taken on the state read inside the transaction that writes it. A concurrent write to
  a task of the batch makes the transaction conflict (MongoDB's write conflict, or a compare-and-set that
  misses); the batch is then read again and decided afresh (PyMongo's `with_transaction` retries it, and
  a missed compare-and-set is retried here `MOVED_RETRIES` times), so a concurrent change is never
  overwritten and never lost.
- MUST: a task the action does not apply to is skipped and counted by reason (`Outcome.skipped`), never
  refused as a whole: a run that stopped between batches finishes when sent again.
- MUST: every task is checked against an agent-bound caller (`check_agent`) inside the transaction.

Tuning (not correctness): `batch_size` bounds one transaction (its size and how much a conflict re-does).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import TERMINAL
from app.lifecycle import state_machine as sm
from app.lifecycle.errors import Conflict, Invalid, check_agent
from app.lifecycle.events import event_doc
from app.lifecycle.levels import LEVELS
from app.lifecycle.transitions import Applied, Lifecycle, count_committed, version_of
from app.store import collections as c
from app.store import states as state_store
from app.store import tasks as task_store
from app.store.events import append_events
from app.store.transactions import in_transaction

Doc = dict[str, Any]
#: Decides one task: (its state, now, the stored status of each of its dependencies) → its transition.
#: `sm.NoOp` and `sm.TransitionRefused` skip the task (counted by reason).
Decide = Callable[[Mapping[str, Any], dt.datetime, Mapping[Any, Any]], sm.Transition]
#: How often a batch whose compare-and-set missed (a task written outside a transaction meanwhile) is read
#: and decided again before the call gives up with a Conflict.
MOVED_RETRIES = 3

#: Why a task was skipped (`Outcome.skipped`): machine-readable, one per cause.
FINISHED = "FINISHED"  # the action does not apply to a finished task (completed, failed, cancelled)
ACTIVE = "ACTIVE"  # the action applies only to finished tasks (retry) and this one is not
ALREADY_PAUSED = "ALREADY_PAUSED"  # pause: paused already, or running with a pause requested
NOT_PAUSED = "NOT_PAUSED"  # resume: neither paused nor asked to pause
EXPIRED = "EXPIRED"  # its expires_at passed: it reads as failed, the expiry sweep fails it
NO_LONGER_MATCHES = "NO_LONGER_MATCHES"  # a bulk action's filter no longer matches it (changed or deleted)
NOT_ALLOWED = "NOT_ALLOWED"  # any other status the action is refused from
SKIP_REASONS = (FINISHED, ACTIVE, ALREADY_PAUSED, NOT_PAUSED, EXPIRED, NO_LONGER_MATCHES, NOT_ALLOWED)


@dataclass
class Outcome:
    """What a run of `apply_in_batches` did: the ids changed (in order), the skipped by reason, and the
    events written for `root` (the task a subtree action names)."""

    changed: list[Any] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    root_events: list[Doc] = field(default_factory=list)
    #: How many times a batch was read and decided again after a concurrent change (write conflicts).
    rereads: int = 0


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


def _skip_reason(action: str, exc: sm.TransitionRefused | sm.NoOp) -> str:
    if isinstance(exc, sm.NoOp):
        return exc.reason
    if exc.current_status in TERMINAL:
        return FINISHED
    return ACTIVE if action == "retry" else NOT_ALLOWED


class _Moved(Exception):
    """A compare-and-set of the batch missed: read it again."""


async def apply_in_batches(
    lifecycle: Lifecycle,
    ids: list[Any],
    action: str,
    decide: Decide,
    *,
    batch_size: int,
    query: Mapping[str, Any] | None = None,
    root: Any = None,
    skip_expired: bool = True,
    dependencies: bool = False,
) -> Outcome:
    """Apply `decide` to the tasks `ids`, `batch_size` per transaction, in order (see the module's
    invariants). `query`: a bulk action's filter, checked again on each task as the transaction reads it
    (a task that no longer matches is skipped). `skip_expired`: skip (EXPIRED) an active task whose
    expires_at passed, as every single-task action refuses it. `dependencies`: read the status of each
    dependency of the batch's tasks for `decide` (resume)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    db = lifecycle.db
    outcome = Outcome()
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        runs = 0

        async def work(
            session: AsyncClientSession, batch: list[Any] = batch
        ) -> tuple[list[Doc], list[Any], Counter[str]]:
            nonlocal runs
            runs += 1
            now = lifecycle.clock()
            if query is None:
                states = await state_store.many(db, batch, session)
            else:
                states = await state_store.matching(db, query, batch, session)
            skipped: Counter[str] = Counter()
            if query is not None and len(states) < len(batch):
                skipped[NO_LONGER_MATCHES] = len(batch) - len(states)
            statuses: Mapping[Any, Any] = {}
            if dependencies:
                dep_ids = {
                    d.get("task_id")
                    for s in states
                    for d in s.get("dependencies") or []
                    if isinstance(d, dict) and isinstance(d.get("task_id"), str)
                }
                statuses = await state_store.statuses(db, dep_ids, session)
            order = {task_id: n for n, task_id in enumerate(batch)}
            writes: list[tuple[Any, dict[str, Any], int]] = []
            events: list[Doc] = []
            for state in sorted(states, key=lambda s: order.get(s["_id"], 0)):
                check_agent(state.get("agent_name"), f"task '{state['_id']}'")
                if skip_expired and sm.is_expired(state, now):
                    skipped[EXPIRED] += 1
                    continue
                try:
                    transition = decide(state, now, statuses)
                except (sm.TransitionRefused, sm.NoOp) as exc:
                    skipped[_skip_reason(action, exc)] += 1
                    continue
                except sm.InvalidInput as exc:
                    raise Invalid(exc.field, exc.message) from exc
                writes.append((state, transition.set_fields, version_of(state) + 1))
                workflow_id = await lifecycle.workflow_id(session, state)
                events += [
                    event_doc(kind, state["_id"], workflow_id, state.get("agent_name"), payload, now)
                    for kind, payload in transition.events
                ]
            if await state_store.update_many_if_version(db, writes, session) != len(writes):
                raise _Moved  # (aborts the transaction: nothing of this batch is written)
            await append_events(db, session, events)
            changed = [state["_id"] for state, _, _ in writes]
            for task_id in await state_store.awaited_among(db, changed, session):
                events += await lifecycle.release_dependents(session, [task_id], now)
            return events, changed, skipped

        for attempt in range(MOVED_RETRIES + 1):
            try:
                with lifecycle.writing():
                    events, changed, skipped = await in_transaction(db, work)
                    count_committed(action, Applied(state={}, events=events))  # (retries, for /metrics)
                    await lifecycle.settle(events)
                break
            except _Moved:
                if attempt == MOVED_RETRIES:
                    raise Conflict(
                        f"tasks of this {action} kept changing concurrently; send it again"
                    ) from None
        outcome.rereads += runs - 1
        outcome.changed += changed
        outcome.skipped += skipped
        if root is not None:
            outcome.root_events += [e for e in events if e.get("task_id") == root]
    return outcome
