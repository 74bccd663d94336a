"""REST routes for concurrency limits, start rate limits, claim policies and claim queues (issue 22 parts 2
to 5; docs/STEERING.md): thin over `app.lifecycle.steering.Steering`, as the GraphQL fields are, with the
same rules, scopes (`app/auth/scopes.py`) and refusals.

The table of routes is `routes.OPERATIONS` (the operations with a `resource`); this module holds their
handlers (`STEERING_HANDLERS`, by operation name) and their bodies and answers (pydantic models the OpenAPI
document is generated from: `STEERING_SCHEMAS`). Path parameters are checked with the service's own rule
(`check_key`) before the service is called, so a bad one is a 400 `bad_parameter` naming it; a body value
the model or the service refuses is a 422 `invalid` naming the field and the limit; an agent-bound key
setting another agent's limit (or a workflow's or a key's: they span agents) is a 403 `forbidden` naming
the agent (`check_own`). A refusal writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.requests import Request
from starlette.responses import Response

from app.domain import MAX_ID_LENGTH, ErrorCode, utcnow
from app.lifecycle.errors import Invalid
from app.lifecycle.steering import (
    MAX_LIMIT,
    QUEUE_COUNT_CAP,
    AgentQueue,
    LimitView,
    Policy,
    RateView,
    Scope,
    Steering,
    check_key,
)
from app.rest.bodies import read_json
from app.rest.documents import RestJSONResponse
from app.rest.errors import ApiError
from app.rest.models import validated
from app.store import storable

Endpoint = Callable[[Request], Awaitable[Response]]

#: The windows a start rate limit counts in, by the name a body gives (GraphQL's `RatePeriod`).
PERIODS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600}
_PERIOD_NAMES = {seconds: name for name, seconds in PERIODS.items()}
#: `?by=` of a claim queue, and the task field it groups by (GraphQL's `ClaimQueueGrouping`).
GROUPINGS: dict[str, str] = {"workflow": "workflow_id", "key": "concurrency_key"}

_STRICT = ConfigDict(extra="forbid", strict=True)
ScopeName = Literal["agent", "workflow", "key"]
PolicyName = Literal["FIFO", "FAIR_BY_WORKFLOW", "FAIR_BY_KEY"]
Maximum = Annotated[StrictInt, Field(ge=1, le=MAX_LIMIT)]


# --- bodies ------------------------------------------------------------------------------------------------


class ConcurrencyLimitBody(BaseModel):
    """The maximum of a concurrency limit."""

    model_config = _STRICT
    max: Maximum = Field(description=f"Most tasks in progress under it (1 to {MAX_LIMIT:,}).")


class StartRateLimitBody(BaseModel):
    """A start rate limit: `max` starts per fixed window of `per`."""

    model_config = _STRICT
    max: Maximum = Field(description=f"Most starts per window (1 to {MAX_LIMIT:,}).")
    per: Literal["second", "minute", "hour"] = Field(description="The window: a second, a minute, an hour.")


class ClaimPolicyBody(BaseModel):
    """How an agent's claims choose."""

    model_config = _STRICT
    policy: PolicyName = Field(
        description="FIFO (most urgent, then oldest: the default), FAIR_BY_WORKFLOW or FAIR_BY_KEY (rotate"
        " among the workflows or concurrency keys with ready work of the top priority)."
    )


# --- answers -----------------------------------------------------------------------------------------------


class ConcurrencyLimit(BaseModel):
    """A concurrency limit and the tasks in progress under it now."""

    scope: ScopeName = Field(description="What it counts over: an agent, a workflow or a concurrency key.")
    key: str = Field(description="The agent name, workflow id or concurrency key.")
    max: int = Field(description="Most tasks in progress under it; claims wait beyond.")
    running: int = Field(description="Tasks in progress under it now.")


class ConcurrencyLimits(BaseModel):
    """Every concurrency limit."""

    items: list[ConcurrencyLimit] = Field(description="In order of scope, then key.")


class StartRateLimit(BaseModel):
    """A start rate limit and its current window."""

    scope: ScopeName = Field(description="What it counts over.")
    key: str = Field(description="The agent name, workflow id or concurrency key.")
    max: int = Field(description="Most claims started under it per window.")
    per: Literal["second", "minute", "hour"] = Field(description="The window (fixed).")
    started: int = Field(description="Starts in the current window.")
    next_window_at: dt.datetime = Field(description="When the next window opens (the next start allowed).")


class StartRateLimits(BaseModel):
    """Every start rate limit."""

    items: list[StartRateLimit] = Field(description="In order of scope, then key.")


class Cleared(BaseModel):
    """What a clear did."""

    cleared: bool = Field(description="Whether there was such a limit (false: nothing to remove).")


class ClaimPolicy(BaseModel):
    """An agent's claim policy."""

    agent_name: str = Field(description="The agent.")
    policy: PolicyName = Field(description="How its claims choose (FIFO when none was set).")


class ClaimQueueGroup(BaseModel):
    """One workflow's (or concurrency key's) share of an agent's queue."""

    group: str | None = Field(description="The workflow id (or concurrency key, `by=key`); null: none.")
    ready: int = Field(description="Its tasks claimable now.")
    running: int = Field(description="Its tasks in progress (any agent).")
    limit: int | None = Field(description="Its concurrency limit; null: none.")


class ClaimQueue(BaseModel):
    """An agent's claim queue now."""

    agent_name: str = Field(description="The agent.")
    policy: PolicyName = Field(description="How its claims choose.")
    ready: int = Field(description="Its tasks claimable now (limits aside).")
    running: int = Field(description="Its tasks in progress.")
    limit: int | None = Field(description="Its own concurrency limit; null: none.")
    waiting_on_limits: int = Field(
        description="Of the ready tasks, those a full concurrency limit holds back."
    )
    groups: list[ClaimQueueGroup] = Field(
        description="Per workflow (or key) with ready work, the first CLAIM_FAIR_MAX_GROUPS of them."
    )
    capped: bool = Field(
        description=f"A count stopped at {QUEUE_COUNT_CAP:,}, or the groups at CLAIM_FAIR_MAX_GROUPS: the"
        " figures are floors."
    )


@dataclass(frozen=True)
class Schemas:
    """An operation's request body (None: none) and its answer."""

    body: type[BaseModel] | None
    answer: type[BaseModel]


STEERING_SCHEMAS: dict[str, Schemas] = {
    "list_concurrency_limits": Schemas(None, ConcurrencyLimits),
    "set_concurrency_limit": Schemas(ConcurrencyLimitBody, ConcurrencyLimit),
    "clear_concurrency_limit": Schemas(None, Cleared),
    "list_start_rate_limits": Schemas(None, StartRateLimits),
    "set_start_rate_limit": Schemas(StartRateLimitBody, StartRateLimit),
    "clear_start_rate_limit": Schemas(None, Cleared),
    "get_claim_policy": Schemas(None, ClaimPolicy),
    "set_claim_policy": Schemas(ClaimPolicyBody, ClaimPolicy),
    "get_claim_queue": Schemas(None, ClaimQueue),
}

#: The OpenAPI description of each path and query parameter.
PARAMETERS: dict[str, dict[str, Any]] = {
    "scope": {
        "in": "path",
        "description": "What the limit counts over: `agent`, `workflow` (a meta task's id) or `key` (a task's"
        " `concurrency_key`).",
        "schema": {"type": "string", "enum": ["agent", "workflow", "key"]},
    },
    "key": {
        "in": "path",
        "description": f"The agent name, workflow id or concurrency key (1 to {MAX_ID_LENGTH} characters;"
        " `/` sent as `%2F` or as is).",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
    },
    "agent_name": {
        "in": "path",
        "description": f"The agent (1 to {MAX_ID_LENGTH} characters).",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
    },
    "by": {
        "in": "query",
        "description": "Group the queue by workflow (the default) or by concurrency key.",
        "schema": {"type": "string", "enum": list(GROUPINGS), "default": "workflow"},
    },
}
#: The parameters of each operation, in order.
OPERATION_PARAMETERS: dict[str, tuple[str, ...]] = {
    "set_concurrency_limit": ("scope", "key"),
    "clear_concurrency_limit": ("scope", "key"),
    "set_start_rate_limit": ("scope", "key"),
    "clear_start_rate_limit": ("scope", "key"),
    "get_claim_policy": ("agent_name",),
    "set_claim_policy": ("agent_name",),
    "get_claim_queue": ("agent_name", "by"),
}


# --- parameters --------------------------------------------------------------------------------------------


def _steering(request: Request) -> Steering:
    return request.app.state.agent_tasks.lifecycle.steering


def _name(request: Request, parameter: str) -> str:
    """A key or agent name from the path, refused (400 naming it) as the service would refuse it, and
    when MongoDB could not store it (a lone surrogate from a bad `%`-escape)."""
    value = request.path_params[parameter]
    try:
        storable.check_storable(value, parameter)
        return check_key(value, parameter)
    except storable.Unstorable as exc:
        raise ApiError(ErrorCode.BAD_PARAMETER, f"{parameter} holds {exc}", field=parameter) from None
    except Invalid as exc:
        raise ApiError(ErrorCode.BAD_PARAMETER, exc.message, field=parameter) from None


def _scope(request: Request) -> Scope:
    raw = str(request.path_params["scope"])
    try:
        return Scope(raw.lower())
    except ValueError:
        raise ApiError(
            ErrorCode.BAD_PARAMETER, f"scope must be agent, workflow or key, got {raw[:40]!r}", field="scope"
        ) from None


def _limit(request: Request) -> tuple[Scope, str]:
    return _scope(request), _name(request, "key")


# --- answers -----------------------------------------------------------------------------------------------


def limit_answer(view: LimitView) -> dict[str, Any]:
    return {"scope": view.scope.value, "key": view.key, "max": view.max, "running": view.running}


def rate_answer(view: RateView) -> dict[str, Any]:
    return {
        "scope": view.scope.value,
        "key": view.key,
        "max": view.max,
        "per": _PERIOD_NAMES.get(view.per_seconds, str(view.per_seconds)),
        "started": view.started,
        "next_window_at": view.next_window_at,
    }


def queue_answer(queue: AgentQueue) -> dict[str, Any]:
    return {
        "agent_name": queue.agent_name,
        "policy": queue.policy.value,
        "ready": queue.ready,
        "running": queue.running,
        "limit": queue.limit,
        "waiting_on_limits": queue.waiting_on_limits,
        "groups": [
            {"group": g.group, "ready": g.ready, "running": g.running, "limit": g.limit} for g in queue.groups
        ],
        "capped": queue.capped,
    }


# --- the handlers ------------------------------------------------------------------------------------------


async def list_concurrency_limits(request: Request) -> Response:
    return RestJSONResponse({"items": [limit_answer(v) for v in await _steering(request).limits()]})


async def set_concurrency_limit(request: Request) -> Response:
    scope, key = _limit(request)
    body = validated(ConcurrencyLimitBody, await read_json(request))
    view = await _steering(request).set_limit(scope, key, body["max"], utcnow())
    return RestJSONResponse(limit_answer(view))


async def clear_concurrency_limit(request: Request) -> Response:
    scope, key = _limit(request)
    return RestJSONResponse({"cleared": await _steering(request).clear_limit(scope, key)})


async def list_start_rate_limits(request: Request) -> Response:
    views = await _steering(request).rates(utcnow())
    return RestJSONResponse({"items": [rate_answer(v) for v in views]})


async def set_start_rate_limit(request: Request) -> Response:
    scope, key = _limit(request)
    body = validated(StartRateLimitBody, await read_json(request))
    view = await _steering(request).set_rate(scope, key, body["max"], PERIODS[body["per"]], utcnow())
    return RestJSONResponse(rate_answer(view))


async def clear_start_rate_limit(request: Request) -> Response:
    scope, key = _limit(request)
    return RestJSONResponse({"cleared": await _steering(request).clear_rate(scope, key)})


async def get_claim_policy(request: Request) -> Response:
    agent_name = _name(request, "agent_name")
    policy = await _steering(request).policy_of(agent_name)
    return RestJSONResponse({"agent_name": agent_name, "policy": policy.value})


async def set_claim_policy(request: Request) -> Response:
    agent_name = _name(request, "agent_name")
    body = validated(ClaimPolicyBody, await read_json(request))
    policy = Policy(body["policy"])
    await _steering(request).set_policy(agent_name, policy, utcnow())
    return RestJSONResponse({"agent_name": agent_name, "policy": policy.value})


async def get_claim_queue(request: Request) -> Response:
    agent_name = _name(request, "agent_name")
    by = (request.query_params.get("by") or "workflow").lower()
    if by not in GROUPINGS:
        raise ApiError(ErrorCode.BAD_PARAMETER, f"by must be workflow or key, got {by[:40]!r}", field="by")
    queue = await _steering(request).queue(agent_name, utcnow(), GROUPINGS[by], QUEUE_COUNT_CAP)
    return RestJSONResponse(queue_answer(queue))


#: The endpoint of each steering operation (as `handlers.HANDLERS` has a factory per entity operation).
STEERING_HANDLERS: dict[str, Endpoint] = {
    "list_concurrency_limits": list_concurrency_limits,
    "set_concurrency_limit": set_concurrency_limit,
    "clear_concurrency_limit": clear_concurrency_limit,
    "list_start_rate_limits": list_start_rate_limits,
    "set_start_rate_limit": set_start_rate_limit,
    "clear_start_rate_limit": clear_start_rate_limit,
    "get_claim_policy": get_claim_policy,
    "set_claim_policy": set_claim_policy,
    "get_claim_queue": get_claim_queue,
}
