"""What the client hands back: a task's state, an event, a page of events (plain frozen dataclasses).

Each keeps the server's answer as received in `raw` (GraphQL names), so a field this client does not
model is still at hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_tasks_client.enums import EventType, TaskKind, TaskStatus


def parse_time(value: Any) -> datetime | None:
    """A GraphQL DateTime (ISO 8601) as an aware datetime; None stays None."""
    if value is None:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def format_time(value: datetime) -> str:
    """A datetime as a GraphQL DateTime (naive = UTC)."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


@dataclass(frozen=True)
class RetryPolicy:
    """How a task's failed attempts are retried (the server's `RetryPolicyInput`; Temporal's RetryPolicy).
    Fields left at None come from the server's defaults; `maximum_attempts` 0 = unlimited. After failed
    attempt n the next waits min(initial_interval * backoff_coefficient ** (n - 1), maximum_interval)
    seconds, spread by +- jitter."""

    initial_interval: float | None = None
    backoff_coefficient: float | None = None
    maximum_interval: float | None = None
    maximum_attempts: int | None = None
    non_retryable_error_types: tuple[str, ...] | list[str] | None = None
    jitter: float | None = None

    def to_graphql(self) -> dict[str, Any]:
        values = {
            "initialInterval": self.initial_interval,
            "backoffCoefficient": self.backoff_coefficient,
            "maximumInterval": self.maximum_interval,
            "maximumAttempts": self.maximum_attempts,
            "nonRetryableErrorTypes": None
            if self.non_retryable_error_types is None
            else list(self.non_retryable_error_types),
            "jitter": self.jitter,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Timeouts:
    """A task's timeouts in seconds (the server's `scheduleToStartTimeout`, `startToCloseTimeout`,
    `scheduleToCloseTimeout`; Temporal's activity timeouts). None: the server's default; 0: none.
    `schedule_to_start`: not started in time once schedulable → failed; `start_to_close`: one attempt
    running too long → that attempt fails and the retry policy applies; `schedule_to_close`: the whole
    task, retries included → failed. The heartbeat timeout is the lease (`lease_seconds`)."""

    schedule_to_start: float | None = None
    start_to_close: float | None = None
    schedule_to_close: float | None = None

    def to_graphql(self) -> dict[str, Any]:
        values = {
            "scheduleToStartTimeout": self.schedule_to_start,
            "startToCloseTimeout": self.start_to_close,
            "scheduleToCloseTimeout": self.schedule_to_close,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class TaskState:
    """A task's execution state as the server stored it after a change (`AgentTaskState`).

    Statuses are in the domain's spelling (`TaskStatus` members, equal to `in_progress`…); `attempts` is
    the fencing token of the attempt in progress."""

    id: str
    agent_name: str
    status: str
    attempts: int
    version: int
    progress_percentage: int = 0
    current_step: str | None = None
    name: str | None = None
    workflow_id: str | None = None
    task_kind: str | None = None
    max_attempts: int | None = None
    input_parameters: dict[str, Any] = field(default_factory=dict)
    lease_holder: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    not_before: datetime | None = None
    #: The task's timeouts (seconds; None or 0: none) and the deadlines running now (None: not running).
    timeouts: Timeouts = field(default_factory=Timeouts)
    schedule_to_start_deadline: datetime | None = None
    start_to_close_deadline: datetime | None = None
    schedule_to_close_deadline: datetime | None = None
    #: The W3C trace context the task's attempts continue (the worker's "task attempt" span).
    traceparent: str | None = None
    #: A paused task: the status a resume restores; since when it is paused.
    paused_from: str | None = None
    paused_at: datetime | None = None
    #: A task in progress asked to pause: its attempt runs on (a failure that would retry pauses it).
    pause_requested: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any]) -> TaskState:
        last_error = data.get("lastError") or {}
        return cls(
            id=data["id"],
            agent_name=data.get("agentName") or "",
            status=TaskStatus.parse(data.get("status")) or "",
            attempts=int(data.get("attempts") or 0),
            version=int(data.get("version") or 0),
            progress_percentage=int(data.get("progressPercentage") or 0),
            current_step=data.get("currentStep"),
            name=data.get("name"),
            workflow_id=data.get("workflowId"),
            task_kind=TaskKind.parse(data.get("taskKind")),
            max_attempts=data.get("maxAttempts"),
            input_parameters=dict(data.get("inputParameters") or {}),
            lease_holder=data.get("leaseHolder"),
            lease_expires_at=parse_time(data.get("leaseExpiresAt")),
            last_error=last_error.get("message"),
            next_attempt_at=parse_time(data.get("nextAttemptAt")),
            not_before=parse_time(data.get("notBefore")),
            timeouts=Timeouts(
                schedule_to_start=data.get("scheduleToStartTimeout"),
                start_to_close=data.get("startToCloseTimeout"),
                schedule_to_close=data.get("scheduleToCloseTimeout"),
            ),
            schedule_to_start_deadline=parse_time(data.get("scheduleToStartDeadline")),
            start_to_close_deadline=parse_time(data.get("startToCloseDeadline")),
            schedule_to_close_deadline=parse_time(data.get("scheduleToCloseDeadline")),
            traceparent=data.get("traceparent"),
            paused_from=TaskStatus.parse(data.get("pausedFrom")),
            paused_at=parse_time(data.get("pausedAt")),
            pause_requested=bool(data.get("pauseRequested")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class BulkResult:
    """What a bulk action (`retry_tasks`, `cancel_tasks`, `pause_tasks`, `resume_tasks`) did: tasks
    matched (at most `limit`), the ids changed, the tasks skipped by reason (`FINISHED`, `ACTIVE`,
    `ALREADY_PAUSED`, `NOT_PAUSED`, …), and whether the filter matched more than the limit."""

    matched: int
    changed_ids: list[str]
    skipped: dict[str, int]
    has_more: bool
    limit: int

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any]) -> BulkResult:
        return cls(
            matched=int(data["matched"]),
            changed_ids=[str(i) for i in data["changedIds"]],
            skipped={s["reason"]: int(s["count"]) for s in data.get("skipped") or []},
            has_more=bool(data["hasMore"]),
            limit=int(data["limit"]),
        )


@dataclass(frozen=True)
class Event:
    """One task event (`TaskEvent`): `type` (`TASK_COMPLETED`…), whom it concerns, and its payload in
    `data` (the type-specific fields, GraphQL names: `toStatus`, `result`, `isFinal`…)."""

    cursor: str
    type: str
    task_id: str
    workflow_id: str | None
    agent_id: str | None
    timestamp: datetime | None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_graphql(cls, node: Mapping[str, Any]) -> Event:
        common = {"__typename", "id", "cursor", "type", "taskId", "workflowId", "agentId", "timestamp"}
        return cls(
            cursor=node["cursor"],
            type=EventType.parse(node["type"]) or "",
            task_id=node["taskId"],
            workflow_id=node.get("workflowId"),
            agent_id=node.get("agentId"),
            timestamp=parse_time(node.get("timestamp")),
            data={k: v for k, v in node.items() if k not in common},
        )


@dataclass(frozen=True)
class EventPage:
    """A page of `taskEvents`, oldest first; pass `end_cursor` as `after` for the next one."""

    events: list[Event]
    end_cursor: str | None
    has_next_page: bool
    total_count: int
