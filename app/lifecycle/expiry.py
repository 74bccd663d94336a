"""Expiry: an active task whose `expires_at` has passed is failed, by a sweeper and on every read; and the
same sweeper returns the tasks whose lease ran out to retrying.

`expire_overdue` finds the active states past their `expires_at` and applies `state_machine.expire` to
each through `Lifecycle.transition`: one compare-and-set transaction per task, writing STATUS_CHANGED and
TASK_FAILED with it. Dependents are not released (failed is not completed). `ExpirySweeper` runs it every
`expiry_sweep_seconds` inside the server's lifespan.

Several server processes may sweep the same database at once, and a sweep may race with a request that
finishes the task: that is safe. Each expiry is its own transaction that re-reads the state and decides
afresh; two writers of one task conflict, the loser retries, finds the task already terminal and is
refused — which the sweeper skips silently. So every task is expired at most once, with one set of events.

Leases: `lapse_overdue` finds the tasks in progress whose `lease_expires_at` has passed and applies
`Lifecycle.lapse` to each (retrying, or failed with the attempts used up; STATUS_CHANGED and LEASE_EXPIRED),
with the same one-transaction-per-task safety; the write also compares status, attempts and the lease's
deadline, so a lease extended by a heartbeat meanwhile is never lapsed. One sweeper does both, expiry
first (an expired task is failed for good, not retried). Before the sweep, a lapsed lease is already
refused to its holder (`check_lease`); reads show the task as stored, in progress with its
`lease_expires_at` in the past.

Timeouts (`app/lifecycle/timeouts.py`): `time_out_overdue` finds, per kind, the tasks whose stored
deadline has passed in one of the statuses that kind runs in (named one by one, on the deadline's partial
index) and applies `Lifecycle.time_out` to each, with the same one-transaction-per-task safety: the write
compares the status, the attempt and the deadline read, and the firing clears (or moves) the deadline, so
each fires once however many processes sweep, and a deadline that passed while no server ran fires at the
first sweep of the next one. The order of one sweep: expiry, then the timeouts (schedule-to-close,
schedule-to-start, start-to-close: the final ones first), then the leases. Until the sweep, a task past a
final timeout is not started (`state_machine.start`, and claims pass over it) and a holder past its
start-to-close deadline is refused (`check_lease`).

Between the deadline and the next sweep the stored document still says it is running. `present` applies
the same expiry to a document being read, so the API never shows an expired task as still active.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from app.cancellation import stop_task
from app.domain import utcnow
from app.lifecycle import state_machine as sm
from app.lifecycle import timeouts
from app.lifecycle.errors import Conflict, NotFound, Refused
from app.lifecycle.transitions import Action, Lifecycle
from app.principal import acting_as, system
from app.store import states as state_store
from app.store.failures import classify, describe

logger = logging.getLogger("agent_tasks.expiry")

Doc = dict[str, Any]


def present(doc: Mapping[str, Any], now: dt.datetime | None = None) -> Mapping[str, Any]:
    """The state as a read should show it: failed with an "expired" `last_error` once it is overdue.

    Exactly the fields `state_machine.expire` would set (the version is left as stored, since nothing
    was written). Any other document is returned unchanged; `doc` is never mutated (loaders cache it).
    """
    now = utcnow() if now is None else now
    if not sm.is_expired(doc, now):
        return doc
    return {**doc, **sm.expire(doc, now).set_fields}


async def expire_overdue(lifecycle: Lifecycle, now: dt.datetime | None = None, batch: int = 100) -> list[str]:
    """Fail up to `batch` active tasks whose `expires_at` <= `now` (default: the lifecycle's clock).

    Returns the ids expired by this call. A task finished (or expired) concurrently by someone else is
    skipped silently.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    at = lifecycle.clock() if now is None else now
    # With an explicit `now`, the decision inside the transaction uses it too (so a caller may ask "as of
    # then"); otherwise the transaction reads the clock afresh, like every other operation.
    action: Action = sm.expire if now is None else (lambda state, _now: sm.expire(state, at))
    due: list[str] = []
    # Foreign status spellings ("Completed") and ISO-string deadlines are sorted out by `sm.is_expired`,
    # so the sweeper agrees exactly with `present`.
    cursor = state_store.overdue(lifecycle.db, at, sm.NEVER_EXPIRE)  # (paused: no expiry)
    async for doc in cursor:
        if sm.is_expired(doc, at):
            due.append(doc["_id"])
            if len(due) >= batch:
                break
    await cursor.close()
    expired: list[str] = []
    for task_id in due:
        try:
            await lifecycle.transition("expire", task_id, action)
        except (Refused, Conflict, NotFound):
            continue  # finished, expired or deleted by someone else since we looked: nothing to do
        expired.append(task_id)
    return expired


async def lapse_overdue(lifecycle: Lifecycle, now: dt.datetime | None = None, batch: int = 100) -> list[str]:
    """Lapse up to `batch` leases that ran out by `now` (default: the lifecycle's clock); the ids lapsed by
    this call. A task finished, heartbeated or lapsed concurrently by someone else is skipped silently."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    at = lifecycle.clock() if now is None else now
    due = await state_store.lapsed(lifecycle.db, at, batch)
    lapsed: list[str] = []
    for task_id in due:
        try:
            await lifecycle.lapse(task_id, now)
        except (Refused, Conflict, NotFound):
            continue  # finished, extended or lapsed by someone else since we looked: nothing to do
        lapsed.append(task_id)
    return lapsed


async def time_out_overdue(
    lifecycle: Lifecycle, kind: timeouts.Kind, now: dt.datetime | None = None, batch: int = 100
) -> list[str]:
    """Fire the `kind` timeout of up to `batch` tasks whose deadline passed by `now` (default: the
    lifecycle's clock) in one of the kind's statuses; the ids fired by this call. A task finished,
    started, re-armed or fired concurrently by someone else is skipped silently."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    at = lifecycle.clock() if now is None else now
    due = await state_store.timed_out(lifecycle.db, kind.deadline_field, kind.statuses, at, batch)
    fired: list[str] = []
    for task_id in due:
        try:
            await lifecycle.time_out(task_id, kind.name, now)
        except (Refused, Conflict, NotFound):
            continue  # finished, moved on or fired by someone else since we looked: nothing to do
        fired.append(task_id)
    return fired


#: The actor of the events the sweeper writes (TASK_FAILED on expiry, LEASE_EXPIRED, TASK_TIMED_OUT).
SWEEPER = system("expiry-sweeper")


class ExpirySweeper:
    """Runs `expire_overdue`, then `time_out_overdue` for each kind, then `lapse_overdue`, every `interval`
    seconds as an asyncio task, until stopped.

    Errors (a MongoDB hiccup, say) are logged and the loop carries on at the next tick.
    """

    def __init__(self, lifecycle: Lifecycle, interval: float, batch: int = 100) -> None:
        self.lifecycle = lifecycle
        self.interval = interval
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start sweeping in the background (at once, then every `interval` seconds)."""
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name="expiry-sweeper")

    async def stop(self) -> None:
        """Stop the loop and wait for it to end; an expiry in flight is abandoned (its transaction aborts)."""
        task, self._task = self._task, None
        await stop_task(task)

    async def sweep(self) -> list[str]:
        """One sweep: expire batches until a short one shows nothing more is overdue; the ids expired."""
        expired: list[str] = []
        while True:
            with acting_as(SWEEPER):
                ids = await expire_overdue(self.lifecycle, batch=self.batch)
            expired += ids
            if len(ids) < self.batch:
                return expired

    async def sweep_leases(self) -> list[str]:
        """One sweep of the leases that ran out, batch after batch; the ids lapsed."""
        lapsed: list[str] = []
        while True:
            with acting_as(SWEEPER):
                ids = await lapse_overdue(self.lifecycle, batch=self.batch)
            lapsed += ids
            if len(ids) < self.batch:
                return lapsed

    async def sweep_timeouts(self) -> list[str]:
        """One sweep of the timeouts whose deadline passed, kind by kind (`timeouts.KINDS` order), batch
        after batch; the ids fired (a task may appear under two kinds, e.g. retried then failed)."""
        fired: list[str] = []
        for kind in timeouts.KINDS:
            while True:
                with acting_as(SWEEPER):
                    ids = await time_out_overdue(self.lifecycle, kind, batch=self.batch)
                fired += ids
                if len(ids) < self.batch:
                    break
        return fired

    async def _run(self) -> None:
        while True:
            try:
                expired = await self.sweep()
                if expired:
                    # Ids are not always strings: another program's state may have an ObjectId `_id`.
                    logger.info("expired %d overdue task(s): %s", len(expired), ", ".join(map(str, expired)))
                fired = await self.sweep_timeouts()
                if fired:
                    logger.info("timed out %d task(s): %s", len(fired), ", ".join(map(str, fired)))
                lapsed = await self.sweep_leases()
                if lapsed:
                    logger.info("lapsed %d lease(s): %s", len(lapsed), ", ".join(map(str, lapsed)))
            except Exception as exc:
                if classify(exc) is None:
                    logger.exception("expiry sweep failed; retrying in %s s", self.interval)
                else:  # MongoDB down or slow: expected now and then, one line each time
                    logger.warning("expiry sweep failed (%s); retrying in %s s", describe(exc), self.interval)
            await asyncio.sleep(self.interval)
