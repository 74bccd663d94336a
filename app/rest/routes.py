"""The one table of REST routes: every (entity, operation) pair. Both the Starlette routes
(`app.rest.rest_routes`) and the OpenAPI document (`app.rest.openapi`) are generated from it, so neither
can list a route the other lacks.

| operation | method and path | success |
|---|---|---|
| get | `GET /<entity>/{id}` | 200 the document |
| delete | `DELETE /<entity>/{id}` (`?cascade=true` for tasks) | 200 `{"deleted_ids": [...]}` |
| query | `POST /<entity>/query?limit=&after=&sort=`, filter body | 200 `{"items", "next_cursor", "total"}` |
| create | `POST /<entity>` | 201 the document, `Location` header |
| update | `PATCH /<entity>/{id}` | 200 the document |
| finalize | `POST /<entity>/{id}/finalize` (the three task levels) | 200 the document |
| cancel | `POST /<entity>/{id}/cancel?scope=task|subtree&reason=` (agent tasks) | 200 the document |
| pause, resume | `POST /<entity>/{id}/pause?scope=task|subtree&reason=` (and `/resume`) | 200 the document |
| retry_many (cancel_, pause_, resume_) | `POST /<entity>/retry` (`/cancel`…), filter body | 200 the counts |

Beside the entities, the steering settings (docs/STEERING.md, "Concurrency limits and fairness") are
resources of their own, one route per operation (`Operation.resource`), with the semantics, scopes and
refusals of their GraphQL fields:

| operation | method and path | GraphQL |
|---|---|---|
| list_concurrency_limits | `GET /concurrency-limits` | `concurrencyLimits` |
| set_concurrency_limit | `PUT /concurrency-limits/{scope}/{key}`, body `{"max"}` | `setConcurrencyLimit` |
| clear_concurrency_limit | `DELETE /concurrency-limits/{scope}/{key}` | `clearConcurrencyLimit` |
| list_start_rate_limits | `GET /start-rate-limits` | `startRateLimits` |
| set_start_rate_limit | `PUT /start-rate-limits/{scope}/{key}`, body `{"max", "per"}` | `setStartRateLimit` |
| clear_start_rate_limit | `DELETE /start-rate-limits/{scope}/{key}` | `clearStartRateLimit` |
| get_claim_policy | `GET /claim-policies/{agent_name}` | `claimQueue { policy }` |
| set_claim_policy | `PUT /claim-policies/{agent_name}`, body `{"policy"}` | `setClaimPolicy` |
| get_claim_queue | `GET /claim-queues/{agent_name}?by=workflow|key` | `claimQueue` |
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.convertors import Convertor, register_url_convertor

from app.domain import ErrorCode
from app.rest.entities import ENTITIES, Entity, Kind

OPENAPI_PATH = "/openapi.json"
_ALL = frozenset(Kind)


@dataclass(frozen=True)
class Resource:
    """A REST resource that is not a stored entity: a steering setting (`app/rest/steering.py`)."""

    path: str
    name: str
    label: str


#: Path parameters that take the rest of the path: a workflow id, concurrency key or agent name may hold
#: `/` (e.g. `openai/gpt-4o`), which a client sends as `%2F` and the server receives decoded.
TAIL_PARAMETERS = ("key", "agent_name")


class TailConvertor(Convertor[str]):
    """The rest of the path, `/` and control characters included: Starlette's own `path` convertor stops
    at a newline, so `%0A` in a key would answer 404 instead of the 400 that names the parameter."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def register_convertors() -> None:
    """Make `{name:tail}` known to Starlette's router (idempotent; called before the routes are built)."""
    register_url_convertor("tail", TailConvertor())


@dataclass(frozen=True)
class Operation:
    """One kind of REST operation; `summary` is formatted with the entity's label. An entity operation
    has a route per entity of `kinds`; a steering operation (`resource`) one route, on its resource."""

    name: str
    method: str
    suffix: str
    success: int
    summary: str
    kinds: frozenset[Kind] = _ALL
    #: Error codes (`errors.ERROR_CODES`) this operation can answer with; `unauthenticated` (401) and
    #: `forbidden` (403: app/auth/scopes.py), `untrusted_host` (400), `internal` (500) and the database's
    #: `database_unavailable` (503) and `database_timeout` (504) are added to all.
    errors: tuple[ErrorCode, ...] = ()
    resource: Resource | None = None

    @property
    def documented_path(self) -> str:
        """The path as docs/ACCESS.md writes it: `/<entity>/{id}`, or the resource's own path."""
        return f"/{self.resource.path if self.resource else '<entity>'}{self.suffix}"


_BODY = (
    ErrorCode.BAD_JSON,
    ErrorCode.PAYLOAD_TOO_LARGE,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.UNKNOWN_FIELD,
    ErrorCode.INVALID,
)  # JSON bodies
OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "GET", "/{id}", 200, "Retrieve a {label} by id.", errors=(ErrorCode.NOT_FOUND,)),
    Operation(
        "delete",
        "DELETE",
        "/{id}",
        200,
        "Delete a {label} by id.",
        errors=(
            ErrorCode.BAD_PARAMETER,
            ErrorCode.NOT_FOUND,
            ErrorCode.CONFLICT,
            ErrorCode.REFUSED,
        ),  # bad_parameter: `cascade` (tasks)
    ),
    Operation(
        "query",
        "POST",
        "/query",
        200,
        "Query {label}s with a MongoDB-style filter.",
        errors=(
            ErrorCode.BAD_JSON,
            ErrorCode.BAD_FILTER,
            ErrorCode.BAD_CURSOR,
            ErrorCode.BAD_PARAMETER,
            ErrorCode.PAGE_SIZE_OUT_OF_RANGE,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.FILTER_TOO_SLOW,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ),
    ),
    Operation(
        "create",
        "POST",
        "",
        201,
        "Create a {label}.",
        errors=(
            *_BODY,
            ErrorCode.NOT_FOUND,
            ErrorCode.CONFLICT,
            ErrorCode.REFUSED,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ),
    ),
    Operation(
        "update",
        "PATCH",
        "/{id}",
        200,
        "Change fields of a {label}.",
        # bad_parameter: If-Match
        errors=(
            *_BODY,
            ErrorCode.BAD_PARAMETER,
            ErrorCode.NOT_FOUND,
            ErrorCode.CONFLICT,
            ErrorCode.REFUSED,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ),
    ),
    Operation(
        "finalize",
        "POST",
        "/{id}/finalize",
        200,
        "Finalize a {label} (one-way; it then refuses edits).",
        kinds=frozenset({Kind.TASK}),
        # invalid: a bad Idempotency-Key; unsupported_media_type: every POST is JSON (CSRF)
        errors=(
            ErrorCode.NOT_FOUND,
            ErrorCode.REFUSED,
            ErrorCode.INVALID,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ),
    ),
    Operation(
        "cancel",
        "POST",
        "/{id}/cancel",
        200,
        "Cancel a {label}; with `scope=subtree`, every unfinished task below it too (docs/STEERING.md).",
        kinds=frozenset({Kind.AGENT_TASK}),
        errors=(
            ErrorCode.BAD_PARAMETER,
            ErrorCode.NOT_FOUND,
            ErrorCode.REFUSED,
            ErrorCode.CONFLICT,
            ErrorCode.INVALID,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ),
    ),
)

_STEER_ERRORS = (
    ErrorCode.BAD_PARAMETER,
    ErrorCode.NOT_FOUND,
    ErrorCode.REFUSED,
    ErrorCode.CONFLICT,
    ErrorCode.INVALID,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
)
_BULK_ERRORS = (*_BODY, ErrorCode.BAD_FILTER, ErrorCode.FILTER_TOO_SLOW, ErrorCode.CONFLICT)
_AGENT_TASKS = frozenset({Kind.AGENT_TASK})
OPERATIONS += (
    Operation(
        "pause",
        "POST",
        "/{id}/pause",
        200,
        "Pause a {label}; with `scope=subtree`, every unfinished task below it too (docs/STEERING.md).",
        kinds=_AGENT_TASKS,
        errors=_STEER_ERRORS,
    ),
    Operation(
        "resume",
        "POST",
        "/{id}/resume",
        200,
        "Resume a paused {label}; with `scope=subtree`, every paused task below it too.",
        kinds=_AGENT_TASKS,
        errors=_STEER_ERRORS,
    ),
    *(
        Operation(
            f"{action}_many",
            "POST",
            f"/{action}",
            200,
            f"{verb} every {{label}} a filter matches (at most BULK_ACTION_MAX_TASKS), each in its own"
            " compare-and-set with its own events (docs/STEERING.md, Bulk actions).",
            kinds=_AGENT_TASKS,
            errors=_BULK_ERRORS,
        )
        for action, verb in (
            ("retry", "Retry"),
            ("cancel", "Cancel"),
            ("pause", "Pause"),
            ("resume", "Resume"),
        )
    ),
)


CONCURRENCY_LIMITS = Resource("concurrency-limits", "ConcurrencyLimit", "concurrency limit")
START_RATE_LIMITS = Resource("start-rate-limits", "StartRateLimit", "start rate limit")
CLAIM_POLICIES = Resource("claim-policies", "ClaimPolicy", "claim policy")
CLAIM_QUEUES = Resource("claim-queues", "ClaimQueue", "claim queue")
_LIMIT = "/{scope}/{key}"
_AGENT = "/{agent_name}"
#: A steering write: its path parameters (`bad_parameter`), its JSON body, an agent-bound key's refusal
#: (`forbidden`, added to all) and the number of limits (`invalid`, MAX_CONCURRENCY_LIMITS).
_SETTING = (*_BODY, ErrorCode.BAD_PARAMETER)
OPERATIONS += (
    Operation(
        "list_concurrency_limits",
        "GET",
        "",
        200,
        "Every concurrency limit, with the tasks in progress under it now (GraphQL `concurrencyLimits`).",
        kinds=frozenset(),
        resource=CONCURRENCY_LIMITS,
    ),
    Operation(
        "set_concurrency_limit",
        "PUT",
        _LIMIT,
        200,
        "Set (or change) a concurrency limit: claims never start a task while `max` tasks under it are in"
        " progress; running tasks are not stopped when it is lowered (GraphQL `setConcurrencyLimit`).",
        kinds=frozenset(),
        errors=_SETTING,
        resource=CONCURRENCY_LIMITS,
    ),
    Operation(
        "clear_concurrency_limit",
        "DELETE",
        _LIMIT,
        200,
        "Remove a concurrency limit; `cleared` says whether there was one (GraphQL `clearConcurrencyLimit`).",
        kinds=frozenset(),
        errors=(ErrorCode.BAD_PARAMETER,),
        resource=CONCURRENCY_LIMITS,
    ),
    Operation(
        "list_start_rate_limits",
        "GET",
        "",
        200,
        "Every start rate limit, with the starts of its current window (GraphQL `startRateLimits`).",
        kinds=frozenset(),
        resource=START_RATE_LIMITS,
    ),
    Operation(
        "set_start_rate_limit",
        "PUT",
        _LIMIT,
        200,
        "Set (or change) a start rate limit: at most `max` claims start tasks under it per fixed window of"
        " `per`, across every server process (GraphQL `setStartRateLimit`).",
        kinds=frozenset(),
        errors=_SETTING,
        resource=START_RATE_LIMITS,
    ),
    Operation(
        "clear_start_rate_limit",
        "DELETE",
        _LIMIT,
        200,
        "Remove a start rate limit; `cleared` says whether there was one (GraphQL `clearStartRateLimit`).",
        kinds=frozenset(),
        errors=(ErrorCode.BAD_PARAMETER,),
        resource=START_RATE_LIMITS,
    ),
    Operation(
        "get_claim_policy",
        "GET",
        _AGENT,
        200,
        "How an agent's claims choose among its ready tasks (FIFO when none was set).",
        kinds=frozenset(),
        errors=(ErrorCode.BAD_PARAMETER,),
        resource=CLAIM_POLICIES,
    ),
    Operation(
        "set_claim_policy",
        "PUT",
        _AGENT,
        200,
        "Set how an agent's claims choose among its ready tasks (GraphQL `setClaimPolicy`).",
        kinds=frozenset(),
        errors=_SETTING,
        resource=CLAIM_POLICIES,
    ),
    Operation(
        "get_claim_queue",
        "GET",
        _AGENT,
        200,
        "An agent's claim queue: ready, running, held back by limits, per workflow or key (GraphQL"
        " `claimQueue`).",
        kinds=frozenset(),
        errors=(ErrorCode.BAD_PARAMETER,),
        resource=CLAIM_QUEUES,
    ),
)


@dataclass(frozen=True)
class RestRoute:
    entity: Entity | Resource
    operation: Operation

    @property
    def path(self) -> str:
        """The path template as the OpenAPI document writes it (`/concurrency-limits/{scope}/{key}`)."""
        return f"/{self.entity.path}{self.operation.suffix}"

    @property
    def route_path(self) -> str:
        """The path template Starlette matches: a tail parameter takes the rest of the path, `/` too."""
        path = self.path
        for name in TAIL_PARAMETERS:
            path = path.replace(f"{{{name}}}", f"{{{name}:tail}}")
        return path

    @property
    def operation_id(self) -> str:
        first, *rest = self.operation.name.split("_")  # retry_many → retryMany
        camel = f"{first}{''.join(part.title() for part in rest)}"
        return camel if isinstance(self.entity, Resource) else f"{camel}{self.entity.name}"

    @property
    def error_codes(self) -> tuple[ErrorCode, ...]:
        """Every error code this route can answer with, the edge's and the server-side ones last."""
        codes = self.operation.errors
        entity = self.entity
        if self.operation.name == "delete" and isinstance(entity, Entity) and entity.kind is not Kind.TASK:
            codes = tuple(c for c in codes if c != ErrorCode.BAD_PARAMETER)  # only tasks take `cascade`
        return (
            *codes,
            ErrorCode.UNAUTHENTICATED,
            ErrorCode.FORBIDDEN,
            ErrorCode.RATE_LIMITED,
            ErrorCode.UNTRUSTED_HOST,
            ErrorCode.INTERNAL,
            ErrorCode.DATABASE_UNAVAILABLE,
            ErrorCode.DATABASE_TIMEOUT,
        )


ROUTES: tuple[RestRoute, ...] = tuple(
    RestRoute(entity, operation)
    for entity in ENTITIES
    for operation in OPERATIONS
    if entity.kind in operation.kinds
) + tuple(RestRoute(op.resource, op) for op in OPERATIONS if op.resource is not None)
