"""The server's enums as the client spells them: `StrEnum`s, so a member equals its plain string.

Statuses, task kinds and priorities are in the domain's lower-case spelling (`in_progress`: what
`TaskState` holds, and what the client's arguments take); event types and error codes in GraphQL's
(`TASK_COMPLETED`: what `Event.type` holds; `RATE_LIMITED`: an error's `extensions.code`). Each
member's name is the GraphQL enum value: tests/test_client_schema.py fails when these and
schema/schema.graphql differ. A value this client does not know yet (a newer server's) is
kept as the string the server sent, so an older client still reads it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Vocabulary(StrEnum):
    """A server enum; `parse` reads a value in either spelling."""

    @classmethod
    def parse(cls, value: Any) -> str | None:
        """The member for a GraphQL value (`IN_PROGRESS`) or a domain one (`in_progress`); a value this
        client does not know stays a plain string (lower-cased, as the domain spells it); None stays None."""
        if value is None:
            return None
        text = str(value)
        return cls.__members__.get(text.upper()) or cls.unknown(text)

    @classmethod
    def unknown(cls, text: str) -> str:
        return text.lower()


class TaskStatus(Vocabulary):
    """A task's status (`TaskStatus`)."""

    PENDING = "pending"
    AWAITING_DEPENDENCY = "awaiting_dependency"
    IN_PROGRESS = "in_progress"
    RETRYING = "retrying"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskKind(Vocabulary):
    """Which level of the hierarchy a task is (`TaskKind`)."""

    META_WORKFLOW = "meta_workflow"
    SUB_TASK = "sub_task"
    BEHAVIOR_TASK = "behavior_task"
    STANDALONE = "standalone"


class TaskPriority(Vocabulary):
    """A task's priority (`TaskPriority`), lowest first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class EventType(Vocabulary):
    """An event's type (`EventType`), as `Event.type` and `watch_events(types=...)` spell it."""

    TASK_CREATED = "TASK_CREATED"
    TASK_UPDATED = "TASK_UPDATED"
    TASK_DELETED = "TASK_DELETED"
    TASK_FINALIZED = "TASK_FINALIZED"
    STATUS_CHANGED = "STATUS_CHANGED"
    TASK_PROGRESS = "TASK_PROGRESS"
    TASK_COMPLETED = "TASK_COMPLETED"
    TASK_FAILED = "TASK_FAILED"
    LEASE_EXPIRED = "LEASE_EXPIRED"
    TASK_RESCHEDULED = "TASK_RESCHEDULED"
    TASK_CANCELLED = "TASK_CANCELLED"
    TASK_TIMED_OUT = "TASK_TIMED_OUT"
    TASK_PAUSED = "TASK_PAUSED"
    TASK_RESUMED = "TASK_RESUMED"
    TOOL_CALL = "TOOL_CALL"
    TOOL_RESULT = "TOOL_RESULT"
    MEMORY_OPERATION = "MEMORY_OPERATION"
    OTHER = "OTHER"

    @classmethod
    def unknown(cls, text: str) -> str:
        return text


class ErrorCode(StrEnum):
    """A GraphQL error's `extensions.code`, or the `code` of an error result (`ErrorCode`), in GraphQL's
    spelling; `rest` is the lower-case one REST answers, and the `code` of this client's exceptions."""

    BAD_REQUEST = "BAD_REQUEST"
    BAD_JSON = "BAD_JSON"
    JSON_TOO_DEEP = "JSON_TOO_DEEP"
    BATCHING_NOT_ENABLED = "BATCHING_NOT_ENABLED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    URI_TOO_LONG = "URI_TOO_LONG"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    QUERY_TOO_LONG = "QUERY_TOO_LONG"
    QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
    TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
    LIST_TOO_LONG = "LIST_TOO_LONG"
    OPERATION_NAME_REQUIRED = "OPERATION_NAME_REQUIRED"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    PAGE_SIZE_OUT_OF_RANGE = "PAGE_SIZE_OUT_OF_RANGE"
    BAD_FILTER = "BAD_FILTER"
    EMPTY_FILTER = "EMPTY_FILTER"
    FILTER_TOO_SLOW = "FILTER_TOO_SLOW"
    BAD_CURSOR = "BAD_CURSOR"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    QUERY_TIMEOUT = "QUERY_TIMEOUT"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    REPLAY_LIMIT_EXCEEDED = "REPLAY_LIMIT_EXCEEDED"
    SUBSCRIPTION_LIMIT_EXCEEDED = "SUBSCRIPTION_LIMIT_EXCEEDED"
    CONNECTION_LIMIT_EXCEEDED = "CONNECTION_LIMIT_EXCEEDED"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    DATABASE_TIMEOUT = "DATABASE_TIMEOUT"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    BAD_PARAMETER = "BAD_PARAMETER"
    UNTRUSTED_HOST = "UNTRUSTED_HOST"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    REFUSED = "REFUSED"
    CONFLICT = "CONFLICT"
    INVALID = "INVALID"
    INTERNAL = "INTERNAL"
    HTTP_ERROR = "HTTP_ERROR"

    @property
    def rest(self) -> str:
        return self.value.lower()
