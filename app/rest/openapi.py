"""The OpenAPI 3.1 document of the REST API, generated from the route table and the pydantic models.

Every path and method comes from `routes.ROUTES` (the same table the Starlette routes are built from);
every schema comes from `models` (themselves derived from the `CollectionSpec`s), so the document cannot
drift from what the server accepts and answers. Page-size limits come from the running settings.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from app.auth.scopes import REST
from app.domain import ErrorCode, EventType, Status
from app.rest.documents import RestJSONResponse
from app.rest.entities import Entity, Kind
from app.rest.errors import ERROR_CODES
from app.rest.models import MODELS, BulkAnswer, BulkRequest, Deleted, ErrorResponse
from app.rest.routes import OPENAPI_PATH, ROUTES, Resource, RestRoute
from app.rest.steering import OPERATION_PARAMETERS, PARAMETERS, STEERING_SCHEMAS
from app.settings import Settings

_REF = "#/components/schemas/{model}"
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    400: "Bad request",
    401: "Unauthenticated",
    429: "Too many requests",
    403: "Forbidden",
    404: "Not found",
    409: "Refused by a rule",
    413: "Body too large",
    415: "Body not sent as JSON",
    422: "Invalid body or header",
    500: "Unexpected error",
    503: "Database unavailable",
    504: "Database timeout",
}
#: When each error code is answered (the `code` of the error body); a response lists the codes it can carry.
_CODE_TEXT = {
    ErrorCode.BAD_JSON: (
        "the body is not JSON (or is missing where one is needed), or holds what MongoDB cannot store: a "
        "NUL character in a key, an integer beyond 64 bits, a lone surrogate, nesting deeper than "
        "MAX_JSON_DEPTH levels (64 by default; 32 in free-form values)"
    ),
    ErrorCode.BAD_FILTER: (
        "a refused filter: $where, $function or another operator not allowed, an unknown field, a value "
        "of the wrong type, a filter too deep or too large; or an empty one where a bulk action needs one"
    ),
    ErrorCode.BAD_CURSOR: ("an `after` cursor this server did not issue (or issued for another sort)"),
    ErrorCode.BAD_PARAMETER: (
        "a bad query parameter or header: `limit`, `sort`, `cascade`, `scope`, `by`, or `If-Match` (not a"
        " version, disagreeing with `expected_version`, or sent where there is no version); or a bad path"
        " parameter of a steering route: `scope` (agent, workflow or key), `key` or `agent_name` (empty, "
        "over 200 characters, a control character)"
    ),
    ErrorCode.UNTRUSTED_HOST: (
        "the `Host` header names a host this server does not answer to (TRUSTED_HOSTS)"
    ),
    ErrorCode.PAGE_SIZE_OUT_OF_RANGE: ("`limit` outside 1 to the server's maximum page size"),
    ErrorCode.UNAUTHENTICATED: (
        "no valid credentials: the `Authorization: Bearer` API key or token is malformed, unknown, "
        "expired or revoked, or the server requires credentials for this scope (`required_scope`)"
    ),
    ErrorCode.RATE_LIMITED: (
        "the caller's budget for this scope is spent (RATE_LIMIT_READ / _WRITE / _ADMIN per key, "
        "RATE_LIMIT_ANONYMOUS per address): wait `Retry-After` seconds (`retry_after`)"
    ),
    ErrorCode.FORBIDDEN: (
        "the key or token lacks the scope this route needs (`required_scope`), or is bound to agents and "
        "the write touches another agent's task (`agent_name`: that task's agent; null: none), or sets "
        "another agent's limit or policy (`agent_name`), or a workflow's or a concurrency key's limit "
        "(they span agents: `agent_name` null)"
    ),
    ErrorCode.NOT_FOUND: (
        "no document with this id (in a create: the parent named; for an output: the task, or the output "
        "not created yet)"
    ),
    ErrorCode.CONFLICT: (
        "the id is taken (or the output exists), the task has children and `cascade` is not set, the "
        "version changed since `If-Match` / `expected_version`, another task depends on it, or the agent "
        "task belongs to a hierarchy task (delete that task)"
    ),
    ErrorCode.REFUSED: (
        "the task is finalized (it refuses edits, moves, deletes, new children and output changes), or "
        "already finalized"
    ),
    ErrorCode.PAYLOAD_TOO_LARGE: (
        "a body over MAX_BODY_BYTES (1 MiB by default), refused before it is read whole"
    ),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: (
        "a POST, PATCH or PUT not sent as `application/json` (or another `+json` type): what keeps a page"
        " on another origin from sending it without a CORS preflight"
    ),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: ("an `Idempotency-Key` already used with a different request body"),
    ErrorCode.UNKNOWN_FIELD: ("a body field that does not exist, or that only the server writes"),
    ErrorCode.INVALID: (
        "a body value of the wrong type or one the services refuse (an unknown dependency, a cycle, an id"
        " too long, a limit's `max` outside 1 to 1,000,000, a new limit beyond MAX_CONCURRENCY_LIMITS), "
        "or an `Idempotency-Key` too long or already used for another operation"
    ),
    ErrorCode.INTERNAL: ("a bug; it is logged, and the answer says nothing more"),
    ErrorCode.FILTER_TOO_SLOW: (
        "the filter ran in MongoDB longer than the server allows (FILTER_MAX_TIME_MS) and was stopped; "
        "`limit_ms` says the limit"
    ),
    ErrorCode.DATABASE_UNAVAILABLE: (
        "MongoDB cannot be reached (or has no primary) right now; nothing was done; retry after `Retry-"
        "After` seconds"
    ),
    ErrorCode.DATABASE_TIMEOUT: (
        "MongoDB did not finish the operation within MONGODB_TIMEOUT_SECONDS; a write may or may not have"
        " been applied (retry with the same Idempotency-Key)"
    ),
}
_SEED_FILTERS = {
    "meta-tasks": {"meta_workflow_id": "mw1"},
    "sub-tasks": {"task_id": "meta123"},
    "behavior-tasks": {"sub_task_id": "sub123"},
    "task-outputs": {"task_id": "meta123"},
    "sub-task-outputs": {"is_finalized_step": True},
    "behavior-task-outputs": {"processor_subject_ids": {"$in": ["agent1"]}},
    "agent-tasks": {"status": {"$in": [Status.PENDING, Status.IN_PROGRESS]}},
}


@functools.cache
def _schemas() -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any]]:
    """(refs by (entity path or "", role), components.schemas), computed once."""
    wanted: list[tuple[str, str, type[BaseModel], str]] = []
    for path, models in MODELS.items():
        wanted += [
            (path, "document", models.document, "serialization"),
            (path, "page", models.page, "serialization"),
            (path, "create", models.create, "validation"),
            (path, "update", models.update, "validation"),
        ]
    wanted += [
        ("", "error", ErrorResponse, "serialization"),
        ("", "deleted", Deleted, "serialization"),
        ("", "bulk_request", BulkRequest, "validation"),
        ("", "bulk_answer", BulkAnswer, "serialization"),
    ]
    for name, schemas in STEERING_SCHEMAS.items():
        wanted.append((name, "answer", schemas.answer, "serialization"))
        if schemas.body is not None:
            wanted.append((name, "body", schemas.body, "validation"))
    key_map, top = models_json_schema([(m, mode) for _, _, m, mode in wanted], ref_template=_REF)  # type: ignore[misc]  # mode is one of pydantic's two literals
    refs = {(path, role): key_map[(model, mode)] for path, role, model, mode in wanted}  # type: ignore[index]
    return refs, top.get("$defs", {})


def _json(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema, **extra}}}


def _parameters(route: RestRoute, settings: Settings) -> list[dict[str, Any]]:
    entity, op = route.entity, route.operation.name
    assert isinstance(entity, Entity)  # steering routes: `_steering_operation`
    params: list[dict[str, Any]] = []
    if "{id}" in route.path:
        params.append(
            {
                "name": "id",
                "in": "path",
                "required": True,
                "description": f"The {entity.label}'s id (`{entity.spec.id_field}`).",
                "schema": {"type": "string", "minLength": 1},
            }
        )
    if op == "delete" and entity.kind is Kind.TASK:
        params.append(
            {
                "name": "cascade",
                "in": "query",
                "description": "Also delete every task below it, with their outputs and states. Without it,"
                " a task with children is refused with 409.",
                "schema": {"type": "boolean", "default": False},
            }
        )
    if op == "cancel":
        params += [
            {
                "name": "scope",
                "in": "query",
                "description": "`task` (the default): this task only; `subtree`: and every unfinished task"
                " below it, in bounded transactions, each with STATUS_CHANGED and TASK_CANCELLED.",
                "schema": {"type": "string", "enum": ["task", "subtree"], "default": "task"},
            },
            {
                "name": "reason",
                "in": "query",
                "description": "Why; kept in `current_step` and in each TASK_CANCELLED event.",
                "schema": {"type": "string"},
            },
        ]
    if op in ("pause", "resume"):
        event = EventType.TASK_PAUSED if op == "pause" else EventType.TASK_RESUMED
        params += [
            {
                "name": "scope",
                "in": "query",
                "description": f"`task` (the default): this task only; `subtree`: and every task below it,"
                f" in bounded transactions, each with STATUS_CHANGED and {event}.",
                "schema": {"type": "string", "enum": ["task", "subtree"], "default": "task"},
            },
            {
                "name": "reason",
                "in": "query",
                "description": f"Why; kept in each {event} event.",
                "schema": {"type": "string"},
            },
        ]
    if op == "query":
        sortable = list(entity.spec.sort_fields)
        params += [
            {
                "name": "limit",
                "in": "query",
                "description": f"Page size (default {settings.default_page_size}); more than"
                f" {settings.max_page_size} is refused with 400.",
                "schema": {"type": "integer", "minimum": 1, "maximum": settings.max_page_size},
            },
            {
                "name": "after",
                "in": "query",
                "description": "The `next_cursor` of the previous page (same filter and sort).",
                "schema": {"type": "string"},
            },
            {
                "name": "sort",
                "in": "query",
                "description": "Field to sort by, `-field` for descending; ties are broken by id.",
                "schema": {"type": "string", "enum": sortable + [f"-{f}" for f in sortable]},
            },
        ]
    if entity.kind is not Kind.OUTPUT and op in ("create", "update", "finalize", "cancel"):
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "description": "A retried request with the same key gets the first answer and applies"
                " nothing twice (kept 24 hours).",
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        )
    if op == "update" and entity.kind is Kind.AGENT_TASK:
        params.append(
            {
                "name": "If-Match",
                "in": "header",
                "description": 'Apply only at this version (the ETag, e.g. `"3"`); 409 if it changed.',
                "schema": {"type": "string"},
            }
        )
    return params


def _request_body(route: RestRoute, refs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any] | None:
    entity, op = route.entity, route.operation.name
    assert isinstance(entity, Entity)  # steering routes: `_steering_operation`
    if op in ("create", "update"):
        return {"required": True, **_json(refs[(entity.path, op)])}
    if op.endswith("_many"):
        return {
            "required": True,
            "description": "`filter`: the filter of `POST /agent-tasks/query` (non-empty; an empty one is"
            " refused with 400 `bad_filter`); `limit`: at most BULK_ACTION_MAX_TASKS (more: 422 `invalid`);"
            " `reason`: kept in each event.",
            **_json(refs[("", "bulk_request")], example={"filter": {"status": Status.FAILED}, "limit": 500}),
        }
    if op == "query":
        allowed = [entity.spec.id_field, *(f for f in entity.spec.fields if "." not in f)]
        return {
            "required": False,
            "description": "A MongoDB-style filter over the stored (snake_case) field names, sent as the"
            f" whole body; empty means everything. Fields: {', '.join(allowed)} (and dotted paths into"
            " free-form objects). Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $regex $options"
            " $not $all $size $elemMatch $type $and $or $nor; anything else ($where, $function, $expr, …)"
            " is refused with 400.",
            **_json({"type": "object"}, example=_SEED_FILTERS[entity.path]),
        }
    return None


def _responses(route: RestRoute, refs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    entity, op = route.entity, route.operation
    assert isinstance(entity, Entity)  # steering routes: `_steering_operation`
    success = {
        "get": refs[(entity.path, "document")],
        "create": refs[(entity.path, "document")],
        "update": refs[(entity.path, "document")],
        "finalize": refs[(entity.path, "document")],
        "cancel": refs[(entity.path, "document")],
        "pause": refs[(entity.path, "document")],
        "resume": refs[(entity.path, "document")],
        "delete": refs[("", "deleted")],
        "query": refs[(entity.path, "page")],
    }.get(op.name) or refs[("", "bulk_answer")]
    answer: dict[str, Any] = {"description": _STATUS_TEXT[op.success], **_json(success)}
    headers: dict[str, Any] = {}
    if op.name == "create":
        headers["Location"] = {"description": "URL of the new document.", "schema": {"type": "string"}}
    if entity.kind is Kind.AGENT_TASK and op.name in ("get", "create", "update"):
        headers["ETag"] = {"description": "The task's version, for If-Match.", "schema": {"type": "string"}}
    if headers:
        answer["headers"] = headers
    out = {str(op.success): answer}
    by_status: dict[int, list[ErrorCode]] = {}
    for code in route.error_codes:
        by_status.setdefault(ERROR_CODES[code], []).append(code)
    for status, codes in sorted(by_status.items()):
        out[str(status)] = _error_response(status, codes, refs[("", "error")])
    return out


def _error_response(status: int, codes: list[ErrorCode], error_ref: dict[str, Any]) -> dict[str, Any]:
    """An error answer: the error body, narrowed to the codes this route answers with at this status (in
    REST's spelling, `ErrorCode.rest`)."""
    listed = "\n".join(f"- `{code.rest}`: {_CODE_TEXT[code]}" for code in codes)
    narrowed = {"properties": {"error": {"properties": {"code": {"enum": [code.rest for code in codes]}}}}}
    answer = {
        "description": f"{_STATUS_TEXT[status]}.\n\n{listed}",
        **_json({"allOf": [error_ref, narrowed]}),
    }
    if status in (429, 503):
        retry = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
        answer["headers"] = {"Retry-After": retry}
    return answer


def _steering_operation(route: RestRoute, refs: dict[tuple[str, str], dict[str, Any]]) -> Any:
    """A steering route (`app/rest/steering.py`): its parameters, body and answer from that module."""
    op = route.operation
    assert isinstance(route.entity, Resource)
    answer = {"description": _STATUS_TEXT[op.success], **_json(refs[(op.name, "answer")])}
    responses: dict[str, Any] = {str(op.success): answer}
    by_status: dict[int, list[ErrorCode]] = {}
    for code in route.error_codes:
        by_status.setdefault(ERROR_CODES[code], []).append(code)
    for status, codes in sorted(by_status.items()):
        responses[str(status)] = _error_response(status, codes, refs[("", "error")])
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": op.summary,
        "description": f"Needs the `{REST[op.name].value}` scope (see Access control; docs/STEERING.md).",
        "tags": [route.entity.name],
        "parameters": [
            {"name": name, "required": PARAMETERS[name]["in"] == "path", **PARAMETERS[name]}
            for name in OPERATION_PARAMETERS.get(op.name, ())
        ],
        "responses": responses,
    }
    if STEERING_SCHEMAS[op.name].body is not None:
        operation["requestBody"] = {"required": True, **_json(refs[(op.name, "body")])}
    return operation


def _operation(route: RestRoute, settings: Settings, refs: dict[tuple[str, str], dict[str, Any]]) -> Any:
    if isinstance(route.entity, Resource):
        return _steering_operation(route, refs)
    entity: Entity = route.entity
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.operation.summary.format(label=entity.label),
        "description": f"Needs the `{REST[route.operation.name].value}` scope (see Access control).",
        "tags": [entity.name],
        "parameters": _parameters(route, settings),
        "responses": _responses(route, refs),
    }
    body = _request_body(route, refs)
    if body is not None:
        operation["requestBody"] = body
    return operation


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The whole document, for these settings' page sizes."""
    refs, schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.operation.method.lower()] = _operation(route, settings, refs)
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document.",
            "tags": ["meta"],
            "responses": {"200": {"description": "OK", **_json({"type": "object"})}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agent-tasks REST API",
            "version": "1.0.0",
            "description": "CRUD and MongoDB-style queries over the task hierarchy (meta workflow →"
            " sub-task → behavior task), their outputs and agent task states, with the stored (snake_case)"
            ' field names. Errors are `{"error": {"code", "message", …}}`. The same data is served by'
            " GraphQL at /graphql.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`atk_…`) or a JWT from the configured issuer. A server"
                    " running open (loopback, `AUTH_MODE=open`) also takes requests without one.",
                }
            },
        },
        # A bearer credential, or none where the server runs open (app/auth).
        "security": [{"bearer": []}, {}],
    }


async def openapi_endpoint(request: Request) -> Response:
    return RestJSONResponse(openapi_document(request.app.state.agent_tasks.settings))
