"""The generic root list field: one resolver shape for every collection, built from a table of arguments.

`list_field(node, ...)` returns a Strawberry field `(filter, <typed arguments>, orderBy, first, after)
-> <Node>Connection` whose resolver hands everything to `list_page`. The typed arguments differ per
collection (status and agent for states, parent ids for children…), so the resolver's signature is
built from the table rather than written out seven times.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from app.api.connections import Connection, list_page, order_input

FILTER = (
    'A MongoDB-style query over the stored (snake_case) field names, e.g. {"status": {"$in": ["pending"]}}.'
)
FIRST = "Page size (default 20, at most the server's maximum page size)."
AFTER = "Return the items after this cursor (an `endCursor` or edge `cursor` from a previous page)."
ORDER = "Sort order; ties are broken by id. Default: by id, ascending."

Filter = Annotated[JSON | None, strawberry.argument(description=FILTER)]
First = Annotated[int | None, strawberry.argument(description=FIRST)]
After = Annotated[str | None, strawberry.argument(description=AFTER)]


def list_field(node: type, order_name: str, description: str, typed: dict[str, tuple[Any, str]]) -> Any:
    """A root list field over `node`'s collection; `typed` maps argument name → (annotation, stored field)."""
    order = Annotated[order_input(node.spec, order_name) | None, strawberry.argument(description=ORDER)]  # type: ignore[attr-defined]

    async def resolve(self: Any, info: strawberry.Info, **kwargs: Any) -> Any:
        conditions = {typed[name][1]: kwargs[name] for name in typed}
        return await list_page(
            info, node, kwargs["filter"], conditions, kwargs["order_by"], kwargs["first"], kwargs["after"]
        )

    keyword = inspect.Parameter.KEYWORD_ONLY
    arguments = {"filter": Filter, **{name: kind for name, (kind, _) in typed.items()}}
    arguments |= {"order_by": order, "first": First, "after": After}
    resolve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("info", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=strawberry.Info),
            *(
                inspect.Parameter(name, keyword, default=None, annotation=kind)
                for name, kind in arguments.items()
            ),
        ],
        return_annotation=Connection[node],  # type: ignore[valid-type]
    )
    resolve.__annotations__ = {"info": strawberry.Info, **arguments, "return": Connection[node]}  # type: ignore[valid-type]
    return strawberry.field(resolver=resolve, description=description)
