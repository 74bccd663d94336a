"""Concurrency limits, claim policies and claim queues over GraphQL: `concurrencyLimits` and `claimQueue`
(read), `setConcurrencyLimit`, `clearConcurrencyLimit` and `setClaimPolicy` (admin). Thin over
`app.lifecycle.steering.Steering` (docs/STEERING.md, "Concurrency limits and fairness")."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated

import strawberry

from app.api.errors import UserInputError
from app.api.results import ForbiddenError, ValidationError, capture
from app.domain import ErrorCode, utcnow
from app.lifecycle.errors import Invalid
from app.lifecycle.steering import (
    QUEUE_COUNT_CAP,
    AgentQueue,
    LimitView,
    Policy,
    RateView,
    Scope,
    Steering,
)


@strawberry.enum(name="ConcurrencyScope", description="What a concurrency limit counts over.")
class ConcurrencyScope(Enum):
    AGENT = "agent"
    WORKFLOW = "workflow"
    KEY = "key"


strawberry.enum(
    Policy,
    name="ClaimPolicy",
    description="How an agent's claims choose: FIFO (most urgent, then oldest; the default),"
    " FAIR_BY_WORKFLOW or FAIR_BY_KEY (rotate among the workflows or concurrency keys with ready work of"
    " the top priority, least recently served first).",
)


@strawberry.enum(name="RatePeriod", description="The fixed window a start rate limit counts in.")
class RatePeriod(Enum):
    SECOND = 1
    MINUTE = 60
    HOUR = 3600


@strawberry.type(description="A start rate limit and its current window.")
class StartRateLimit:
    scope: ConcurrencyScope = strawberry.field(description="What it counts over.")
    key: str = strawberry.field(description="The agent name, workflow id or concurrency key.")
    max: int = strawberry.field(description="Most claims started under it per window.")
    per: RatePeriod = strawberry.field(description="The window (fixed: a second, a minute, an hour).")
    started: int = strawberry.field(description="Starts in the current window.")
    next_window_at: dt.datetime = strawberry.field(description="When the next window opens.")


def rate_type(view: RateView) -> StartRateLimit:
    return StartRateLimit(
        scope=ConcurrencyScope(view.scope.value),
        key=view.key,
        max=view.max,
        per=RatePeriod(view.per_seconds),
        started=view.started,
        next_window_at=view.next_window_at,
    )


@strawberry.type(description="The start rate limit was set (or changed).")
class SetStartRateLimitSuccess:
    limit: StartRateLimit = strawberry.field(description="The limit as stored, with its current window.")


SetStartRateLimitResult = Annotated[
    SetStartRateLimitSuccess | ValidationError | ForbiddenError,
    strawberry.union("SetStartRateLimitResult", description="Outcome of setStartRateLimit."),
]


@strawberry.type(description="A concurrency limit and the tasks in progress under it now.")
class ConcurrencyLimit:
    scope: ConcurrencyScope = strawberry.field(description="What it counts over.")
    key: str = strawberry.field(description="The agent name, workflow id or concurrency key.")
    max: int = strawberry.field(description="Most tasks in progress under it; claims wait beyond.")
    running: int = strawberry.field(description="Tasks in progress under it now.")


@strawberry.type(description="One workflow's (or concurrency key's) share of an agent's queue.")
class ClaimQueueGroup:
    group: str | None = strawberry.field(
        description="The workflow id (or concurrency key, with `by: KEY`); null: tasks with none."
    )
    ready: int = strawberry.field(description="Its tasks claimable now.")
    running: int = strawberry.field(description="Its tasks in progress (any agent).")
    limit: int | None = strawberry.field(description="Its concurrency limit; null: none.")


@strawberry.type(description="An agent's claim queue now.")
class ClaimQueue:
    agent_name: str = strawberry.field(description="The agent.")
    policy: Policy = strawberry.field(description="How its claims choose.")
    ready: int = strawberry.field(description="Its tasks claimable now (limits aside).")
    running: int = strawberry.field(description="Its tasks in progress.")
    limit: int | None = strawberry.field(description="Its own concurrency limit; null: none.")
    waiting_on_limits: int = strawberry.field(
        description="Of the ready tasks, those a full concurrency limit holds back."
    )
    groups: list[ClaimQueueGroup] = strawberry.field(
        description="Per workflow (or key) with ready work, the first CLAIM_FAIR_MAX_GROUPS of them."
    )
    capped: bool = strawberry.field(
        description="A count stopped at 10,000, or the groups at CLAIM_FAIR_MAX_GROUPS: the figures are"
        " floors."
    )


@strawberry.enum(name="ClaimQueueGrouping", description="What claimQueue's groups are.")
class ClaimQueueGrouping(Enum):
    WORKFLOW = "workflow_id"
    KEY = "concurrency_key"


@strawberry.type(description="The limit was set (or changed); it binds the next claim.")
class SetConcurrencyLimitSuccess:
    limit: ConcurrencyLimit = strawberry.field(description="The limit as stored, with its running count.")


@strawberry.type(description="The limit was cleared (or there was none).")
class ClearConcurrencyLimitSuccess:
    cleared: bool = strawberry.field(description="Whether there was such a limit.")


@strawberry.type(description="The agent's claim policy was set.")
class SetClaimPolicySuccess:
    agent_name: str = strawberry.field(description="The agent.")
    policy: Policy = strawberry.field(description="Its claim policy now.")


SetConcurrencyLimitResult = Annotated[
    SetConcurrencyLimitSuccess | ValidationError | ForbiddenError,
    strawberry.union("SetConcurrencyLimitResult", description="Outcome of setConcurrencyLimit."),
]
ClearConcurrencyLimitResult = Annotated[
    ClearConcurrencyLimitSuccess | ValidationError | ForbiddenError,
    strawberry.union("ClearConcurrencyLimitResult", description="Outcome of clearConcurrencyLimit."),
]
SetClaimPolicyResult = Annotated[
    SetClaimPolicySuccess | ValidationError | ForbiddenError,
    strawberry.union("SetClaimPolicyResult", description="Outcome of setClaimPolicy."),
]

LimitKey = Annotated[
    str, strawberry.argument(description="The agent name, workflow id or concurrency key (1–200 characters).")
]
AgentName = Annotated[str, strawberry.argument(description="The agent.")]


def _steering(info: strawberry.Info) -> Steering:
    return info.context.app.lifecycle.steering


def limit_type(view: LimitView) -> ConcurrencyLimit:
    return ConcurrencyLimit(
        scope=ConcurrencyScope(view.scope.value), key=view.key, max=view.max, running=view.running
    )


def queue_type(queue: AgentQueue) -> ClaimQueue:
    return ClaimQueue(
        agent_name=queue.agent_name,
        policy=queue.policy,
        ready=queue.ready,
        running=queue.running,
        limit=queue.limit,
        waiting_on_limits=queue.waiting_on_limits,
        groups=[
            ClaimQueueGroup(group=g.group, ready=g.ready, running=g.running, limit=g.limit)
            for g in queue.groups
        ],
        capped=queue.capped,
    )


@strawberry.type
class SteeringQuery:
    @strawberry.field(description="Every concurrency limit, with the tasks in progress under it now.")
    async def concurrency_limits(self, info: strawberry.Info) -> list[ConcurrencyLimit]:
        return [limit_type(view) for view in await _steering(info).limits()]

    @strawberry.field(description="An agent's claim queue: ready, running, held back by limits, per group.")
    async def claim_queue(
        self,
        info: strawberry.Info,
        agent_name: AgentName,
        by: Annotated[
            ClaimQueueGrouping, strawberry.argument(description="Group by workflow (default) or by key.")
        ] = ClaimQueueGrouping.WORKFLOW,
    ) -> ClaimQueue:
        try:
            queue = await _steering(info).queue(agent_name, utcnow(), by.value, QUEUE_COUNT_CAP)
        except Invalid as exc:  # a query has no result union: the refusal is a GraphQL error with its code
            raise UserInputError(
                f"{exc.message} (argument `{exc.field}`).", ErrorCode.BAD_USER_INPUT
            ) from exc
        return queue_type(queue)

    @strawberry.field(description="Every start rate limit, with the starts of its current window.")
    async def start_rate_limits(self, info: strawberry.Info) -> list[StartRateLimit]:
        return [rate_type(view) for view in await _steering(info).rates(utcnow())]


@strawberry.type
class SteeringMutation:
    @strawberry.mutation(
        description="Set (or change) a concurrency limit (admin): claims never start a task while `max`"
        " tasks under it are in progress. Running tasks are not stopped when it is lowered."
    )
    async def set_concurrency_limit(
        self,
        info: strawberry.Info,
        scope: ConcurrencyScope,
        key: LimitKey,
        max: Annotated[int, strawberry.argument(description="Most tasks in progress (1 to 1,000,000).")],
    ) -> SetConcurrencyLimitResult:
        steering = _steering(info)

        async def work() -> SetConcurrencyLimitSuccess:
            view = await steering.set_limit(Scope(scope.value), key, max, utcnow())
            return SetConcurrencyLimitSuccess(limit=limit_type(view))

        return await capture(work())  # type: ignore[return-value]

    @strawberry.mutation(description="Remove a concurrency limit (admin).")
    async def clear_concurrency_limit(
        self, info: strawberry.Info, scope: ConcurrencyScope, key: LimitKey
    ) -> ClearConcurrencyLimitResult:
        steering = _steering(info)

        async def work() -> ClearConcurrencyLimitSuccess:
            return ClearConcurrencyLimitSuccess(cleared=await steering.clear_limit(Scope(scope.value), key))

        return await capture(work())  # type: ignore[return-value]

    @strawberry.mutation(
        description="Set (or change) a start rate limit (admin): at most `max` claims start tasks under it"
        " per fixed window of `per`, across every server process; a claim passes over its tasks beyond."
    )
    async def set_start_rate_limit(
        self,
        info: strawberry.Info,
        scope: ConcurrencyScope,
        key: LimitKey,
        max: Annotated[int, strawberry.argument(description="Most starts per window (1 to 1,000,000).")],
        per: Annotated[RatePeriod, strawberry.argument(description="The window.")],
    ) -> SetStartRateLimitResult:
        steering = _steering(info)

        async def work() -> SetStartRateLimitSuccess:
            view = await steering.set_rate(Scope(scope.value), key, max, per.value, utcnow())
            return SetStartRateLimitSuccess(limit=rate_type(view))

        return await capture(work())  # type: ignore[return-value]

    @strawberry.mutation(description="Remove a start rate limit (admin).")
    async def clear_start_rate_limit(
        self, info: strawberry.Info, scope: ConcurrencyScope, key: LimitKey
    ) -> ClearConcurrencyLimitResult:
        steering = _steering(info)

        async def work() -> ClearConcurrencyLimitSuccess:
            return ClearConcurrencyLimitSuccess(cleared=await steering.clear_rate(Scope(scope.value), key))

        return await capture(work())  # type: ignore[return-value]

    @strawberry.mutation(description="Set how an agent's claims choose among its ready tasks (admin).")
    async def set_claim_policy(
        self, info: strawberry.Info, agent_name: AgentName, policy: Policy
    ) -> SetClaimPolicyResult:
        steering = _steering(info)

        async def work() -> SetClaimPolicySuccess:
            await steering.set_policy(agent_name, policy, utcnow())
            return SetClaimPolicySuccess(agent_name=agent_name, policy=policy)

        return await capture(work())  # type: ignore[return-value]
