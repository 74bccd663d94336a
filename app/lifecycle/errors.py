"""Expected refusals raised by the services; the GraphQL layer turns each into an error type as data."""

from __future__ import annotations

from app.domain import ErrorCode
from app.principal import current_principal


class ServiceError(Exception):
    """A request the services refuse; `str()` is one sentence saying what was wrong. Nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    """The id names no document."""

    def __init__(self, message: str, *, id: str | None = None) -> None:
        super().__init__(message)
        self.id = id


class Refused(ServiceError):
    """A forbidden lifecycle transition, or an edit of a finalized task; names the current status."""

    def __init__(self, message: str, *, current_status: str | None = None) -> None:
        super().__init__(message)
        self.current_status = current_status


class LeaseLost(Refused):
    """A holder's change carried a stale fencing token (attempt), or its lease has run out: another attempt
    owns the task now, or nobody does. Names the task's current attempt, holder and status."""

    def __init__(
        self, message: str, *, current_status: str, current_attempt: int, current_holder: str | None
    ) -> None:
        super().__init__(message, current_status=current_status)
        self.current_attempt = current_attempt
        self.current_holder = current_holder


class Conflict(ServiceError):
    """A compare-and-set failed (`expectedVersion` is stale) or a rule such as "has children" refused it."""

    def __init__(self, message: str, *, current_version: int | None = None) -> None:
        super().__init__(message)
        self.current_version = current_version


class Invalid(ServiceError):
    """A bad argument: `field` names it (a dotted input path); `code` says why, when a client acts on it."""

    code: ErrorCode | None = None

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class IdempotencyKeyReused(Invalid):
    """An idempotency key sent again with a different request (REST 422 `idempotency_key_reused`)."""

    code = ErrorCode.IDEMPOTENCY_KEY_REUSED


class NotYourAgent(ServiceError):
    """The caller is bound to agents (an agent-bound API key or token) and the task belongs to another
    agent, or to none: it may not claim, change or report on it. Nothing was written."""

    code = ErrorCode.FORBIDDEN

    def __init__(self, message: str, *, agent_name: str | None) -> None:
        super().__init__(message)
        self.agent_name = agent_name


def agent_bound() -> bool:
    """Whether the current caller is bound to agents (so a write must read the agents it would touch)."""
    principal = current_principal.get()
    return principal is not None and principal.agents is not None


def check_agent(agent_name: str | None, what: str) -> None:
    """Refuse with `NotYourAgent` unless the current caller (`app.principal.current_principal`) may act
    for `agent_name`; callers not bound to agents (and the server's own jobs) always may."""
    agent_name = agent_name or None  # stored as "" by some writers: no agent either way
    principal = current_principal.get()
    if principal is None or principal.may_act_for(agent_name):
        return
    allowed = ", ".join(sorted(principal.agents or ())) or "none"
    owner = f"agent '{agent_name}'" if agent_name else "no agent"
    raise NotYourAgent(
        f"{what} belongs to {owner}; this caller ({principal.kind} {principal.id}) may act only for:"
        f" {allowed}",
        agent_name=agent_name,
    )
