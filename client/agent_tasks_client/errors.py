"""Typed exceptions for the server's refusals.

A mutation's refusal arrives as a member of its result union (`NotFoundError`, `TransitionError`,
`ConflictError`, `ValidationError`, `LeaseLostError`); `raise_for_member` turns it into the matching
exception, keeping the message the server wrote and the fields that say why. `code` is machine-readable
and uses the REST API's spelling where one exists (`not_found`, `refused`, `conflict`, `invalid`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_tasks_client.enums import ErrorCode, TaskStatus


class AgentTasksError(Exception):
    """Base of every error this client raises: `code` (machine-readable) and `message` (one sentence)."""

    code = "error"

    def __init__(self, message: str, *, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: What the server answered, as received (GraphQL names), when there is an answer.
        self.data: dict[str, Any] = dict(data or {})


class NotFound(AgentTasksError):
    """The id names no task (`NotFoundError`)."""

    code = ErrorCode.NOT_FOUND.rest

    def __init__(self, message: str, *, id: str | None = None, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, data=data)
        self.id = id


class TransitionRefused(AgentTasksError):
    """The task's status does not allow the change (`TransitionError`); `current_status` is its status now."""

    code = ErrorCode.REFUSED.rest

    def __init__(
        self, message: str, *, current_status: str | None = None, data: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message, data=data)
        self.current_status = current_status


class Conflict(AgentTasksError):
    """The task changed since it was read (`ConflictError`); `current_version` when the server knows it."""

    code = ErrorCode.CONFLICT.rest

    def __init__(
        self, message: str, *, current_version: int | None = None, data: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message, data=data)
        self.current_version = current_version


class ValidationFailed(AgentTasksError):
    """An argument was refused (`ValidationError`); `path` names it (a dotted GraphQL path)."""

    code = ErrorCode.INVALID.rest

    def __init__(
        self, message: str, *, path: str | None = None, data: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message, data=data)
        self.path = path


class LeaseLost(AgentTasksError):
    """The caller's attempt (fencing token) is stale (`LeaseLostError`): its lease lapsed or the task moved
    on. Nothing was written; whatever the caller computed for that attempt must be dropped."""

    code = "lease_lost"

    def __init__(
        self,
        message: str,
        *,
        current_attempt: int | None = None,
        current_holder: str | None = None,
        current_status: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, data=data)
        self.current_attempt = current_attempt
        self.current_holder = current_holder
        self.current_status = current_status

    @property
    def cancel_requested(self) -> bool:
        """The task was cancelled (alone or with its subtree): stop working on it."""
        return self.current_status == TaskStatus.CANCELLED


class TransportError(AgentTasksError):
    """The request did not get a usable answer: connection failure, timeout, an HTTP error status, or
    GraphQL errors (an invalid document, a server-side failure). `status_code` is the HTTP status, if any;
    `errors` holds the GraphQL errors, if any."""

    code = "transport"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.errors = errors or []


class Unauthorized(TransportError):
    """The server wants credentials, or refused the ones given (HTTP 401, GraphQL `UNAUTHENTICATED`):
    pass `api_key=` (a missing, unknown, expired or revoked key)."""

    code = ErrorCode.UNAUTHENTICATED.rest


class Forbidden(AgentTasksError):
    """The key lacks the scope an operation needs (GraphQL `FORBIDDEN`, `required_scope`), or is bound to
    other agents than the task's (`ForbiddenError`, `agent_name`). Nothing was written."""

    code = ErrorCode.FORBIDDEN.rest

    def __init__(
        self,
        message: str,
        *,
        required_scope: str | None = None,
        agent_name: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, data=data)
        self.required_scope = required_scope
        self.agent_name = agent_name


class RetryableError(Exception):
    """Raised by a worker's handler: the attempt failed and the task may be tried again (`isFinal: false`).
    Any other exception is treated the same way; this one says so explicitly, and may name the error's
    type (`error_type`, default: the class name) and the delay before the next attempt
    (`next_retry_delay` seconds, e.g. a model's Retry-After; default: the task's retry policy)."""

    def __init__(
        self, *args: object, error_type: str | None = None, next_retry_delay: float | None = None
    ) -> None:
        super().__init__(*args)
        self.error_type = error_type
        self.next_retry_delay = next_retry_delay


class FatalError(Exception):
    """Raised by a worker's handler: the task failed for good (`failTask(isFinal: true)`), no retry."""

    def __init__(self, *args: object, error_type: str | None = None) -> None:
        super().__init__(*args)
        self.error_type = error_type


def raise_for_member(member: Mapping[str, Any]) -> None:
    """Raise the exception matching an error member of a result union; return for any other member."""
    typename = member.get("__typename")
    message = str(member.get("message") or typename)
    if typename == "NotFoundError":
        raise NotFound(message, id=member.get("id"), data=member)
    if typename == "TransitionError":
        raise TransitionRefused(message, current_status=_status(member.get("currentStatus")), data=member)
    if typename == "ConflictError":
        raise Conflict(message, current_version=member.get("currentVersion"), data=member)
    if typename == "ValidationError":
        raise ValidationFailed(message, path=member.get("field"), data=member)
    if typename == "LeaseLostError":
        raise LeaseLost(
            message,
            current_attempt=member.get("currentAttempt"),
            current_holder=member.get("currentHolder"),
            current_status=_status(member.get("leaseStatus", member.get("currentStatus"))),
            data=member,
        )
    if typename == "ForbiddenError":
        raise Forbidden(message, agent_name=member.get("agentName"), data=member)
    if typename is not None and typename.endswith("Error"):  # a refusal this client does not know yet
        raise AgentTasksError(f"{typename}: {message}", data=member)


def _status(value: Any) -> str | None:
    """Statuses as the domain spells them (`in_progress`), whatever the GraphQL enum says."""
    return TaskStatus.parse(value)
