"""Relay-style connections (`edges { cursor node }`, `pageInfo`, `totalCount`) and the list resolver glue.

`list_page` is the one code path behind every root list field: it validates the user's `filter` against
the collection's allow-list, adds the typed arguments, checks the page size, and asks the store for one
keyset page. `totalCount` is only counted when the client selects it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.scalars import JSON

from app.api.errors import UserInputError, page_size
from app.api.types.convert import from_doc
from app.api.types.enums import SortDirection
from app.store.collections import CollectionSpec
from app.store.cursors import CursorError, SortSpec
from app.store.filters import FilterError, FilterLimits, compile_filter
from app.store.repository import Page

T = TypeVar("T")


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

    @strawberry.field(description="How many items the whole list holds (all pages).")
    async def total_count(self, info: strawberry.Info) -> int:
        return await info.context.store.count(self.spec, self.query)


def order_input(spec: CollectionSpec, type_name: str) -> type:
    """A `<Type>Order` input (field enum + direction) for the sortable fields of `spec`."""
    field_enum = strawberry.enum(
        Enum(f"{type_name}SortField", {name.upper(): name for name in spec.sort_fields}),  # type: ignore[misc]
        description=f"Fields a list of {type_name} can be sorted by.",
    )
    namespace = {
        "__annotations__": {"field": field_enum, "direction": SortDirection},
        "field": strawberry.field(default=field_enum(spec.sort_fields[0]), description="Field to sort by."),
        "direction": strawberry.field(default=SortDirection.ASC, description="Sort direction."),
        "__doc__": f"Sort order of a list of {type_name}; ties are broken by id.",
    }
    return strawberry.input(type(f"{type_name}Order", (), namespace), description=namespace["__doc__"])


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _condition(value: Any) -> Any:
    """A typed argument as a filter condition: a list means "any of these"."""
    return {"$in": [_plain(v) for v in value]} if isinstance(value, list) else _plain(value)


async def list_page(
    info: strawberry.Info,
    cls: type[T],
    filter: JSON | None,
    typed: Mapping[str, Any],
    order: Any,
    first: int | None,
    after: str | None,
) -> Connection[T]:
    """One page of `cls`'s collection: `filter` (allow-listed) AND the typed arguments that were given."""
    spec: CollectionSpec = cls.spec  # type: ignore[attr-defined]
    settings = info.context.settings
    limits = FilterLimits(max_depth=settings.max_filter_depth, max_nodes=settings.max_filter_nodes)
    size = page_size(first, settings.default_page_size, settings.max_page_size)
    conditions = {k: _condition(v) for k, v in typed.items() if v is not None}
    try:
        user = compile_filter(spec, filter, limits)
        extra = compile_filter(spec, conditions) if conditions else {}
    except FilterError as exc:
        raise UserInputError(str(exc), "BAD_FILTER") from exc
    query = {"$and": [user, extra]} if user and extra else user or extra
    field = order.field.value if order is not None else spec.sort_fields[0]
    direction = order.direction.value if order is not None else 1
    sort = SortSpec(spec.storage_path(field), direction)
    try:
        page: Page = await info.context.store.find_page(spec, query, sort, size, after)
    except CursorError as exc:
        raise UserInputError(str(exc), "BAD_CURSOR") from exc
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
    )
