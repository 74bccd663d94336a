"""The executor's direct path for plain leaf fields (`app/api/execution.py`) answers exactly what
graphql-core's own path answers: values, enums, nulls, errors and their paths, null propagation."""

from __future__ import annotations

import enum
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from app.api.execution import EventScopedExecutor, direct, install_direct_resolvers


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Item:
    name: str
    maybe: str | None
    count: int | None
    colour: Colour | None
    ratio: float | None = None

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()


@strawberry.type
class Holder:
    item: Item | None
    items: list[Item]


def _bad() -> Any:
    return ValueError("carried by the value")


@strawberry.type
class Query:
    @strawberry.field
    def holder(self) -> Holder:
        return Holder(
            item=Item(name=None, maybe=None, count=1, colour=Colour.RED),  # type: ignore[arg-type]
            items=[
                Item(name="a", maybe="x", count=2, colour=Colour.BLUE, ratio=0.5),
                Item(name="b", maybe=None, count="three", colour=Colour.RED),  # type: ignore[arg-type]
                Item(name="c", maybe=_bad(), count=3, colour="green"),  # type: ignore[arg-type]
            ],
        )


@strawberry.type
class Bad:
    @strawberry.field
    @direct
    def double(self, info: strawberry.Info, times: int) -> int:
        return times * 2


@strawberry.type
class BadQuery:
    bad: Bad


QUERIES = [
    "{ holder { items { name maybe count colour ratio shout } } }",
    "{ holder { item { name } } }",
    "{ holder { item { maybe count colour } } }",
    "{ holder { items { a: name b: name ...F } } } fragment F on Item { count colour }",
    "query($s: Boolean!) { holder { items { name @skip(if: $s) maybe @include(if: $s) } } }",
    "{ holder { items { __typename name } } }",
]


class Resolving(SchemaExtension):
    """An extension with a `resolve` hook: every field must then pass through it."""

    seen = 0

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        Resolving.seen += 1
        return _next(root, info, *args, **kwargs)


def _run(executor: type, query: str, extensions: list[Any] | None = None) -> dict[str, Any]:
    schema = strawberry.Schema(query=Query, execution_context_class=executor, extensions=extensions or [])
    result = schema.execute_sync(query, variable_values={"s": False})
    return {
        "data": result.data,
        "errors": sorted(
            (e.message, tuple(e.path or ()), tuple((loc.line, loc.column) for loc in e.locations or ()))
            for e in result.errors or ()
        ),
    }


@pytest.mark.parametrize("query", QUERIES)
def test_plain_fields_answer_as_graphql_core_does(query: str) -> None:
    assert _run(EventScopedExecutor, query) == _run(StrawberryGraphQLCoreExecutionContext, query)


def test_the_cases_are_exercised() -> None:
    """The comparison above covers a null in a non-null field, a value that fails coercion and an
    exception carried by a value."""
    answer = _run(EventScopedExecutor, QUERIES[0])
    messages = " ".join(message for message, _, _ in answer["errors"])
    assert "carried by the value" in messages
    assert "three" in messages
    assert "green" in messages
    assert answer["data"]["holder"]["items"][1] == {
        "name": "b",
        "maybe": None,
        "count": None,
        "colour": "RED",
        "ratio": None,
        "shout": "B",
    }
    assert _run(EventScopedExecutor, QUERIES[1])["errors"][0][0] == (
        "Cannot return null for non-nullable field Item.name."
    )


def test_resolver_middleware_sees_every_field() -> None:
    Resolving.seen = 0
    _run(EventScopedExecutor, "{ holder { items { name count } } }", [Resolving])
    direct = Resolving.seen
    Resolving.seen = 0
    _run(StrawberryGraphQLCoreExecutionContext, "{ holder { items { name count } } }", [Resolving])
    assert direct == Resolving.seen > 0


def test_direct_resolvers_are_installed_and_checked() -> None:
    """`@direct` resolvers become their graphql-core fields' resolvers; one with arguments is refused."""
    from app.api.schema import build_schema

    schema = build_schema()._schema
    state = schema.type_map["SubTask"].fields["state"]  # type: ignore[union-attr]
    assert state.resolve is not None and state.resolve.__name__ == "resolve"  # ours, not Strawberry's
    assert install_direct_resolvers(schema) == 8  # again: the same eight fields
    with pytest.raises(TypeError, match="takes no arguments"):
        install_direct_resolvers(strawberry.Schema(query=BadQuery)._schema)
