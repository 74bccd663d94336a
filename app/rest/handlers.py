"""Thin REST handlers, one factory per operation: read the request, validate, call `actions`, answer.

Each factory takes an `Entity` and returns a Starlette endpoint; `routes.py` wires them. Refusals are
raised and turned into JSON errors by `errors.json_errors`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from app.domain import ErrorCode
from app.lifecycle.transitions import version_of
from app.rest import actions
from app.rest.bodies import read_json
from app.rest.documents import RestJSONResponse, to_seed_shape
from app.rest.entities import Entity, Kind
from app.rest.errors import ApiError
from app.rest.models import MODELS, validated
from app.rest.models import BulkRequest as BULK_REQUEST
from app.store.collections import CollectionSpec
from app.store.cursors import SortSpec
from app.store.filters import FilterLimits, compile_filter

if TYPE_CHECKING:
    from app.resources import AppState

Endpoint = Callable[[Request], Awaitable[Response]]
_DIGITS = re.compile(r"[0-9]{1,9}")
_ETAG_VERSION = re.compile(r'(?:W/)?"?(-?[0-9]{1,18})"?')
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def app_state(request: Request) -> AppState:
    return request.app.state.agent_tasks


def document_response(
    entity: Entity, doc: Mapping[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    headers = dict(headers or {})
    if entity.kind is Kind.AGENT_TASK:
        headers["ETag"] = f'"{version_of(doc)}"'  # what If-Match compares with
    return RestJSONResponse(to_seed_shape(entity.spec, doc), status_code=status, headers=headers)


def _id(request: Request) -> str:
    return request.path_params["id"]


def _idempotency_key(request: Request) -> str | None:
    return request.headers.get("idempotency-key")


# --- parameters ------------------------------------------------------------------------------------------


def page_limit(request: Request, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw):
        raise ApiError(
            ErrorCode.BAD_PARAMETER, f"limit must be a whole number, got {raw[:40]!r}", field="limit"
        )
    if not 1 <= int(raw) <= maximum:
        raise ApiError(
            ErrorCode.PAGE_SIZE_OUT_OF_RANGE,
            f"limit must be between 1 and {maximum}, got {int(raw)}",
            field="limit",
        )
    return int(raw)


def sort_order(request: Request, spec: CollectionSpec) -> SortSpec:
    """`?sort=field` (ascending) or `?sort=-field`, over the collection's sortable fields; default by id."""
    raw = request.query_params.get("sort") or spec.sort_fields[0]
    field, direction = (raw[1:], -1) if raw.startswith("-") else (raw, 1)
    if field not in spec.sort_fields:
        raise ApiError(
            ErrorCode.BAD_PARAMETER,
            f"cannot sort by {raw[:40]!r}; sortable fields: {', '.join(spec.sort_fields)}",
            field="sort",
        )
    return SortSpec(spec.storage_path(field), direction)


def flag(request: Request, name: str) -> bool:
    raw = (request.query_params.get(name) or "").lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ApiError(ErrorCode.BAD_PARAMETER, f"{name} must be true or false, got {raw[:40]!r}", field=name)


def expected_version(request: Request, body: dict[str, Any]) -> int | None:
    """The version an agent-task update must apply at: `If-Match` and/or `expected_version`."""
    from_body = body.pop("expected_version", None)
    header = request.headers.get("if-match")
    from_header: int | None = None
    if header is not None and header.strip() != "*":
        match = _ETAG_VERSION.fullmatch(header.strip())
        if match is None:
            raise ApiError(
                ErrorCode.BAD_PARAMETER, 'If-Match must be a version such as "3" (the ETag)', field="If-Match"
            )
        from_header = int(match.group(1))
    if from_header is not None and from_body is not None and from_header != from_body:
        raise ApiError(
            ErrorCode.BAD_PARAMETER,
            "If-Match and expected_version disagree; send one of them",
            field="If-Match",
        )
    return from_header if from_header is not None else from_body


# --- the operations --------------------------------------------------------------------------------------


def get_handler(entity: Entity) -> Endpoint:
    async def get(request: Request) -> Response:
        return document_response(entity, await actions.fetch(app_state(request), entity, _id(request)))

    return get


def delete_handler(entity: Entity) -> Endpoint:
    async def delete(request: Request) -> Response:
        cascade = flag(request, "cascade") if entity.kind is Kind.TASK else False
        ids = await actions.delete(app_state(request), entity, _id(request), cascade=cascade)
        return RestJSONResponse({"deleted_ids": ids})

    return delete


def query_handler(entity: Entity) -> Endpoint:
    spec = entity.spec

    async def query(request: Request) -> Response:
        state = app_state(request)
        settings = state.settings
        limit = page_limit(request, settings.default_page_size, settings.max_page_size)
        sort = sort_order(request, spec)
        after = request.query_params.get("after") or None
        # The seed sends the filter as the whole body; an empty body means "everything".
        limits = FilterLimits(max_depth=settings.max_filter_depth, max_nodes=settings.max_filter_nodes)
        mongo_filter = compile_filter(spec, await read_json(request), limits)
        time_limit_ms = settings.filter_max_time_ms if mongo_filter else None
        page = await state.store.find_page(spec, mongo_filter, sort, limit, after, time_limit_ms)
        total = await state.store.count(spec, mongo_filter, time_limit_ms)
        return RestJSONResponse(
            {
                "items": [to_seed_shape(spec, doc) for doc in page.docs],
                "next_cursor": page.cursors[-1] if page.has_next_page and page.cursors else None,
                "total": total,
            }
        )

    return query


def create_handler(entity: Entity) -> Endpoint:
    model = MODELS[entity.path].create

    async def create(request: Request) -> Response:
        body = validated(model, await read_json(request))
        doc = await actions.create(
            app_state(request), entity, body, idempotency_key=_idempotency_key(request)
        )
        return document_response(entity, doc, 201, {"Location": entity.location(doc["_id"])})

    return create


def update_handler(entity: Entity) -> Endpoint:
    model = MODELS[entity.path].update

    async def update(request: Request) -> Response:
        body = validated(model, await read_json(request))
        if entity.kind is Kind.AGENT_TASK:
            version = expected_version(request, body)
        elif "if-match" in request.headers:
            # Only agent tasks carry a version; ignoring the precondition would make it unconditional.
            raise ApiError(
                ErrorCode.BAD_PARAMETER,
                "If-Match is only supported on /agent-tasks (their version)",
                field="If-Match",
            )
        else:
            version = None
        doc = await actions.update(
            app_state(request),
            entity,
            _id(request),
            body,
            expected_version=version,
            idempotency_key=_idempotency_key(request),
        )
        return document_response(entity, doc)

    return update


def finalize_handler(entity: Entity) -> Endpoint:
    async def finalize(request: Request) -> Response:
        doc = await actions.finalize(
            app_state(request), entity, _id(request), idempotency_key=_idempotency_key(request)
        )
        return document_response(entity, doc)

    return finalize


def cancel_handler(entity: Entity) -> Endpoint:
    async def cancel(request: Request) -> Response:
        scope = (request.query_params.get("scope") or "task").lower()
        if scope not in ("task", "subtree"):
            raise ApiError(
                ErrorCode.BAD_PARAMETER, f"scope must be task or subtree, got {scope[:40]!r}", field="scope"
            )
        doc = await actions.cancel(
            app_state(request),
            _id(request),
            subtree=scope == "subtree",
            reason=request.query_params.get("reason"),
            idempotency_key=_idempotency_key(request),
        )
        return document_response(entity, doc)

    return cancel


def _scope(request: Request) -> bool:
    """`?scope=task` (the default) or `subtree`: whether the action takes the task's subtree too."""
    scope = (request.query_params.get("scope") or "task").lower()
    if scope not in ("task", "subtree"):
        raise ApiError(
            ErrorCode.BAD_PARAMETER, f"scope must be task or subtree, got {scope[:40]!r}", field="scope"
        )
    return scope == "subtree"


def pause_handler(action: str) -> Callable[[Entity], Endpoint]:
    """`POST /agent-tasks/{id}/pause` or `/resume` (`pauseTask` / `resumeTask`)."""

    def factory(entity: Entity) -> Endpoint:
        async def pause_or_resume(request: Request) -> Response:
            doc = await actions.pause_or_resume(
                app_state(request),
                action,
                _id(request),
                subtree=_scope(request),
                reason=request.query_params.get("reason"),
            )
            return document_response(entity, doc)

        return pause_or_resume

    return factory


def bulk_handler(action: str) -> Callable[[Entity], Endpoint]:
    """`POST /agent-tasks/retry` (`cancel`, `pause`, `resume`): the bulk action over a filter body."""

    def factory(entity: Entity) -> Endpoint:
        async def bulk(request: Request) -> Response:
            state = app_state(request)
            settings = state.settings
            body = validated(BULK_REQUEST, await read_json(request))
            limits = FilterLimits(max_depth=settings.max_filter_depth, max_nodes=settings.max_filter_nodes)
            query = compile_filter(entity.spec, body["filter"], limits)
            answer = await actions.bulk(
                state, action, query, limit=body.get("limit"), reason=body.get("reason")
            )
            return RestJSONResponse(answer)

        return bulk

    return factory


HANDLERS: dict[str, Callable[[Entity], Endpoint]] = {
    "get": get_handler,
    "delete": delete_handler,
    "query": query_handler,
    "create": create_handler,
    "update": update_handler,
    "finalize": finalize_handler,
    "cancel": cancel_handler,
    "pause": pause_handler("pause"),
    "resume": pause_handler("resume"),
    **{f"{action}_many": bulk_handler(action) for action in ("retry", "cancel", "pause", "resume")},
}
