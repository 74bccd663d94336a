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
    #: Error statuses this operation can answer with (500 is added to all).
    errors: tuple[int, ...] = ()


OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "GET", "/{id}", 200, "Retrieve a {label} by id.", errors=(404,)),
    Operation(
        "delete",
        "DELETE",
        "/{id}",
        200,
        "Delete a {label} by id.",
        errors=(400, 404, 409),
    ),
    Operation(
        "query", "POST", "/query", 200, "Query {label}s with a MongoDB-style filter.", errors=(400, 413)
    ),
    Operation("create", "POST", "", 201, "Create a {label}.", errors=(400, 404, 409, 413, 422)),
    Operation(
        "update", "PATCH", "/{id}", 200, "Change fields of a {label}.", errors=(400, 404, 409, 413, 422)
    ),
    Operation(
        "finalize",
        "POST",
        "/{id}/finalize",
        200,
        "Finalize a {label} (one-way; it then refuses edits).",
        kinds=frozenset({Kind.TASK}),
        errors=(404, 409, 422),  # 422: an Idempotency-Key already used for another operation
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
        return f"{self.operation.name}{self.entity.name}"


ROUTES: tuple[RestRoute, ...] = tuple(
    RestRoute(entity, operation)
    for entity in ENTITIES
    for operation in OPERATIONS
    if entity.kind in operation.kinds
)
