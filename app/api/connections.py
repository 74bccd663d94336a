"""Relay-style connections (`edges { cursor node }`, `pageInfo`, `totalCount`) and the list resolver glue.

`list_page` is the one code path behind every root list field: it validates the user's `filter` against
the collection's allow-list, adds the typed arguments, checks the page size, and asks the store for one
keyset page. `totalCount` is only counted when the client selects it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import strawberry
from strawberry.scalars import JSON

from app.api.errors import UserInputError, page_size
from app.api.types.convert import from_doc
from app.api.types.enums import SortDirection
from app.domain import ErrorCode
from app.settings import Settings
from app.store.collections import CollectionSpec
from app.store.cursors import CursorError, SortSpec
from app.store.failures import FilterTooSlow
from app.store.filters import FilterError, FilterLimits, compile_filter
from app.store.repository import Page

T = TypeVar("T")


class Stored(Protocol):
    """A type read from one collection (`MetaWorkflowTask`, `SubTaskOutput`, `AgentTaskState`…)."""

    spec: ClassVar[CollectionSpec]


class SortOrder(Protocol):
    """A `<Type>Order` input: a `<Type>SortField` (valued by stored field names) and a direction."""

    @property
    def field(self) -> Enum: ...

    @property
    def direction(self) -> SortDirection: ...


StoredT = TypeVar("StoredT", bound=Stored)


@strawberry.type(description="Where a page sits in its list.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="Whether more items follow this page.")
    has_previous_page: bool = strawberry.field(
        description="Whether this page was asked for `after` a cursor."
    )
    start_cursor: str | None = strawberry.field(description="Cursor of the first item of the page.")
    end_cursor: str | None = strawberry.field(description="Cursor of the last item; pass it as `after`.")


@strawberry.type(description="One item of a page and its cursor.")
class Edge(Generic[T]):
    cursor: str = strawberry.field(description="Opaque cursor of this item; pass it as `after` to resume.")
    node: T = strawberry.field(description="The item.")


@strawberry.type(description="A page of a list, with its total size.")
class Connection(Generic[T]):
    edges: list[Edge[T]] = strawberry.field(description="The items of this page, in order.")
    page_info: PageInfo = strawberry.field(description="Pagination information.")
    spec: strawberry.Private[CollectionSpec]
    query: strawberry.Private[Mapping[str, Any]]
    #: FILTER_MAX_TIME_MS when the client sent a `filter`, else None.
    time_limit_ms: strawberry.Private[int | None] = None

    @strawberry.field(description="How many items the whole list holds (all pages).")
    async def total_count(self, info: strawberry.Info) -> int:
        try:
            return await info.context.store.count(self.spec, self.query, self.time_limit_ms)
        except (FilterTooSlow, FilterError) as exc:
            raise filter_refused(exc) from exc


def filter_refused(exc: FilterTooSlow | FilterError) -> UserInputError:
    """The GraphQL error for a filter MongoDB stopped (too slow) or refused."""
    if isinstance(exc, FilterTooSlow):
        return UserInputError(f"{str(exc)[0].upper()}{str(exc)[1:]}.", ErrorCode.FILTER_TOO_SLOW)
    return UserInputError(str(exc), ErrorCode.BAD_FILTER)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _condition(value: Any) -> Any:
    """A typed argument as a filter condition: a list means "any of these"."""
    return {"$in": [_plain(v) for v in value]} if isinstance(value, list) else _plain(value)


def list_query(
    spec: CollectionSpec, filter: JSON | None, typed: Mapping[str, Any], settings: Settings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The MongoDB query of a list's `filter` (allow-listed, within the settings' limits) AND its typed
    arguments that were given (keyed by stored field name; None means not given), and the `filter`'s part
    alone. Raises `FilterError`. The lists and the bulk actions (`retryTasks`…) filter with this."""
    limits = FilterLimits(max_depth=settings.max_filter_depth, max_nodes=settings.max_filter_nodes)
    conditions = {k: _condition(v) for k, v in typed.items() if v is not None}
    user = compile_filter(spec, filter, limits)
    extra = compile_filter(spec, conditions) if conditions else {}
    return ({"$and": [user, extra]} if user and extra else user or extra), user


async def list_page(
    info: strawberry.Info,
    cls: type[StoredT],
    filter: JSON | None,
    typed: Mapping[str, Any],
    order: SortOrder | None,
    first: int | None,
    after: str | None,
) -> Connection[StoredT]:
    """One page of `cls`'s collection: `filter` (allow-listed) AND the typed arguments that were given
    (keyed by stored field name; None means not given)."""
    spec = cls.spec
    settings = info.context.settings
    size = page_size(first, settings.default_page_size, settings.max_page_size)
    try:
        query, user = list_query(spec, filter, typed, settings)
    except FilterError as exc:
        raise UserInputError(str(exc), ErrorCode.BAD_FILTER) from exc
    field = order.field.value if order is not None else spec.sort_fields[0]
    direction = -1 if order is not None and order.direction is SortDirection.DESC else 1
    sort = SortSpec(spec.storage_path(field), direction)
    time_limit_ms = settings.filter_max_time_ms if user else None
    try:
        page: Page = await info.context.store.find_page(spec, query, sort, size, after, time_limit_ms)
    except CursorError as exc:
        raise UserInputError(str(exc), ErrorCode.BAD_CURSOR) from exc
    except (FilterTooSlow, FilterError) as exc:
        raise filter_refused(exc) from exc
    edges = [
        Edge(cursor=cursor, node=from_doc(cls, spec, doc))
        for doc, cursor in zip(page.docs, page.cursors, strict=True)
    ]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            start_cursor=page.cursors[0] if page.cursors else None,
            end_cursor=page.cursors[-1] if page.cursors else None,
        ),
        spec=spec,
        query=query,
        time_limit_ms=time_limit_ms,
    )
