"""Bulk actions by filter: `retryTasks`, `cancelTasks`, `pauseTasks`, `resumeTasks` (docs/STEERING.md,
"Bulk actions"). Thin: the filter and the typed arguments are the `agentTasks` list's, compiled by the same
function (`connections.list_query`); `app.lifecycle.bulk` does the rest. Refusals are data: an empty
filter (`ValidationError` code EMPTY_FILTER), a limit over BULK_ACTION_MAX_TASKS (LIMIT_EXCEEDED), a
refused filter (BAD_FILTER) or one too slow (FILTER_TOO_SLOW)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from app.api.connections import list_query
from app.api.lists import Filter
from app.api.results import ConflictError, ForbiddenError, ValidationError, capture
from app.api.types.enums import TaskKind, TaskPriority, TaskStatus
from app.api.types.tasks import AgentTaskState
from app.domain import ErrorCode
from app.lifecycle.bulk import BulkResult, bulk_action
from app.lifecycle.errors import Invalid
from app.store.failures import FilterTooSlow
from app.store.filters import FilterError


@strawberry.type(description="How many tasks a bulk action skipped for one reason.")
class BulkSkipped:
    reason: str = strawberry.field(
        description="Why: FINISHED (the action does not apply to a finished task), ACTIVE (retry: the"
        " task has not finished), ALREADY_PAUSED, NOT_PAUSED, EXPIRED (its expiresAt passed: it reads as"
        " failed), NO_LONGER_MATCHES (changed or deleted since it matched), NOT_ALLOWED (another status the"
        " action is refused from)."
    )
    count: int = strawberry.field(description="How many tasks.")


@strawberry.type(description="What a bulk action did. Each task changed with its own events.")
class BulkActionSuccess:
    matched: int = strawberry.field(
        description="Tasks the filter matched and the action looked at (at most `limit`, the first by id)."
    )
    changed: int = strawberry.field(description="Tasks changed (each with its own compare-and-set).")
    changed_ids: list[strawberry.ID] = strawberry.field(description="The ids of the tasks changed.")
    skipped: list[BulkSkipped] = strawberry.field(description="Tasks left as they were, by reason.")
    has_more: bool = strawberry.field(
        description="The filter matches more tasks than `limit`: send the action again for the next ones."
    )
    limit: int = strawberry.field(description="The limit applied (BULK_ACTION_MAX_TASKS by default).")


BulkActionResult = Annotated[
    BulkActionSuccess | ValidationError | ForbiddenError | ConflictError,
    strawberry.union("BulkActionResult", description="Outcome of a bulk action."),
]

Limit = Annotated[
    int | None,
    strawberry.argument(
        description="Most tasks to act on (default and maximum: the server's BULK_ACTION_MAX_TASKS, 1,000)."
    ),
]
Reason = Annotated[str | None, strawberry.argument(description="Why; kept in each task's event.")]
Status = Annotated[list[TaskStatus] | None, strawberry.argument(description="Any of these statuses.")]
AgentName = Annotated[str | None, strawberry.argument(description="Only this agent's tasks.")]
Priority = Annotated[list[TaskPriority] | None, strawberry.argument(description="Any of these priorities.")]
Kind = Annotated[TaskKind | None, strawberry.argument(description="Only tasks of this kind.")]
WorkflowId = Annotated[
    strawberry.ID | None, strawberry.argument(description="Only the tasks of this workflow.")
]
ParentTaskId = Annotated[
    strawberry.ID | None, strawberry.argument(description="Only the sub-tasks of this task.")
]


def _success(result: BulkResult) -> BulkActionSuccess:
    return BulkActionSuccess(
        matched=result.matched,
        changed=len(result.changed),
        changed_ids=[strawberry.ID(str(i)) for i in result.changed],
        skipped=[BulkSkipped(reason=r, count=n) for r, n in sorted(result.skipped.items())],
        has_more=result.more,
        limit=result.limit,
    )


async def _run(
    info: strawberry.Info,
    action: str,
    filter: JSON | None,
    typed: dict[str, object],
    limit: int | None,
    reason: str | None,
) -> BulkActionSuccess:
    settings = info.context.settings
    try:
        query, user = list_query(AgentTaskState.spec, filter, typed, settings)
        result = await bulk_action(
            info.context.app.lifecycle,
            action,
            query,
            reason=reason,
            limit=limit,
            max_tasks=settings.bulk_action_max_tasks,
            batch_size=settings.bulk_action_batch_size,
            time_limit_ms=settings.filter_max_time_ms if user else None,
        )
    except FilterError as exc:
        raise _refused("filter", str(exc), ErrorCode.BAD_FILTER) from exc
    except FilterTooSlow as exc:
        raise _refused("filter", str(exc), ErrorCode.FILTER_TOO_SLOW) from exc
    return _success(result)


def _refused(field: str, message: str, code: ErrorCode) -> Invalid:
    refusal = Invalid(field, message)
    refusal.code = code
    return refusal


def _typed(
    status: list[TaskStatus] | None,
    agent_name: str | None,
    priority: list[TaskPriority] | None,
    task_kind: TaskKind | None,
    workflow_id: str | None,
    parent_task_id: str | None,
) -> dict[str, object]:
    return {
        "status": status,
        "agent_name": agent_name,
        "priority": priority,
        "task_kind": task_kind,
        "workflow_id": workflow_id,
        "parent_task_id": parent_task_id,
    }


_SAME_FILTER = (
    " The tasks are chosen as `agentTasks` chooses them (`filter` and the typed arguments, a non-empty"
    " filter required); an agent-bound key acts only on its agents' tasks."
)


def _acting(action: str) -> Callable[..., Awaitable[BulkActionResult]]:
    """The resolver of `<action>Tasks` that takes a reason (cancel, pause, resume): one body for the three."""

    async def resolver(
        info: strawberry.Info,
        filter: Filter = None,
        status: Status = None,
        agent_name: AgentName = None,
        priority: Priority = None,
        task_kind: Kind = None,
        workflow_id: WorkflowId = None,
        parent_task_id: ParentTaskId = None,
        limit: Limit = None,
        reason: Reason = None,
    ) -> BulkActionResult:
        typed = _typed(status, agent_name, priority, task_kind, workflow_id, parent_task_id)
        return await capture(_run(info, action, filter, typed, limit, reason))  # type: ignore[return-value]

    return resolver


@strawberry.type(description="Acting on many tasks at once, chosen by the task lists' filter.")
class BulkMutation:
    @strawberry.mutation(
        description="Retry the failed or cancelled tasks matched (→ retrying, due at once)." + _SAME_FILTER
    )
    async def retry_tasks(
        self,
        info: strawberry.Info,
        filter: Filter = None,
        status: Status = None,
        agent_name: AgentName = None,
        priority: Priority = None,
        task_kind: Kind = None,
        workflow_id: WorkflowId = None,
        parent_task_id: ParentTaskId = None,
        limit: Limit = None,
    ) -> BulkActionResult:
        typed = _typed(status, agent_name, priority, task_kind, workflow_id, parent_task_id)
        return await capture(_run(info, "retry", filter, typed, limit, None))  # type: ignore[return-value]

    cancel_tasks = strawberry.mutation(
        resolver=_acting("cancel"),
        description="Cancel the unfinished tasks matched, each alone (TASK_CANCELLED with the reason)."
        + _SAME_FILTER,
    )
    pause_tasks = strawberry.mutation(
        resolver=_acting("pause"),
        description="Pause the tasks matched, as pauseTask does each." + _SAME_FILTER,
    )
    resume_tasks = strawberry.mutation(
        resolver=_acting("resume"),
        description="Resume the tasks matched, as resumeTask does each." + _SAME_FILTER,
    )
