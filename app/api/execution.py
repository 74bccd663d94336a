"""The executor the schema runs operations with: Strawberry's, with a per-event executor for subscriptions
whose memo caches are its own, and plain fields completed without Strawberry's per-field wrapper.

graphql-core 3.3 (3.3.2, the newest release) runs each subscription event on
`Executor.build_per_event_executor(payload)`, a shallow `copy` of the subscription's executor. The copy
shares the executor's memo caches, and the main one, `_relevant_sub_fields` (the sub-fields collected for
a field of an object type), is keyed by the identity of the field list, which is new for every event: each
event adds entries (and keeps their lists alive) for as long as the subscription lives. With 1,000
subscribers and 20 mutations/s that was ~0.85 MB/s of RSS, without bound. `docs/upstream/` has the
report, with a reproduction that uses graphql-core alone.

`EventScopedExecutor.build_per_event_executor` gives every event's executor fresh caches, so what one
event memoized is freed with it (the caches still serve their purpose within an event: a list of 100
events' sub-fields is collected once). Strawberry takes the class as `execution_context_class`.

**Plain leaf fields.** Most of a big tree's fields are stored attributes of a scalar or enum type
(`id`, `status`, `agentName`…: 13,001 of 14,565 field executions in a 1×20×25 tree). graphql-core runs
each through `build_resolve_info` (a named tuple of 15 items), the field's resolver (Strawberry's
`_get_basic_result` → `StrawberryField.get_result` → `getattr`), `is_awaitable` and `complete_value`.
`execute_field` here reads such a field with the field's own default resolver and coerces it with
`complete_leaf_value`, as `complete_value` would, with the same errors: a null in a non-null field is
"Cannot return null for non-nullable field T.f." located at the field, an exception a value carries is
raised, and both go through `handle_field_error` (null for a nullable field, propagated otherwise). It
applies only to Strawberry's basic fields (no resolver, no field extension, no exception handler), with
no arguments, and only when no graphql-core middleware wraps resolvers; every other field takes
graphql-core's path unchanged.

**Direct resolvers.** A resolver marked `@direct` (it reads only `info.context` and returns a value or an
awaitable: a task's `state` and `output`, a dependency's `satisfied`) is installed as its graphql-core
field's own resolver (`install_direct_resolvers`), so graphql-core calls it with its resolve info instead
of going through Strawberry's wrapper (Strawberry's `Info`, argument conversion, the field-extension
chain: a field marked so must have no arguments and no field extensions, which is checked). graphql-core
completes what it returns as before, so nulls and errors are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from graphql import (
    GraphQLBoolean,
    GraphQLField,
    GraphQLID,
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLString,
    is_leaf_type,
    is_object_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import AwaitableOrValue, Path, RefMap, Undefined, UndefinedType, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute `@direct` sets on a resolver function.
DIRECT = "agent_tasks_direct_resolver"


def direct(resolver: F) -> F:
    """Mark a resolver `(self, info)` that reads nothing of `info` but `info.context`: the executor calls
    it without Strawberry's per-field wrapper (see the module). Put it under `@strawberry.field`."""
    setattr(resolver, DIRECT, True)
    return resolver


def install_direct_resolvers(schema: GraphQLSchema) -> int:
    """Make every `@direct` resolver its graphql-core field's resolver; how many fields were changed."""
    installed = 0
    for named in schema.type_map.values():
        if not is_object_type(named):
            continue
        for field_def in named.fields.values():
            strawberry_field = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if not isinstance(strawberry_field, StrawberryField) or strawberry_field.base_resolver is None:
                continue
            function = strawberry_field.base_resolver.wrapped_func
            if not getattr(function, DIRECT, False) or isinstance(function, staticmethod | classmethod):
                continue
            if field_def.args or strawberry_field.extensions:
                raise TypeError(
                    f"{named.name}.{field_def}: a @direct resolver takes no arguments or extensions"
                )
            field_def.resolve = _call_directly(function)
            installed += 1
    return installed


def _call_directly(function: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def resolve(source: Any, info: GraphQLResolveInfo) -> Any:
        return function(source, info)

    return resolve


#: How to read a plain leaf field: (default resolver, Python attribute name, leaf type, non-null, the Python
#: type whose values the scalar's coercion returns unchanged, or None).
LeafPlan = tuple[Any, str, GraphQLLeafType, bool, type | None]

#: (field definition, its `LeafPlan` or None when the field takes graphql-core's path), by the definition's
#: id; the definition is kept to tell a reused id.
_LEAF_PLANS: dict[int, tuple[GraphQLField, LeafPlan | None]] = {}

#: graphql-core's scalars whose coercion returns a value of this exact type as it is (`serialize_string`,
#: `serialize_id`, `serialize_boolean`); Int and Float check ranges and finiteness, so they always coerce.
_PASS_THROUGH: dict[int, type] = {id(GraphQLString): str, id(GraphQLID): str, id(GraphQLBoolean): bool}


def _leaf_plan(field_def: GraphQLField) -> LeafPlan | None:
    """How to read `field_def` directly, or None: only a Strawberry basic field of a leaf type qualifies."""
    entry = _LEAF_PLANS.get(id(field_def))
    if entry is not None and entry[0] is field_def:
        return entry[1]
    plan: LeafPlan | None = None
    strawberry_field = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    resolve = field_def.resolve
    return_type = field_def.type
    non_null = isinstance(return_type, GraphQLNonNull)
    named = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    if (
        isinstance(strawberry_field, StrawberryField)
        and strawberry_field.is_basic_field
        # Strawberry's resolver for a basic field without exception handlers (a field with handlers
        # gets another one, which must run).
        and resolve is not None
        and getattr(resolve, "__name__", "") == "_get_basic_result"
        and not field_def.args
        and is_leaf_type(named)
    ):
        plan = (
            strawberry_field.default_resolver,
            strawberry_field.python_name,
            named,
            non_null,
            _PASS_THROUGH.get(id(named)),
        )
    _LEAF_PLANS[id(field_def)] = (field_def, plan)
    return plan


def _leaf_value(plan: LeafPlan, source: Any, parent_type: GraphQLObjectType, field_name: str) -> Any:
    """A plain leaf field's completed value, as graphql-core's `complete_value` makes it: an exception the
    value carries is raised, null in a non-null field is a TypeError, anything else is coerced (a value the
    coercion would return as it is, a `str` for String or ID, a `bool` for Boolean, is returned at once)."""
    resolver, name, leaf_type, non_null, exact = plan
    value = resolver(source, name)
    if exact is not None and type(value) is exact:
        return value
    if isinstance(value, Exception):
        raise value
    if value is None or value is Undefined:
        if non_null:
            raise TypeError(f"Cannot return null for non-nullable field {parent_type.name}.{field_name}.")
        return None
    return EventScopedExecutor.complete_leaf_value(leaf_type, value)


#: The memo caches an executor builds up while it runs, each reset to an empty instance of its type for
#: every event (the first is the leak; the others only fill with `@defer`/`@stream`, which subscriptions
#: refuse, and are reset so that stays true whatever graphql-core does next).
PER_EVENT_CACHES: tuple[tuple[str, type], ...] = (
    ("compiled_field_sets", dict),
    ("_relevant_sub_fields", dict),
    ("_stream_usages", RefMap),
    ("_initial_execution_plans", RefMap),
    ("_deferred_execution_plans", RefMap),
    ("groups", list),
    ("tasks", list),
    ("streams", list),
)


class EventScopedExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor; each subscription event runs with caches of its own, and plain leaf fields
    are read directly (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        # Resolver middleware (a schema extension's `resolve` hook) must see every field: then none is
        # read directly. The manager hands a resolver back as it is when nothing wraps it.
        self.plain_fields = manager is None or manager.get_field_resolver(_leaf_plan) is _leaf_plan
        #: `_compiled`'s memo, for this execution (a subscription event's executor gets its own).
        self.compiled_field_sets: dict[tuple[int, GraphQLObjectType], tuple[GroupedFieldSet, list[Any]]] = {}

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        """graphql-core's `execute_fields`, with plain leaf fields read in the loop (no `Path` made for
        them unless they fail, no `execute_field` call); every other field as graphql-core does it."""
        if not self.plain_fields:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, field_details_list, field_def, plan in self._compiled(
                parent_type, grouped_field_set
            ):
                if plan is not None:
                    assert field_def is not None
                    try:
                        results[response_name] = _leaf_value(
                            plan, source_value, parent_type, field_details_list[0].node.name.value
                        )
                    except Exception as raw_error:
                        field_path = Path(path, response_name, parent_type.name)
                        self.handle_field_error(raw_error, field_def.type, field_details_list, field_path)
                        results[response_name] = None
                    continue
                result = self.execute_field(
                    parent_type,
                    source_value,
                    field_details_list,
                    Path(path, response_name, parent_type.name),
                    position_context,
                )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                # As graphql-core: settle what the other fields started, as they may fail too.
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise
        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            if len(awaitable_fields) == 1:
                field = awaitable_fields[0]
                results[field] = await results[field]
            else:
                awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
                results.update(zip(awaitable_fields, awaited, strict=True))
            return results

        return get_results()

    def _compiled(
        self, parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet
    ) -> list[tuple[str, FieldDetailsList, GraphQLField | None, LeafPlan | None]]:
        """Each field of a field set with its definition and `LeafPlan`, worked out once per field set and
        type: graphql-core collects a list's items' sub-fields once (memoized), so a list of 500 objects
        hands the same field set 500 times."""
        key = (id(grouped_field_set), parent_type)
        entry = self.compiled_field_sets.get(key)
        if entry is not None and entry[0] is grouped_field_set:
            return entry[1]
        compiled = []
        for response_name, field_details_list in grouped_field_set.items():
            node = field_details_list[0].node
            field_def = self.schema.get_field(parent_type, node.name.value)
            plan = None if field_def is None or node.arguments else _leaf_plan(field_def)
            compiled.append((response_name, field_details_list, field_def, plan))
        # The field set is kept with its entry, so its id is not reused while the entry lives.
        self.compiled_field_sets[key] = (grouped_field_set, compiled)
        return compiled

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> AwaitableOrValue[Any] | UndefinedType:
        """A plain leaf field read directly (mutations' fields, executed serially, come here), any other
        as graphql-core does it."""
        if self.plain_fields:
            node = field_details_list[0].node
            field_def = self.schema.get_field(parent_type, node.name.value)
            plan = None if field_def is None or node.arguments else _leaf_plan(field_def)
            if plan is not None:
                assert field_def is not None
                try:
                    return _leaf_value(plan, source, parent_type, node.name.value)
                except Exception as raw_error:
                    self.handle_field_error(raw_error, field_def.type, field_details_list, path)
                    return None
        return super().execute_field(parent_type, source, field_details_list, path, position_context)

    def build_per_event_executor(self, payload: Any) -> EventScopedExecutor:
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, EventScopedExecutor)
        for name, kind in PER_EVENT_CACHES:
            if name in executor.__dict__:
                setattr(executor, name, kind())
        return executor
