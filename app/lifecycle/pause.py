"""Pausing and resuming a task, or a task with its subtree (`pauseTask` / `resumeTask`, issue 21 part 5).

The rules are the state machine's (`state_machine.pause`, `state_machine.resume`): a task not started is
paused (`paused_from` keeps its status), a running one is asked to pause (`pause_requested`: its attempt
finishes, a retry it would go to is paused instead), and resume restores what was there, checking the
dependencies of a task that was pending or awaiting them (a dependency met during the pause is honoured).
Pausing a paused task and resuming one that is not paused write nothing (`Outcome.skipped` counts them);
pausing or resuming a finished task (the one named) is refused.

A subtree is `batch.subtree_ids`, checked whole against an agent-bound caller before anything is written,
then changed root first in `batch.apply_in_batches`' bounded transactions (one compare-and-set and one
TASK_PAUSED / TASK_RESUMED per task, with the caller as actor). Run again, it finishes what a cut-off run
left: what is done already is skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from app.domain import TERMINAL, Status
from app.lifecycle import state_machine as sm
from app.lifecycle.batch import Decide, Outcome, apply_in_batches, subtree_ids
from app.lifecycle.errors import Invalid, NotFound, Refused, check_agent
from app.lifecycle.transitions import Applied, Lifecycle, check_version
from app.store import states as state_store

#: Tasks paused or resumed in one transaction (a subtree of thousands is several).
PAUSE_BATCH = 250


def pause_decision(reason: str | None, root: str | None) -> Decide:
    """`state_machine.pause` as a batch decision (`root`: the task whose subtree it is, if any)."""

    def decide(state: Mapping[str, Any], now: dt.datetime, _statuses: Mapping[Any, Any]) -> sm.Transition:
        return sm.pause(state, now, reason, root)

    return decide


def resume_decision(reason: str | None, root: str | None) -> Decide:
    """`state_machine.resume` as a batch decision: pending or awaiting_dependency by the stored status of
    the task's dependencies, read in the same transaction."""

    def decide(state: Mapping[str, Any], now: dt.datetime, statuses: Mapping[Any, Any]) -> sm.Transition:
        met = sm.dependencies_met(state, statuses)
        return sm.resume(state, now, reason, root, dependencies_met=met)

    return decide


async def pause_or_resume(
    lifecycle: Lifecycle,
    action: str,
    task_id: str,
    *,
    subtree: bool,
    reason: str | None,
    expected_version: int | None = None,
) -> tuple[Applied, Outcome]:
    """Pause (`action` "pause") or resume ("resume") the task, and with `subtree` every task below it;
    the named task's state and events afterwards, and what was changed and skipped."""
    db = lifecycle.db
    root = await state_store.get(db, task_id)
    if root is None:
        raise NotFound(f"no task with id '{task_id}'", id=task_id)
    check_agent(root.get("agent_name"), f"task '{task_id}'")
    check_version(root, expected_version)
    status = sm.normalise_status(root.get("status"))
    if status in TERMINAL:  # the task named must not be finished; finished ones below it are skipped
        raise Refused(f"cannot {action} a task that is {status}", current_status=status)
    cascade_root = task_id if subtree else None
    decide = (pause_decision if action == "pause" else resume_decision)(reason, cascade_root)
    if sm.is_expired(root, lifecycle.clock()):  # reads show it failed; the sweep records it
        raise Refused(f"task '{task_id}' has expired; it is failed", current_status=Status.FAILED)
    try:  # the reason, before anything is read further or written
        sm.check_reason(reason)
    except sm.InvalidInput as exc:
        raise Invalid(exc.field, exc.message) from exc
    ids = [task_id]
    if subtree:
        ids = await subtree_ids(lifecycle, task_id)
        agents = await state_store.agents(db, ids)
        for tid in ids:  # the whole subtree is the caller's, or nothing is written
            if tid in agents:
                check_agent(agents[tid], f"task '{tid}' (in the subtree of '{task_id}')")
    outcome = await apply_in_batches(
        lifecycle,
        ids,
        action,
        decide,
        batch_size=PAUSE_BATCH,
        root=task_id,
        dependencies=action == "resume",
    )
    state = await state_store.get(db, task_id)
    if state is None:
        raise NotFound(f"no task with id '{task_id}'", id=task_id)
    return Applied(state=state, events=outcome.root_events), outcome
