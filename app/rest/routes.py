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
"""

from __future__ import annotations

from dataclasses import dataclass

from app.rest.entities import ENTITIES, Entity, Kind

OPENAPI_PATH = "/openapi.json"
_ALL = frozenset(Kind)


@dataclass(frozen=True)
class Operation:
    """One kind of REST operation; `summary` is formatted with the entity's label."""

    name: str
    method: str
    suffix: str
    success: int
    summary: str
    kinds: frozenset[Kind] = _ALL
    #: Error codes (`errors.ERROR_CODES`) this operation can answer with; `unauthenticated` (401) and
    #: `forbidden` (403: app/auth/scopes.py), `untrusted_host` (400), `internal` (500) and the database's
    #: `database_unavailable` (503) and `database_timeout` (504) are added to all.
    errors: tuple[str, ...] = ()


_BODY = ("bad_json", "payload_too_large", "unsupported_media_type", "unknown_field", "invalid")  # JSON bodies
OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "GET", "/{id}", 200, "Retrieve a {label} by id.", errors=("not_found",)),
    Operation(
        "delete",
        "DELETE",
        "/{id}",
        200,
        "Delete a {label} by id.",
        errors=("bad_parameter", "not_found", "conflict", "refused"),  # bad_parameter: `cascade` (tasks)
    ),
    Operation(
        "query",
        "POST",
        "/query",
        200,
        "Query {label}s with a MongoDB-style filter.",
        errors=(
            "bad_json",
            "bad_filter",
            "bad_cursor",
            "bad_parameter",
            "page_size_out_of_range",
            "payload_too_large",
            "filter_too_slow",
            "unsupported_media_type",
        ),
    ),
    Operation(
        "create",
        "POST",
        "",
        201,
        "Create a {label}.",
        errors=(*_BODY, "not_found", "conflict", "refused", "idempotency_key_reused"),
    ),
    Operation(
        "update",
        "PATCH",
        "/{id}",
        200,
        "Change fields of a {label}.",
        # bad_parameter: If-Match
        errors=(*_BODY, "bad_parameter", "not_found", "conflict", "refused", "idempotency_key_reused"),
    ),
    Operation(
        "finalize",
        "POST",
        "/{id}/finalize",
        200,
        "Finalize a {label} (one-way; it then refuses edits).",
        kinds=frozenset({Kind.TASK}),
        # invalid: a bad Idempotency-Key; unsupported_media_type: every POST is JSON (CSRF)
        errors=("not_found", "refused", "invalid", "unsupported_media_type", "idempotency_key_reused"),
    ),
    Operation(
        "cancel",
        "POST",
        "/{id}/cancel",
        200,
        "Cancel a {label}; with `scope=subtree`, every unfinished task below it too (docs/STEERING.md).",
        kinds=frozenset({Kind.AGENT_TASK}),
        errors=(
            "bad_parameter",
            "not_found",
            "refused",
            "conflict",
            "invalid",
            "unsupported_media_type",
            "idempotency_key_reused",
        ),
    ),
)

_STEER_ERRORS = (
    "bad_parameter",
    "not_found",
    "refused",
    "conflict",
    "invalid",
    "unsupported_media_type",
)
_BULK_ERRORS = (*_BODY, "bad_filter", "filter_too_slow", "conflict")
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


@dataclass(frozen=True)
class RestRoute:
    entity: Entity
    operation: Operation

    @property
    def path(self) -> str:
        return f"/{self.entity.path}{self.operation.suffix}"

    @property
    def operation_id(self) -> str:
        first, *rest = self.operation.name.split("_")  # retry_many → retryMany
        return f"{first}{''.join(part.title() for part in rest)}{self.entity.name}"

    @property
    def error_codes(self) -> tuple[str, ...]:
        """Every error code this route can answer with, the edge's and the server-side ones last."""
        codes = self.operation.errors
        if self.operation.name == "delete" and self.entity.kind is not Kind.TASK:
            codes = tuple(c for c in codes if c != "bad_parameter")  # only tasks take `cascade`
        return (
            *codes,
            "unauthenticated",
            "forbidden",
            "rate_limited",
            "untrusted_host",
            "internal",
            "database_unavailable",
            "database_timeout",
        )


ROUTES: tuple[RestRoute, ...] = tuple(
    RestRoute(entity, operation)
    for entity in ENTITIES
    for operation in OPERATIONS
    if entity.kind in operation.kinds
)
