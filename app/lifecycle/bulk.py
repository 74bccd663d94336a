"""Bulk actions by filter: `retryTasks`, `cancelTasks`, `pauseTasks`, `resumeTasks` (issue 21 part 7).

The filter is the task lists' (the same allow-list, compiled by the caller's layer with the same
function); an empty one is refused (`EMPTY_FILTER`): a bulk action over every task is never what a typo
should do. At most `limit` tasks are acted on per call (default and bound: BULK_ACTION_MAX_TASKS; more
is refused, `LIMIT_EXCEEDED`), the first by id; `more` says the filter matched more, so a caller repeats
the call (the tasks already changed no longer match a filter on their status).

An agent-bound caller acts only on its agents' tasks: the filter is narrowed to them, so others' tasks
are neither matched nor changed.

Each task changes in its own compare-and-set on `version` with its own events (STATUS_CHANGED, then the
action's: TASK_CANCELLED, TASK_PAUSED, TASK_RESUMED; a retry writes only the status change), in the
bounded transactions of `app.lifecycle.batch`, which re-reads a task written concurrently and decides
again with the filter checked anew, so a concurrent change is never overwritten. Tasks the action does not
apply to are skipped and counted by reason (`batch.SKIP_REASONS`).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.domain import ErrorCode
from app.lifecycle import state_machine as sm
from app.lifecycle.batch import Decide, apply_in_batches
from app.lifecycle.errors import Invalid
from app.lifecycle.pause import pause_decision, resume_decision
from app.lifecycle.transitions import Lifecycle
from app.principal import current_principal
from app.store import states as state_store

#: The bulk actions, as named in the API (`<action>Tasks`, `POST /agent-tasks/<action>`).
ACTIONS = ("retry", "cancel", "pause", "resume")


@dataclass(frozen=True)
class BulkResult:
    """What a bulk action did: tasks matched (at most the limit), the ids changed, the skipped by reason,
    whether the filter matched more than the limit, and the limit applied."""

    action: str
    matched: int
    changed: list[Any]
    skipped: Counter[str]
    more: bool
    limit: int


class BulkRefused(Invalid):
    """A bulk action refused before anything was read: `code` says why (EMPTY_FILTER, LIMIT_EXCEEDED)."""

    def __init__(self, field: str, message: str, code: ErrorCode) -> None:
        super().__init__(field, message)
        self.code = code


def _decision(action: str, reason: str | None) -> Decide:
    if action == "pause":
        return pause_decision(reason, None)
    if action == "resume":
        return resume_decision(reason, None)
    bound = functools.partial(sm.cancel, reason=reason, announce=True) if action == "cancel" else sm.retry

    def decide(state: Mapping[str, Any], now: dt.datetime, _statuses: Mapping[Any, Any]) -> sm.Transition:
        return bound(state, now)

    return decide


async def bulk_action(
    lifecycle: Lifecycle,
    action: str,
    query: Mapping[str, Any],
    *,
    reason: str | None = None,
    limit: int | None = None,
    max_tasks: int,
    batch_size: int,
    time_limit_ms: int | None = None,
) -> BulkResult:
    """Apply `action` to the tasks matching `query` (a compiled, allow-listed filter), at most `limit`
    (default `max_tasks`, at most `max_tasks`). Raises `BulkRefused` (and, from MongoDB, `FilterError` /
    `FilterTooSlow`) before writing anything."""
    if action not in ACTIONS:
        raise ValueError(f"unknown bulk action {action!r}")
    if not query:
        raise BulkRefused(
            "filter",
            f'{action}Tasks needs a non-empty filter (e.g. {{"status": "failed"}}); it never acts on every'
            " task",
            ErrorCode.EMPTY_FILTER,
        )
    if limit is None:
        limit = max_tasks
    if not 1 <= limit <= max_tasks:
        raise BulkRefused(
            "limit",
            f"limit must be between 1 and {max_tasks} (BULK_ACTION_MAX_TASKS), got {limit}",
            ErrorCode.LIMIT_EXCEEDED,
        )
    if action == "retry":
        reason = None  # a retry keeps no reason (its events are the status changes)
    try:
        sm.check_reason(reason)
    except sm.InvalidInput as exc:
        raise Invalid(exc.field, exc.message) from exc
    principal = current_principal.get()
    if principal is not None and principal.agents is not None:  # only the caller's agents' tasks
        query = {"$and": [dict(query), {"agent_name": {"$in": sorted(principal.agents)}}]}
    ids = await state_store.ids_matching(lifecycle.db, query, limit + 1, time_limit_ms)
    more, ids = len(ids) > limit, ids[:limit]
    outcome = await apply_in_batches(
        lifecycle,
        ids,
        action,
        _decision(action, reason),
        batch_size=batch_size,
        query=query,
        dependencies=action == "resume",
    )
    return BulkResult(
        action=action,
        matched=len(ids),
        changed=outcome.changed,
        skipped=outcome.skipped,
        more=more,
        limit=limit,
    )
