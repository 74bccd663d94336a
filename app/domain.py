"""The vocabulary of the product, stated once: statuses, priorities, task kinds, event types, error codes,
dates and numeric bounds.

Every layer derives from here — the state machine, the store's pipelines and filters, the GraphQL enums,
the REST models, analytics and the demo — so a status or a priority is never spelled out twice. Pure
Python: no I/O, no GraphQL, no MongoDB, importable from any layer.

Statuses are listed in lifecycle order (waiting, running, finished), and that one order is used wherever
statuses are enumerated: roll-up counts, agent statistics, the GraphQL enum, the REST schema.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import Enum, StrEnum
from typing import Any


class Status(StrEnum):
    """Execution status of a task (seed 000), plus `cancelled`; the value is the stored string."""

    PENDING = "pending"
    AWAITING_DEPENDENCY = "awaiting_dependency"
    IN_PROGRESS = "in_progress"
    RETRYING = "retrying"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUS_DESCRIPTIONS: dict[Status, str] = {
    Status.PENDING: "Ready to be claimed and started.",
    Status.AWAITING_DEPENDENCY: "Waiting until its dependencies reach their expected status.",
    Status.IN_PROGRESS: "An agent is working on it.",
    Status.RETRYING: "Failed, and will be attempted again.",
    Status.PAUSED: "Paused (pauseTask): not claimable, no retry or expiry fires; resumeTask restores the"
    " status it had.",
    Status.COMPLETED: "Finished successfully.",
    Status.FAILED: "Failed for good (final failure or attempts used up).",
    Status.CANCELLED: "Stopped on request; will not run.",
}

#: Every status as stored, in lifecycle order.
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
TERMINAL: frozenset[str] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
ACTIVE: frozenset[str] = frozenset(STATUSES) - TERMINAL

# --- reading statuses written by other programs -------------------------------------------------------
# One normaliser, stated as data so that MongoDB can apply it too: `normalise_status` (the state machine,
# the GraphQL and REST readers, the events) and the analytics pipeline's `$switch`
# (`app.store.analytics`), which is generated from these same three tables, read a stored status alike.

#: Characters that separate words in a foreign spelling ("In-Progress", "In Progress"): each reads as "_".
STATUS_SEPARATORS: tuple[str, ...] = ("-", " ")
#: What a missing or blank status means.
BLANK_STATUS = Status.PENDING
#: Spellings seen in documents from other programs that are not a mere case/separator difference
#: (after lower-casing and separators → "_": "Canceled" → "canceled" → cancelled).
STATUS_ALIASES: dict[str, Status] = {
    "canceled": Status.CANCELLED,
    "inprogress": Status.IN_PROGRESS,
    "awaiting_dependencies": Status.AWAITING_DEPENDENCY,
}


def normalise_status(value: Any) -> str:
    """The canonical status for a stored value: None/"" → "pending", "In Progress" → "in_progress",
    "canceled" → "cancelled", "inprogress" → "in_progress" (the tables above).

    An unknown status is returned normalised but otherwise unchanged, so every action refuses it.
    """
    if type(value) is str:  # the common case, a canonical status as stored (a tree's roll-up reads thousands)
        known = _CANONICAL_STATUSES.get(value)
        if known is not None:
            return known
    if isinstance(value, Enum):
        value = value.value
    if value is None:
        return BLANK_STATUS.value
    text = str(value).strip().lower()
    for separator in STATUS_SEPARATORS:
        text = text.replace(separator, "_")
    while "__" in text:
        text = text.replace("__", "_")
    if not text:
        return BLANK_STATUS.value
    alias = STATUS_ALIASES.get(text)
    return text if alias is None else alias.value


#: Each canonical status, as its own normal form.
_CANONICAL_STATUSES = {status.value: status.value for status in Status}


def parse_status(value: Any) -> Status | None:
    """The `Status` a stored value means (`normalise_status`: "canceled", "In-Progress", "inprogress",
    None → pending…), or None for a status this server does not know. The one reader of stored statuses
    for the state machine's callers, the GraphQL types and the events alike."""
    try:
        return Status(normalise_status(value))
    except ValueError:
        return None


class Priority(StrEnum):
    """Urgency of a task (seed 001); claiming hands out the most urgent first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        """Sortable urgency, stored as `priority_rank` so claims can use an index: low 0 … urgent 3."""
        return PRIORITIES.index(self.value)


PRIORITY_DESCRIPTIONS: dict[Priority, str] = {
    Priority.LOW: "Whenever there is time.",
    Priority.MEDIUM: "The default.",
    Priority.HIGH: "Before medium and low.",
    Priority.URGENT: "Before everything else.",
}

#: Every priority as stored, least urgent first.
PRIORITIES: tuple[str, ...] = tuple(p.value for p in Priority)
DEFAULT_PRIORITY = Priority.MEDIUM
PRIORITY_RANK: dict[str, int] = {p.value: p.rank for p in Priority}


class TaskKind(StrEnum):
    """Which kind of task an execution state belongs to (stored as `task_kind`)."""

    META_WORKFLOW = "meta_workflow"
    SUB_TASK = "sub_task"
    BEHAVIOR_TASK = "behavior_task"
    STANDALONE = "standalone"


TASK_KIND_DESCRIPTIONS: dict[TaskKind, str] = {
    TaskKind.META_WORKFLOW: "A meta workflow task.",
    TaskKind.SUB_TASK: "A sub-task of a meta workflow.",
    TaskKind.BEHAVIOR_TASK: "A behavior task of a sub-task.",
    TaskKind.STANDALONE: "A task outside the hierarchy (seed 000).",
}


class EventType(StrEnum):
    """Every kind of event; the seed 003 ones keep their names."""

    TASK_CREATED = "TASK_CREATED"
    TASK_UPDATED = "TASK_UPDATED"
    TASK_DELETED = "TASK_DELETED"
    TASK_FINALIZED = "TASK_FINALIZED"
    STATUS_CHANGED = "STATUS_CHANGED"
    TASK_PROGRESS = "TASK_PROGRESS"
    TASK_COMPLETED = "TASK_COMPLETED"
    TASK_FAILED = "TASK_FAILED"
    #: A task's lease ran out before it finished: it went back to retrying (or failed, attempts used up).
    LEASE_EXPIRED = "LEASE_EXPIRED"
    #: A task not started yet was given a new `not_before` (`rescheduleTask`): no claim before it.
    TASK_RESCHEDULED = "TASK_RESCHEDULED"
    #: A task was cancelled by the cancel of its subtree (`cancelTask(scope: SUBTREE)`) or by `cancelTasks`,
    #: with the reason.
    TASK_CANCELLED = "TASK_CANCELLED"
    #: A timeout fired (`kind`: SCHEDULE_TO_START, START_TO_CLOSE, SCHEDULE_TO_CLOSE, or HEARTBEAT with a
    #: lease's LEASE_EXPIRED); app/lifecycle/timeouts.py.
    TASK_TIMED_OUT = "TASK_TIMED_OUT"
    #: A task was paused (`pauseTask`, `pauseTasks`), or a running one asked to pause, with the reason.
    TASK_PAUSED = "TASK_PAUSED"
    #: A paused task was resumed (`resumeTask`, `resumeTasks`), or a running one's pause request withdrawn.
    TASK_RESUMED = "TASK_RESUMED"
    TOOL_CALL = "TOOL_CALL"
    TOOL_RESULT = "TOOL_RESULT"
    MEMORY_OPERATION = "MEMORY_OPERATION"
    #: Read side only: an event of a type this server does not know (written by another program).
    OTHER = "OTHER"


class ErrorCode(StrEnum):
    """Every machine-readable error code, in GraphQL's spelling: an error's `extensions.code`, and the
    `code` of the `ValidationError` and `ForbiddenError` results. REST answers the same code in lower case
    (`rest`: `RATE_LIMITED` is REST's `rate_limited`); a few are REST's alone (`REST_ONLY`)."""

    # A request refused before it runs (GraphQL over HTTP; app/api/http.py, app/edge.py).
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
    # The document (app/api/documents.py, guards.py, document_shape.py).
    QUERY_TOO_LONG = "QUERY_TOO_LONG"
    QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
    TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
    LIST_TOO_LONG = "LIST_TOO_LONG"
    OPERATION_NAME_REQUIRED = "OPERATION_NAME_REQUIRED"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    # Who may ask, and how often (app/api/access.py, app/ratelimit.py).
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    # Arguments and their limits.
    BAD_USER_INPUT = "BAD_USER_INPUT"
    PAGE_SIZE_OUT_OF_RANGE = "PAGE_SIZE_OUT_OF_RANGE"
    BAD_FILTER = "BAD_FILTER"
    EMPTY_FILTER = "EMPTY_FILTER"
    FILTER_TOO_SLOW = "FILTER_TOO_SLOW"
    BAD_CURSOR = "BAD_CURSOR"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    # Running it (queries, subscriptions, the database).
    QUERY_TIMEOUT = "QUERY_TIMEOUT"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    REPLAY_LIMIT_EXCEEDED = "REPLAY_LIMIT_EXCEEDED"
    SUBSCRIPTION_LIMIT_EXCEEDED = "SUBSCRIPTION_LIMIT_EXCEEDED"
    CONNECTION_LIMIT_EXCEEDED = "CONNECTION_LIMIT_EXCEEDED"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    DATABASE_TIMEOUT = "DATABASE_TIMEOUT"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    # REST's own (`REST_ONLY`): GraphQL answers these refusals as mutation results (errors as data).
    BAD_PARAMETER = "BAD_PARAMETER"
    UNTRUSTED_HOST = "UNTRUSTED_HOST"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    REFUSED = "REFUSED"
    CONFLICT = "CONFLICT"
    INVALID = "INVALID"
    INTERNAL = "INTERNAL"
    #: Any other HTTP refusal of the web framework's (REST: `http_error`).
    HTTP_ERROR = "HTTP_ERROR"

    @property
    def rest(self) -> str:
        """REST's spelling of the code: lower case (`rate_limited`), as REST clients have always read it."""
        return self.value.lower()


#: The codes only REST answers (its error bodies' `code`); the GraphQL enum lists them too, saying so.
REST_ONLY: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.BAD_PARAMETER,
        ErrorCode.UNTRUSTED_HOST,
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.UNKNOWN_FIELD,
        ErrorCode.REFUSED,
        ErrorCode.CONFLICT,
        ErrorCode.INVALID,
        ErrorCode.INTERNAL,
        ErrorCode.HTTP_ERROR,
    }
)

ERROR_CODE_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: "The HTTP request is not a GraphQL request this server takes.",
    ErrorCode.BAD_JSON: "The body (or a parameter) is not valid JSON, or holds what MongoDB cannot store.",
    ErrorCode.JSON_TOO_DEEP: "The JSON is nested deeper than MAX_JSON_DEPTH.",
    ErrorCode.BATCHING_NOT_ENABLED: "A list of operations in one request; send one at a time.",
    ErrorCode.NOT_FOUND: "No such path.",
    ErrorCode.METHOD_NOT_ALLOWED: "The HTTP method is not allowed on this path.",
    ErrorCode.NOT_ACCEPTABLE: "No media type in `Accept` that this server answers with.",
    ErrorCode.BODY_TOO_LARGE: "The body is larger than MAX_BODY_BYTES (REST: payload_too_large).",
    ErrorCode.URI_TOO_LONG: "The URL is longer than the server allows.",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "A body not sent as JSON (application/json, or a `+json` type).",
    ErrorCode.QUERY_TOO_LONG: "The document has more tokens than the server parses.",
    ErrorCode.QUERY_TOO_DEEP: "The document is nested deeper than MAX_QUERY_DEPTH.",
    ErrorCode.QUERY_TOO_COMPLEX: "Validating the document would take more than GRAPHQL_VALIDATION_WORK_MAX.",
    ErrorCode.QUERY_TOO_COSTLY: "The estimated cost is above QUERY_COST_MAX (`cost`, `limit`).",
    ErrorCode.TOO_MANY_ALIASES: "More aliases than MAX_QUERY_ALIASES in one operation.",
    ErrorCode.LIST_TOO_LONG: "A list longer than MAX_LIST_ITEMS in a variable or an argument.",
    ErrorCode.OPERATION_NAME_REQUIRED: "Several operations in the document and no `operationName`.",
    ErrorCode.GRAPHQL_PARSE_FAILED: "The document is not valid GraphQL syntax.",
    ErrorCode.GRAPHQL_VALIDATION_FAILED: "The document does not validate against the schema.",
    ErrorCode.UNAUTHENTICATED: "No valid credentials (`requiredScope` says the scope that needs them).",
    ErrorCode.FORBIDDEN: "The credentials lack the scope needed, or the task belongs to another agent.",
    ErrorCode.RATE_LIMITED: "The caller's budget is spent: retry after `retryAfter` seconds.",
    ErrorCode.BAD_USER_INPUT: "An argument is invalid.",
    ErrorCode.PAGE_SIZE_OUT_OF_RANGE: "`first` (or `limit`) outside 0 to the maximum page size.",
    ErrorCode.BAD_FILTER: "The filter is not allowed (an operator, a field, a value), or is empty.",
    ErrorCode.EMPTY_FILTER: "A bulk action's filter is empty: it never acts on every task.",
    ErrorCode.FILTER_TOO_SLOW: "MongoDB stopped the filter at FILTER_MAX_TIME_MS.",
    ErrorCode.BAD_CURSOR: "A cursor this server did not issue (or issued for another order).",
    ErrorCode.LIMIT_EXCEEDED: "A bulk action's `limit` outside 1 to BULK_ACTION_MAX_TASKS.",
    ErrorCode.IDEMPOTENCY_KEY_REUSED: "The idempotency key was sent before with other arguments.",
    ErrorCode.QUERY_TIMEOUT: "The query ran past QUERY_TIMEOUT_SECONDS and was cancelled.",
    ErrorCode.SLOW_CONSUMER: "The subscriber fell too far behind; resume from its last cursor.",
    ErrorCode.REPLAY_LIMIT_EXCEEDED: "More stored events to replay than SUBSCRIPTION_REPLAY_MAX; page first.",
    ErrorCode.SUBSCRIPTION_LIMIT_EXCEEDED: "Too many subscriptions on this connection or caller.",
    ErrorCode.CONNECTION_LIMIT_EXCEEDED: "Too many live connections on this server.",
    ErrorCode.DATABASE_UNAVAILABLE: "MongoDB cannot be reached right now; nothing was done. Retry.",
    ErrorCode.DATABASE_TIMEOUT: "MongoDB ran past MONGODB_TIMEOUT_SECONDS (a write may have applied).",
    ErrorCode.INTERNAL_SERVER_ERROR: "A bug; it is logged, and the answer says nothing more.",
    ErrorCode.BAD_PARAMETER: "REST only: a bad query parameter or header.",
    ErrorCode.UNTRUSTED_HOST: "REST only: the `Host` header names a host this server does not answer to.",
    ErrorCode.PAYLOAD_TOO_LARGE: "REST only: a body over MAX_BODY_BYTES.",
    ErrorCode.UNKNOWN_FIELD: "REST only: a body field that does not exist, or that only the server writes.",
    ErrorCode.REFUSED: "REST only: the task's status or finalization does not allow the change.",
    ErrorCode.CONFLICT: "REST only: the id is taken, the version changed, or a rule refused it.",
    ErrorCode.INVALID: "REST only: a body value of the wrong type or one the services refuse.",
    ErrorCode.INTERNAL: "REST only: a bug; it is logged, and the answer says nothing more.",
    ErrorCode.HTTP_ERROR: "REST only: another HTTP refusal (the status says which).",
}


class Scope(StrEnum):
    """What a caller may do (issue 13); an API key or a token carries a set of them."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    METRICS = "metrics"


SCOPE_DESCRIPTIONS: dict[Scope, str] = {
    Scope.READ: "Queries and subscriptions: read tasks, outputs, states, events and statistics.",
    Scope.WRITE: "Create tasks, drive their lifecycle (claim, start, progress, finish), record events.",
    Scope.ADMIN: "Deletes and cascades, and API key management.",
    Scope.METRICS: "`GET /metrics` (Prometheus) on a server that requires keys, and nothing else.",
}


# --- numeric bounds ------------------------------------------------------------------------------------

#: Longest task id (and idempotency key), in characters.
MAX_ID_LENGTH = 200
#: What an id may not contain: C0 and C1 controls (NUL included) and the bidi controls that make an id
#: display as another (U+202A-U+202E, U+2066-U+2069).
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def has_control_characters(text: str) -> bool:
    return _CONTROL_CHARACTERS.search(text) is not None


#: Largest task, state or output document a client may write, BSON-encoded.
MAX_DOCUMENT_BYTES = 256 * 1024
#: Attempts a task gets when its state does not say (`max_attempts`).
DEFAULT_MAX_ATTEMPTS = 3
#: Longest `current_step`, and longest error message / details of a failure.
MAX_STEP_LENGTH = 1_000
MAX_ERROR_LENGTH = 10_000
#: Most dependencies one task may have.
MAX_DEPENDENCIES = 100
#: `progress_percentage` bounds (seed 000: an integer 0-100).
MIN_PROGRESS, MAX_PROGRESS = 0, 100

# --- dates ---------------------------------------------------------------------------------------------


def utcnow() -> dt.datetime:
    """Now, in UTC, truncated to milliseconds: BSON dates keep milliseconds, so what we return equals what
    we store."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: Any) -> dt.datetime | None:
    """A datetime (aware, or naive meaning UTC) or an ISO-8601 string ("Z" allowed) as an aware UTC
    datetime; None for anything else. Documents written by other programs store dates as ISO strings."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except (OverflowError, ValueError):  # an offset that pushes year 1 or 9999 out of range
        return None
