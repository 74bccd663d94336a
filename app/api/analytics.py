"""Agent analytics over GraphQL (seed 001 "Analytics & Metrics"): `agentStats` and `agentsStats`.

The numbers are computed by MongoDB in one `aggregate` per field (see app/store/analytics.py, which also
says how p95 is computed); this module only shapes the answer. The pending and failed task lists are
part of that same aggregation, so their size is an argument of the root fields (`pendingFirst`,
`failedFirst`: default 20, at most the server's maximum page size), not of the list fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import strawberry

from app.api.errors import page_size
from app.api.types.convert import as_datetime, from_doc
from app.api.types.enums import TaskPriority, TaskStatus
from app.api.types.progress import StatusCount
from app.api.types.tasks import AgentTaskState
from app.lifecycle.transitions import utcnow
from app.store import analytics
from app.store.analytics import AgentStatsData

#: How many pending and failed tasks an `AgentStats` lists when `pendingFirst`/`failedFirst` are not given.
DEFAULT_TASK_LIST = 20


@strawberry.type(description="How many of an agent's tasks have one priority.")
class PriorityCount:
    priority: TaskPriority = strawberry.field(description="The priority.")
    count: int = strawberry.field(description="How many tasks have it.")


@strawberry.type(description="An error message and how many of an agent's tasks last failed with it.")
class ErrorCount:
    message: str = strawberry.field(description="The `lastError.message`, exactly as stored.")
    count: int = strawberry.field(description="How many tasks have it as their last error.")


@strawberry.type(
    description=(
        "How one agent is doing (seed 001 `get_agent_stats`), over its tasks created since `since`. "
        "Statuses are read as everywhere else: a task past its `expiresAt` counts as failed."
    )
)
class AgentStats:
    agent_name: str = strawberry.field(description="The agent (`agentName` of its tasks).")
    total: int = strawberry.field(description="How many tasks the agent has (in the period).")
    by_status: list[StatusCount] = strawberry.field(
        description="Tasks per status, every status listed (0 included), in the enum's order."
    )
    by_priority: list[PriorityCount] = strawberry.field(
        description="Tasks per priority, every priority listed (0 included), low to urgent."
    )
    average_execution_time_seconds: float | None = strawberry.field(
        description="Mean `executionTimeSeconds` of the completed tasks; null when none has one."
    )
    p95_execution_time_seconds: float | None = strawberry.field(
        description=(
            "95th percentile of the completed tasks' `executionTimeSeconds`, nearest-rank: the "
            "ceil(0.95 × n)-th smallest; null when none has one."
        )
    )
    success_rate: float | None = strawberry.field(
        description="completed / (completed + failed), 0–1; null when no task has finished either way."
    )
    tasks_retried: int = strawberry.field(description="Tasks attempted more than once (`attempts` > 1).")
    average_attempts_per_task: float | None = strawberry.field(
        description="Mean `attempts` over all the tasks (never-started ones count 0); null with no task."
    )
    max_attempts: int | None = strawberry.field(
        description="The most attempts any one task has taken; null with no task."
    )
    top_errors: list[ErrorCount] = strawberry.field(
        description="The 5 most frequent `lastError.message`s, most frequent first, ties by message."
    )
    pending_tasks: list[AgentTaskState] = strawberry.field(
        description="The agent's pending tasks, ready to run (seed 001 `get_pending_tasks`), oldest first."
    )
    failed_tasks: list[AgentTaskState] = strawberry.field(
        description="The agent's failed tasks, needing attention (seed 001 `get_failed_tasks`), oldest first."
    )


def _agent_stats(data: AgentStatsData) -> AgentStats:
    def states(docs: list[dict]) -> list[AgentTaskState]:
        return [from_doc(AgentTaskState, AgentTaskState.spec, doc) for doc in docs]

    return AgentStats(
        agent_name=data.agent_name,
        total=data.total,
        by_status=[StatusCount(status=TaskStatus(s), count=n) for s, n in data.by_status.items()],
        by_priority=[PriorityCount(priority=TaskPriority(p), count=n) for p, n in data.by_priority.items()],
        average_execution_time_seconds=data.average_execution_time_seconds,
        p95_execution_time_seconds=data.p95_execution_time_seconds,
        success_rate=data.success_rate,
        tasks_retried=data.tasks_retried,
        average_attempts_per_task=data.average_attempts_per_task,
        max_attempts=data.max_attempts,
        top_errors=[ErrorCount(message=m, count=n) for m, n in data.top_errors],
        pending_tasks=states(data.pending),
        failed_tasks=states(data.failed),
    )


Since = Annotated[
    dt.datetime | None,
    strawberry.argument(description="Only tasks created at or after this time (default: all of them)."),
]
PendingFirst = Annotated[
    int | None,
    strawberry.argument(
        description="How many pending tasks to list, oldest first (default 20, at most the max page size)."
    ),
]
FailedFirst = Annotated[
    int | None,
    strawberry.argument(
        description="How many failed tasks to list, oldest first (default 20, at most the max page size)."
    ),
]


@strawberry.type(description="How the agents are doing: task counts, timings, success, retries, errors.")
class AnalyticsQuery:
    @strawberry.field(
        description=(
            "One agent's statistics, from one MongoDB aggregation; an unknown agent gets zeros and nulls."
        )
    )
    async def agent_stats(
        self,
        info: strawberry.Info,
        agent_name: Annotated[str, strawberry.argument(description="The agent, as in `agentName`.")],
        since: Since = None,
        pending_first: PendingFirst = None,
        failed_first: FailedFirst = None,
    ) -> AgentStats:
        maximum = info.context.settings.max_page_size
        data = await analytics.agent_stats(
            info.context.store.db,
            agent_name,
            since=as_datetime(since),
            now=utcnow(),
            pending_first=page_size(pending_first, DEFAULT_TASK_LIST, maximum, "pendingFirst"),
            failed_first=page_size(failed_first, DEFAULT_TASK_LIST, maximum, "failedFirst"),
        )
        return _agent_stats(data)

    @strawberry.field(
        description=(
            "Every agent's statistics, sorted by agent name, from one MongoDB aggregation. Only agents "
            "with tasks in the period are listed; tasks with no agent name are left out."
        )
    )
    async def agents_stats(
        self,
        info: strawberry.Info,
        since: Since = None,
        first: Annotated[
            int | None,
            strawberry.argument(
                description="How many agents at most, by name (default 20, at most the maximum page size)."
            ),
        ] = None,
        pending_first: PendingFirst = None,
        failed_first: FailedFirst = None,
    ) -> list[AgentStats]:
        settings = info.context.settings
        found = await analytics.agents_stats(
            info.context.store.db,
            since=as_datetime(since),
            now=utcnow(),
            first=page_size(first, settings.default_page_size, settings.max_page_size, "first"),
            pending_first=page_size(pending_first, DEFAULT_TASK_LIST, settings.max_page_size, "pendingFirst"),
            failed_first=page_size(failed_first, DEFAULT_TASK_LIST, settings.max_page_size, "failedFirst"),
        )
        return [_agent_stats(data) for data in found]
