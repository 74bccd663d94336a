"""Lifecycle mutations: claim, start, heartbeat, progress, complete, fail, retry, cancel, reschedule,
pause, resume. Thin: each binds the state machine action to its arguments and lets the `Lifecycle`
service (or `app.lifecycle.pause`) apply it; `capture` turns refusals into the error types of the result
union. The holder's changes (heartbeat, progress, complete, fail) are fenced: they may carry the attempt
their claim answered, and are refused (`LeaseLostError`) once another attempt holds the task or their
lease ran out."""

from __future__ import annotations

import datetime as dt
import functools
from enum import Enum
from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON

from app.api.inputs import IdempotencyKey
from app.api.results import (
    ClaimTasksSuccess,
    ConflictError,
    ForbiddenError,
    LeaseLostError,
    NotFoundError,
    NothingToClaim,
    TaskTransitionSuccess,
    TransitionError,
    ValidationError,
    capture,
    capture_fenced,
    transition_success,
)
from app.api.types.enums import TaskKind
from app.lifecycle import state_machine as sm
from app.lifecycle.cancel import cancel_subtree
from app.lifecycle.pause import pause_or_resume
from app.lifecycle.transitions import Action, Lifecycle

TaskTransitionResult = Annotated[
    TaskTransitionSuccess
    | NotFoundError
    | TransitionError
    | ConflictError
    | ValidationError
    | LeaseLostError
    | ForbiddenError,
    strawberry.union("TaskTransitionResult", description="Outcome of a lifecycle mutation."),
]
ClaimTaskResult = Annotated[
    TaskTransitionSuccess | NothingToClaim | ConflictError | ValidationError | ForbiddenError,
    strawberry.union(
        "ClaimTaskResult", description="Outcome of claimTask: a started task, or nothing to claim."
    ),
]
ClaimTasksResult = Annotated[
    ClaimTasksSuccess | ConflictError | ValidationError | ForbiddenError,
    strawberry.union(
        "ClaimTasksResult", description="Outcome of claimTasks: the tasks started (maybe none)."
    ),
]

Id = Annotated[strawberry.ID, strawberry.argument(description="Id of the task.")]
ExpectedVersion = Annotated[
    int | None,
    strawberry.argument(description="Apply only if the task is still at this version (compare-and-set)."),
]
LeaseSeconds = Annotated[
    int | None,
    strawberry.argument(
        description="How long the lease lasts, in seconds, unless heartbeats extend it (default and bounds:"
        " the server's LEASE_SECONDS, LEASE_SECONDS_MIN, LEASE_SECONDS_MAX)."
    ),
]
WorkerId = Annotated[
    str | None,
    strawberry.argument(description="Who holds the lease (e.g. a worker process); default: the agent name."),
]
#: The narrowing a claim (one task or a batch) takes.
ClaimWorkflow = Annotated[
    strawberry.ID | None, strawberry.argument(description="Only tasks of this workflow.")
]
ClaimKinds = Annotated[list[TaskKind] | None, strawberry.argument(description="Only tasks of these kinds.")]
Writer = Annotated[
    str | None,
    strawberry.argument(
        description="Who is writing: the `workerId` the claim or start named; default: the agent name. A"
        " leased task takes a change without its `attempt` token only from its lease holder (LeaseLostError"
        " otherwise; REQUIRE_LEASE_HOLDER=false lifts this), and never from a `workerId` that is not the"
        " holder."
    ),
]
Attempt = Annotated[
    int | None,
    strawberry.argument(
        description="Fencing token: the `attempts` the claim or start answered. When the task is no longer"
        " in progress under this attempt, the change is refused with LeaseLostError."
    ),
]


def _lifecycle(info: strawberry.Info) -> Lifecycle:
    return info.context.app.lifecycle


@strawberry.enum(description="What cancelTask cancels.")
class CancelScope(Enum):
    TASK = "TASK"
    SUBTREE = "SUBTREE"


@strawberry.enum(description="What pauseTask and resumeTask act on.")
class PauseScope(Enum):
    TASK = "TASK"
    SUBTREE = "SUBTREE"


async def _pause_or_resume(
    info: strawberry.Info,
    action: str,
    task_id: str,
    scope: PauseScope,
    reason: str | None,
    expected_version: int | None,
) -> TaskTransitionSuccess:
    applied, _ = await pause_or_resume(
        _lifecycle(info),
        action,
        task_id,
        subtree=scope is PauseScope.SUBTREE,
        reason=reason,
        expected_version=expected_version,
    )
    return transition_success(applied.state, applied.events)


PauseReason = Annotated[
    str | None, strawberry.argument(description="Why; kept in each TASK_PAUSED / TASK_RESUMED event.")
]


async def _cancel_subtree(info: strawberry.Info, task_id: str, reason: str | None) -> TaskTransitionSuccess:
    applied, _ = await cancel_subtree(_lifecycle(info), task_id, reason)
    return transition_success(applied.state, applied.events)


async def claim(
    info: strawberry.Info,
    agent_name: str,
    workflow_id: str | None,
    task_kinds: list[TaskKind] | None,
    idempotency_key: str | None,
    lease_seconds: int | None = None,
    worker_id: str | None = None,
) -> TaskTransitionSuccess | NothingToClaim:
    """Start the agent's most urgent ready task, if there is one."""
    # The stored kind names (`str()`: mypy takes `strawberry.enum_value` members for their definitions).
    kinds = [str(k.value) for k in task_kinds] if task_kinds else None
    why: list[str] = []
    applied = await _lifecycle(info).claim(
        agent_name,
        workflow_id=workflow_id,
        task_kinds=kinds,
        idempotency_key=idempotency_key,
        lease_seconds=lease_seconds,
        worker_id=worker_id,
        why=why,
    )
    if applied is None:
        return NothingToClaim(
            message=why[0] if why else "no pending task with its dependencies met is waiting for this agent"
        )
    return transition_success(applied.state, applied.events)


async def claim_many(
    info: strawberry.Info,
    agent_name: str,
    max_tasks: int,
    workflow_id: str | None,
    task_kinds: list[TaskKind] | None,
    idempotency_key: str | None,
    lease_seconds: int | None,
    worker_id: str | None,
) -> ClaimTasksSuccess:
    """Start up to `max_tasks` of the agent's ready tasks at once."""
    kinds = [str(k.value) for k in task_kinds] if task_kinds else None
    why: list[str] = []
    claimed = await _lifecycle(info).claim_many(
        agent_name,
        max_tasks,
        workflow_id=workflow_id,
        task_kinds=kinds,
        idempotency_key=idempotency_key,
        lease_seconds=lease_seconds,
        worker_id=worker_id,
        why=why,
    )
    return ClaimTasksSuccess(
        claimed=[transition_success(item.state, item.events) for item in claimed],
        reason=None if claimed else (why[0] if why else "nothing to claim"),
    )


async def transition(
    info: strawberry.Info,
    operation: str,
    task_id: str,
    action: Action,
    version: int | None,
    key: str | None,
    *,
    fenced: bool = False,
    attempt: int | None = None,
    worker_id: str | None = None,
) -> TaskTransitionSuccess:
    """Apply one state machine action to a task (the shared body of every mutation but claimTask)."""
    applied = await _lifecycle(info).transition(
        operation,
        task_id,
        action,
        expected_version=version,
        idempotency_key=key,
        fenced=fenced,
        attempt=attempt,
        worker_id=worker_id,
    )
    return transition_success(applied.state, applied.events)


async def start(
    info: strawberry.Info,
    task_id: str,
    lease_seconds: int | None,
    worker_id: str | None,
    version: int | None,
    key: str | None,
) -> TaskTransitionSuccess:
    """startTask: the lease is checked before the task is read."""
    action = _lifecycle(info).start_action(lease_seconds, worker_id)
    return await transition(info, "start", task_id, action, version, key)


async def heartbeat(
    info: strawberry.Info,
    task_id: str,
    attempt: int | None,
    lease_seconds: int | None,
    percentage: float | None,
    current_step: str | None,
    key: str | None,
    worker_id: str | None = None,
) -> TaskTransitionSuccess:
    """heartbeatTask: extend the lease (by the default when not given) and record progress if given."""
    action = functools.partial(
        sm.heartbeat,
        lease_seconds=_lifecycle(info).lease(lease_seconds),
        percentage=percentage,
        current_step=current_step,
    )
    return await transition(
        info, "heartbeat", task_id, action, None, key, fenced=True, attempt=attempt, worker_id=worker_id
    )


def _object(value: object) -> dict[str, Any] | None:
    # A JSON argument is whatever the client sent; the state machine refuses anything but an object.
    return cast(dict[str, Any] | None, value)


@strawberry.type(description="Moving tasks through their lifecycle.")
class LifecycleMutation:
    @strawberry.mutation(
        description="Atomically start the most urgent, oldest pending task of an agent, its dependencies met."
    )
    async def claim_task(
        self,
        info: strawberry.Info,
        agent_name: Annotated[str, strawberry.argument(description="The agent asking for work.")],
        workflow_id: ClaimWorkflow = None,
        task_kinds: ClaimKinds = None,
        lease_seconds: LeaseSeconds = None,
        worker_id: WorkerId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> ClaimTaskResult:
        # `claim` raises only what ClaimTaskResult holds (ValidationError, ConflictError): never a
        # NotFoundError, TransitionError or LeaseLostError, which `capture`'s type allows for.
        return await capture(  # type: ignore[return-value]
            claim(info, agent_name, workflow_id, task_kinds, idempotency_key, lease_seconds, worker_id)
        )

    @strawberry.mutation(
        description="Atomically start up to `max` of an agent's ready tasks, in claim order (priority, then"
        " age), each under its own lease: what `max` claimTask calls would hand out, in one transaction."
    )
    async def claim_tasks(
        self,
        info: strawberry.Info,
        agent_name: Annotated[str, strawberry.argument(description="The agent asking for work.")],
        max: Annotated[
            int, strawberry.argument(description="Most tasks to start (1 to the server's MAX_CLAIM_BATCH).")
        ],
        workflow_id: ClaimWorkflow = None,
        task_kinds: ClaimKinds = None,
        lease_seconds: LeaseSeconds = None,
        worker_id: WorkerId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> ClaimTasksResult:
        return await capture(  # type: ignore[return-value]
            claim_many(
                info, agent_name, max, workflow_id, task_kinds, idempotency_key, lease_seconds, worker_id
            )
        )

    @strawberry.mutation(
        description="Start a pending or retrying task under a lease: attempts + 1 (the fencing token),"
        " startedAt = now."
    )
    async def start_task(
        self,
        info: strawberry.Info,
        id: Id,
        lease_seconds: LeaseSeconds = None,
        worker_id: WorkerId = None,
        expected_version: ExpectedVersion = None,
        idempotency_key: IdempotencyKey = None,
    ) -> TaskTransitionResult:
        return await capture_fenced(
            start(info, id, lease_seconds, worker_id, expected_version, idempotency_key)
        )

    @strawberry.mutation(
        description="Keep the lease of a task in progress: leaseExpiresAt = now + leaseSeconds,"
        " lastHeartbeatAt = now. With percentage or currentStep it also records progress as reportProgress"
        " does (a TASK_PROGRESS event); a bare heartbeat writes no event."
    )
    async def heartbeat_task(
        self,
        info: strawberry.Info,
        id: Id,
        attempt: Attempt = None,
        lease_seconds: LeaseSeconds = None,
        percentage: Annotated[
            float | None, strawberry.argument(description="Progress between 0 and 100, if it moved.")
        ] = None,
        current_step: Annotated[
            str | None, strawberry.argument(description="What the agent is doing now, if it changed.")
        ] = None,
        idempotency_key: IdempotencyKey = None,
        worker_id: Writer = None,
    ) -> TaskTransitionResult:
        return await capture_fenced(
            heartbeat(info, id, attempt, lease_seconds, percentage, current_step, idempotency_key, worker_id)
        )

    @strawberry.mutation(description="Report progress (0–100) and the current step of a task in progress.")
    async def report_progress(
        self,
        info: strawberry.Info,
        id: Id,
        percentage: Annotated[float, strawberry.argument(description="Progress between 0 and 100.")],
        current_step: Annotated[
            str | None, strawberry.argument(description="What the agent is doing now.")
        ] = None,
        attempt: Attempt = None,
        expected_version: ExpectedVersion = None,
        idempotency_key: IdempotencyKey = None,
        worker_id: Writer = None,
    ) -> TaskTransitionResult:
        action = functools.partial(sm.report_progress, percentage=percentage, current_step=current_step)
        return await capture_fenced(
            transition(
                info,
                "report_progress",
                id,
                action,
                expected_version,
                idempotency_key,
                fenced=True,
                attempt=attempt,
                worker_id=worker_id,
            )
        )

    @strawberry.mutation(
        description="Complete a task in progress; releases the tasks that were waiting for it."
    )
    async def complete_task(
        self,
        info: strawberry.Info,
        id: Id,
        result: Annotated[
            JSON | None, strawberry.argument(description="Result data (TASK_COMPLETED.result).")
        ] = None,
        execution_time_seconds: Annotated[
            float | None,
            strawberry.argument(description="Duration; default: now − startedAt. Never negative."),
        ] = None,
        output_references: Annotated[
            JSON | None,
            strawberry.argument(description="References to outputs, merged into outputReferences."),
        ] = None,
        attempt: Attempt = None,
        expected_version: ExpectedVersion = None,
        idempotency_key: IdempotencyKey = None,
        worker_id: Writer = None,
    ) -> TaskTransitionResult:
        action = functools.partial(
            sm.complete,
            result=_object(result),
            execution_time_seconds=execution_time_seconds,
            output_references=_object(output_references),
        )
        return await capture_fenced(
            transition(
                info,
                "complete",
                id,
                action,
                expected_version,
                idempotency_key,
                fenced=True,
                attempt=attempt,
                worker_id=worker_id,
            )
        )

    @strawberry.mutation(
        description="Record a failure: final → failed; otherwise retrying after the task's retry policy's"
        " delay (`nextAttemptAt`), until max attempts make it failed (docs/STEERING.md)."
    )
    async def fail_task(
        self,
        info: strawberry.Info,
        id: Id,
        error: Annotated[str, strawberry.argument(description="What went wrong.")],
        details: Annotated[
            str | None, strawberry.argument(description="More detail, e.g. a stack trace.")
        ] = None,
        is_final: Annotated[bool, strawberry.argument(description="No retry should follow.")] = False,
        attempt: Attempt = None,
        expected_version: ExpectedVersion = None,
        idempotency_key: IdempotencyKey = None,
        error_type: Annotated[
            str | None,
            strawberry.argument(
                description="The error's type (e.g. `RateLimited`); one of the retry policy's"
                " `nonRetryableErrorTypes` fails the task for good. Kept in `lastError.errorType`."
            ),
        ] = None,
        next_retry_delay: Annotated[
            float | None,
            strawberry.argument(
                description="Seconds until the next attempt, replacing the retry policy's delay (e.g. a"
                " model's Retry-After); no jitter, no maximum interval."
            ),
        ] = None,
        worker_id: Writer = None,
    ) -> TaskTransitionResult:
        action = _lifecycle(info).fail_action(error, details, is_final, error_type, next_retry_delay)
        return await capture_fenced(
            transition(
                info,
                "fail",
                id,
                action,
                expected_version,
                idempotency_key,
                fenced=True,
                attempt=attempt,
                worker_id=worker_id,
            )
        )

    @strawberry.mutation(
        description="Retry a failed or cancelled task (→ retrying; grants one more attempt if used up)."
    )
    async def retry_task(
        self,
        info: strawberry.Info,
        id: Id,
        expected_version: ExpectedVersion = None,
        idempotency_key: IdempotencyKey = None,
    ) -> TaskTransitionResult:
        return await capture_fenced(
            transition(info, "retry", id, sm.retry, expected_version, idempotency_key)
        )

    @strawberry.mutation(
        description="Delay the start of a task not started yet (pending, retrying or awaiting a"
        " dependency): no claim hands it out before `notBefore` (null: at once). Writes TASK_RESCHEDULED."
    )
    async def reschedule_task(
        self,
        info: strawberry.Info,
        id: Id,
        not_before: Annotated[
            dt.datetime | None,
            strawberry.argument(description="Not claimable before this; null clears the delay."),
        ] = None,
        expected_version: ExpectedVersion = None,
        idempotency_key: IdempotencyKey = None,
    ) -> TaskTransitionResult:
        action = functools.partial(sm.reschedule, not_before=not_before)
        return await capture_fenced(
            transition(info, "reschedule", id, action, expected_version, idempotency_key)
        )

    @strawberry.mutation(
        description="Cancel a task that has not finished; with `scope: SUBTREE`, every unfinished task below"
        " it too (docs/STEERING.md)."
    )
    async def cancel_task(
        self,
        info: strawberry.Info,
        id: Id,
        reason: Annotated[str | None, strawberry.argument(description="Why, kept in currentStep.")] = None,
        expected_version: ExpectedVersion = None,
        idempotency_key: IdempotencyKey = None,
        scope: Annotated[
            CancelScope,
            strawberry.argument(
                description="TASK (the default): this task only. SUBTREE: the task and every unfinished"
                " task below it, each with STATUS_CHANGED and TASK_CANCELLED (reason, rootTaskId); the"
                " answer holds the root's state and events. A retry finishes an interrupted one."
            ),
        ] = CancelScope.TASK,
    ) -> TaskTransitionResult:
        if scope is CancelScope.SUBTREE:
            return await capture_fenced(_cancel_subtree(info, id, reason))
        action = functools.partial(sm.cancel, reason=reason)
        return await capture_fenced(transition(info, "cancel", id, action, expected_version, idempotency_key))

    @strawberry.mutation(
        description="Pause a task (docs/STEERING.md): pending, retrying or awaiting a dependency → PAUSED"
        " (`pausedFrom` keeps the status; not claimable, no retry or expiry fires); a task in progress"
        " keeps running with `pauseRequested` (completing completes it, a failure that would be retried"
        " pauses it). Already paused: nothing is written. A finished task is refused (TransitionError)."
    )
    async def pause_task(
        self,
        info: strawberry.Info,
        id: Id,
        reason: PauseReason = None,
        scope: Annotated[
            PauseScope,
            strawberry.argument(
                description="TASK (the default): this task only. SUBTREE: the task and every unfinished"
                " task below it, each with STATUS_CHANGED and TASK_PAUSED (reason, rootTaskId); the answer"
                " holds the root's state and events. Sent again, it finishes an interrupted one."
            ),
        ] = PauseScope.TASK,
        expected_version: ExpectedVersion = None,
    ) -> TaskTransitionResult:
        return await capture_fenced(_pause_or_resume(info, "pause", id, scope, reason, expected_version))

    @strawberry.mutation(
        description="Resume a paused task to the status it was paused from: retrying (its nextAttemptAt"
        " kept), else pending when its dependencies are met now and AWAITING_DEPENDENCY when not; a task in"
        " progress has its pause request withdrawn. Not paused: nothing is written. A finished task is"
        " refused (TransitionError)."
    )
    async def resume_task(
        self,
        info: strawberry.Info,
        id: Id,
        reason: PauseReason = None,
        scope: Annotated[
            PauseScope,
            strawberry.argument(
                description="TASK (the default): this task only. SUBTREE: the task and every paused task"
                " below it, each with STATUS_CHANGED and TASK_RESUMED (reason, rootTaskId)."
            ),
        ] = PauseScope.TASK,
        expected_version: ExpectedVersion = None,
    ) -> TaskTransitionResult:
        return await capture_fenced(_pause_or_resume(info, "resume", id, scope, reason, expected_version))
