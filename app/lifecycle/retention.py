"""Retention: removing finished work, by a sweeper (`RetentionSweeper`, RETENTION_DAYS / RETENTION_SECONDS)
and on an admin's request (`Retention.purge`, the `purgeTasks` mutation). docs/RETENTION.md.

What goes is a "root" with everything under it: a meta workflow task with its sub-tasks and behavior tasks,
their outputs, states and events; or a standalone task with its state and events.
A root is finished when every state in it is terminal (completed, failed, cancelled); the sweeper also
wants every one of them last changed (`updated_at`) before the cutoff, i.e. the workflow's latest finish
is older than the window. A root is kept back (skipped) while:
- any of its states is not terminal (a live workflow: its events stay, however old);
- an unfinished task outside it depends on one of its tasks (it would wait for an unknown id);
- (standalone) another task names it as its parent: children go first, the parent on a later sweep.
No event is written about a removal (it would outlive what it describes); the sweeper logs one line per
sweep, `purgeTasks` answers its counts.

Invariants:
- A root is removed in one transaction that re-reads its states and decides afresh, so a task revived or
  added meanwhile (a retry, a new sub-task linked to a parent being removed) conflicts with the removal:
  one of them retries and sees the other's outcome. Nothing is ever half removed.
- Several processes MUST NOT sweep at once (the work would be repeated for nothing): the sweeper holds the
  lease `retention` in `server_config` (`app.store.config.take_lease`) and renews it before each page; if
  two ever overlap (a lease lapsed mid-page), the second removal of a root deletes nothing and says so.

Tuning: `RETENTION_SWEEP_SECONDS` (how often), `RETENTION_BATCH` (roots per page), `PURGE_MAX_TASKS`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app.cancellation import stop_task
from app.domain import TERMINAL, TaskKind
from app.principal import current_principal
from app.store import config
from app.store import retention as store
from app.store.failures import classify, describe
from app.store.transactions import in_transaction
from app.store.types import Db, Doc

logger = logging.getLogger("agent_tasks.retention")

#: The lease (in `server_config`) held by the one process sweeping.
LEASE = "retention"


@dataclass
class PurgeReport:
    """What a sweep or a purge did (or with `dry_run`, would do)."""

    dry_run: bool
    #: Roots looked at.
    matched: int = 0
    #: Roots removed (or that would be).
    purged: int = 0
    #: Roots kept back: not finished (or, for the sweeper, finished too recently meanwhile).
    skipped: int = 0
    #: Whether more roots matched than were looked at (`purgeTasks`: PURGE_MAX_TASKS).
    more: bool = False
    #: Documents removed (or that would be) per collection, every collection of `PURGED_COLLECTIONS`.
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(store.PURGED_COLLECTIONS, 0))

    def add(self, counts: Mapping[str, int] | None) -> None:
        self.matched += 1
        if counts is None:
            self.skipped += 1
            return
        self.purged += 1
        for name, n in counts.items():
            self.counts[name] = self.counts.get(name, 0) + n


def _finished(states: list[Doc], before: dt.datetime | None) -> bool:
    if not states:
        return False
    for doc in states:
        if doc.get("status") not in TERMINAL:
            return False
        changed = doc.get("updated_at")
        if before is not None and (not isinstance(changed, dt.datetime) or _aware(changed) >= before):
            return False
    return True


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


class Retention:
    """Removing finished roots: one at a time (`purge_root`), every old one (`sweep`), or by filter."""

    def __init__(self, db: Db, clock: Callable[[], dt.datetime], batch: int = 100) -> None:
        self.db = db
        self.clock = clock
        self.batch = batch

    async def purge_root(
        self, root: Doc, before: dt.datetime | None, *, dry_run: bool
    ) -> dict[str, int] | None:
        """Remove (or count) one root and everything under it, in one transaction; None when it is not
        finished (or, with `before`, changed since then)."""

        async def work(session: AsyncClientSession) -> dict[str, int] | None:
            root_id = root["_id"]
            if root.get("task_kind") == TaskKind.META_WORKFLOW:
                states = await store.states_of(self.db, root_id, session)
                if not _finished(states, before):
                    return None
                principal = current_principal.get()
                bound = principal.agents if principal is not None else None
                if bound is not None and any(d.get("agent_name") not in bound for d in states):
                    return None  # a workflow holding another agent's tasks is not this caller's
                ids = await store.hierarchy_ids(self.db, root_id, session)
                task_ids = list({*(d["_id"] for d in states), *(i for v in ids.values() for i in v)})
            else:
                doc = await store.state(self.db, root_id, session)
                if doc is None or not _finished([doc], before):
                    return None
                if await store.has_child(self.db, root_id, session):
                    return None
                ids, task_ids = {}, [root_id]
            if await store.active_dependent(self.db, task_ids, session) is not None:
                return None
            by_collection: dict[str, list[Any]] = {
                **ids,
                store.c.TASK_OUTPUTS.name: ids.get(store.c.META_WORKFLOW_TASKS.name, []),
                store.c.SUB_TASK_OUTPUTS.name: ids.get(store.c.SUB_TASKS.name, []),
                store.c.BEHAVIOR_TASK_OUTPUTS.name: ids.get(store.c.BEHAVIOR_TASKS.name, []),
                store.c.AGENT_TASK_STATES.name: task_ids,
            }
            events_of = (
                await store.event_task_ids(self.db, root_id, task_ids, session)
                if root.get("task_kind") == TaskKind.META_WORKFLOW
                else task_ids
            )
            return await store.remove(self.db, by_collection, events_of, session, dry_run=dry_run)

        return await in_transaction(self.db, work)

    async def sweep(self, window_seconds: float, still_mine: Callable[[], Any] | None = None) -> PurgeReport:
        """Remove every root finished more than `window_seconds` ago, a page of `batch` at a time;
        `still_mine` (awaited before each page) ends the sweep early when it answers False."""
        before = self.clock() - dt.timedelta(seconds=window_seconds)
        report = PurgeReport(dry_run=False)
        after: tuple[dt.datetime, Any] | None = None
        while True:
            if still_mine is not None and not await still_mine():
                return report
            page = await store.finished_roots(self.db, before, self.batch, after)
            for root in page:
                report.add(await self.purge_root(root, before, dry_run=False))
            if len(page) < self.batch:
                return report
            after = (page[-1]["updated_at"], page[-1]["_id"])

    async def purge(
        self, query: Mapping[str, Any], *, dry_run: bool, limit: int, time_limit_ms: int | None = None
    ) -> PurgeReport:
        """Remove (or count) the finished roots whose state matches `query`, at most `limit` of them
        looked at (`more` says whether there were others); unfinished ones are counted as skipped. The
        search runs within `time_limit_ms` (a client's filter: `FilterTooSlow` past it)."""
        principal = current_principal.get()
        agents = principal.agents if principal is not None else None
        if agents is not None:  # an agent-bound caller purges only its agents' work (as bulk actions do)
            query = {"$and": [dict(query), {"agent_name": {"$in": sorted(agents)}}]}
        roots = await store.matching_roots(self.db, query, limit + 1, time_limit_ms)
        report = PurgeReport(dry_run=dry_run, more=len(roots) > limit)
        for root in roots[:limit]:
            report.add(await self.purge_root(root, None, dry_run=dry_run))
        return report


class RetentionSweeper:
    """Runs `Retention.sweep` every `interval` seconds while this process holds the lease; stopped by
    the lifespan. Errors are logged and the loop carries on at the next tick."""

    def __init__(self, retention: Retention, window_seconds: float, interval: float, owner: str) -> None:
        self.retention = retention
        self.window_seconds = window_seconds
        self.interval = interval
        self.owner = owner
        # Held across a page at most: a page is `batch` transactions, each bounded by the client's timeout.
        self.lease_seconds = max(30.0, 2 * interval)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="retention-sweeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        try:
            await config.release_lease(self.retention.db, LEASE, self.owner)
        except Exception as exc:  # shutting down with MongoDB gone: the lease lapses by itself
            logger.warning("retention lease not released (%s)", describe(exc))

    async def _holds_lease(self) -> bool:
        return await config.take_lease(self.retention.db, LEASE, self.owner, self.lease_seconds)

    async def sweep_once(self) -> PurgeReport | None:
        """One sweep if this process gets the lease; None when another process holds it."""
        if not await self._holds_lease():
            return None
        return await self.retention.sweep(self.window_seconds, self._holds_lease)

    async def _run(self) -> None:
        while True:
            try:
                report = await self.sweep_once()
                if report is not None and report.purged:
                    logger.info(
                        "retention removed %d finished workflow(s)/task(s) (%d kept back): %s",
                        report.purged,
                        report.skipped,
                        ", ".join(f"{name} {n}" for name, n in report.counts.items() if n),
                    )
            except Exception as exc:
                if classify(exc) is None:
                    logger.exception("retention sweep failed; retrying in %s s", self.interval)
                else:
                    logger.warning(
                        "retention sweep failed (%s); retrying in %s s", describe(exc), self.interval
                    )
            await asyncio.sleep(self.interval)
