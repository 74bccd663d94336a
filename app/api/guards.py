"""Checks of a GraphQL request before it is validated or run: operation choice, list lengths, argument
bounds and the estimated cost of the answer.

They run per request (they read the variables, which the validation cache cannot see) and *before*
graphql-core's validation: some documents that pass every limit are costly to validate (a thousand
copies of one field keep `OverlappingFieldsCanBeMerged` busy for a second), so the linear checks here
refuse them first. Every refusal is a `GraphQLError` without a path (a request error, 400 under
`application/graphql-response+json`) whose `extensions` carry a `code` and the numbers compared.

The cost model estimates the size of the answer, counting every field once per item it is selected on:

- a list field multiplies its selection by its size: its `first` argument (the literal, the variable,
  or the argument's default), else the page of the connection it belongs to (`edges`), else
  `list_size` (an unbounded list such as `subTasks`, `behaviorTasks` or `events`);
- an `xFirst` argument (`pendingFirst`) sizes the field's child list `x…` (`pendingTasks`);
- a connection (a field with `first` that is not a list) also costs its page: the documents it reads;
- `totalCount` costs `max_page_size`: it counts a whole list, at least the work of reading a full page
  (so a thousand copies of `agentTasks(first: 0) { totalCount }` are refused, not a thousand counts);
- fragments are costed where they are spread and aliases as the fields they are; introspection fields
  (`__typename`, `__schema`) are free, their size bounded by the schema.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    value_from_ast_untyped,
)
from graphql.pyutils import Undefined

from app.domain import ErrorCode

#: Deepest nesting of selections and fragment spreads costed; deeper is refused (`QUERY_TOO_DEEP`) rather
#: than walked (the walk is recursive; the depth limit, 12 fields, refuses such documents anyway).
MAX_NESTING = 150


@dataclass(frozen=True)
class QueryLimits:
    """The limits checked here (from `Settings`; the defaults are the settings' defaults)."""

    cost_max: int = 100_000
    list_size: int = 20
    max_list_items: int = 1000
    default_page_size: int = 20
    max_page_size: int = 100


def refusal(message: str, code: ErrorCode, **numbers: Any) -> GraphQLError:
    """A request error with a machine-readable `code` and the numbers it compared."""
    return GraphQLError(message, extensions={"code": code, **numbers})


def check_request(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    limits: QueryLimits,
) -> GraphQLError | None:
    """The first reason to refuse this request before validation, or None."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) > 1 and operation_name is None:
        return refusal(
            "The document holds several operations: say which to run with `operationName`.",
            ErrorCode.OPERATION_NAME_REQUIRED,
        )
    operation = next(
        (o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)),
        None,
    )
    if operation is None:
        return None  # Strawberry answers an unknown operation name itself
    if not isinstance(variables, Mapping):
        variables = {}  # not an object: refused when the variables are coerced
    values = _variable_values(operation, variables)
    for name, value in variables.items():
        longest = _longest_list(value)
        if longest > limits.max_list_items:
            return refusal(
                f"The variable `${name}` holds a list of {longest} items; "
                f"at most {limits.max_list_items} are accepted (MAX_LIST_ITEMS).",
                ErrorCode.LIST_TOO_LONG,
                items=longest,
                limit=limits.max_list_items,
            )
    estimator = _Estimator(schema, document, values, limits)
    root = schema.get_root_type(operation.operation)
    if root is None:
        return None  # validation says the schema has no such root
    try:
        cost = estimator.selection_cost(operation.selection_set, root, None, 0)
    except _Refused as refused:
        return refused.error
    if cost > limits.cost_max:
        return refusal(
            f"This operation's estimated cost is {cost}, above the limit of {limits.cost_max} "
            "(QUERY_COST_MAX): ask for smaller pages (`first`) or fewer nested lists.",
            ErrorCode.QUERY_TOO_COSTLY,
            cost=cost,
            limit=limits.cost_max,
        )
    return None


class _Refused(Exception):
    def __init__(self, error: GraphQLError) -> None:
        self.error = error


def _variable_values(operation: OperationDefinitionNode, given: Mapping[str, Any]) -> dict[str, Any]:
    """The variables as given, with the operation's defaults for those that were not."""
    values = dict(given)
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name not in values and definition.default_value is not None:
            values[name] = value_from_ast_untyped(definition.default_value)
    return values


def _longest_list(value: Any) -> int:
    """The length of the longest list inside a JSON value (iteratively: the value may be deep)."""
    longest = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            longest = max(longest, len(item))
            stack.extend(x for x in item if isinstance(x, (list, dict)))
        elif isinstance(item, dict):
            stack.extend(x for x in item.values() if isinstance(x, (list, dict)))
    return longest


def _literal_lists(node: ValueNode) -> Iterator[int]:
    """The lengths of the lists written literally in an argument value."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ListValueNode):
            yield len(item.values)
            stack.extend(item.values)
        elif isinstance(item, ObjectValueNode):
            stack.extend(f.value for f in item.fields)


def _is_size_argument(name: str) -> bool:
    return name == "first" or name.endswith("First")


class _Estimator:
    """Walks one operation's selections (see the module for the model); refuses out-of-bound sizes."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: Mapping[str, Any],
        limits: QueryLimits,
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.limits = limits
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # A fragment's cost depends only on where its fields' lists get their size from: memoized, so a
        # fragment spread many times (or fragments spreading each other) is costed once.
        self.memo: dict[tuple[str, int | None], int] = {}
        self.visiting: set[str] = set()

    def selection_cost(
        self, selection_set: SelectionSetNode, parent: Any, page: int | None, depth: int
    ) -> int:
        if depth > MAX_NESTING:
            raise _Refused(
                refusal(
                    f"Selections and fragments are nested more than {MAX_NESTING} deep.",
                    ErrorCode.QUERY_TOO_DEEP,
                    limit=MAX_NESTING,
                )
            )
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field_cost(selection, parent, page, depth)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selection_cost(selection.selection_set, target or parent, page, depth + 1)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.spread_cost(selection.name.value, page, depth + 1)
        return total

    def spread_cost(self, name: str, page: int | None, depth: int) -> int:
        fragment = self.fragments.get(name)
        if fragment is None or name in self.visiting:
            return 0  # unknown or cyclic: validation refuses the document
        key = (name, page)
        if key not in self.memo:
            target = self.schema.get_type(fragment.type_condition.name.value)
            self.visiting.add(name)
            try:
                self.memo[key] = self.selection_cost(fragment.selection_set, target, page, depth)
            finally:
                self.visiting.discard(name)
        return self.memo[key]

    def field_cost(self, node: FieldNode, parent: Any, page: int | None, depth: int) -> int:
        name = node.name.value
        if name.startswith("__") or not isinstance(parent, (GraphQLObjectType, GraphQLInterfaceType)):
            return 0
        definition = parent.fields.get(name)
        if definition is None:
            return 0  # validation refuses the unknown field
        sizes = self.sizes(node, definition)
        if name == "totalCount":
            return 1 + self.limits.max_page_size
        field_type = get_nullable_type(definition.type)
        if node.selection_set is None:
            return 1
        child_type = get_named_type(field_type)
        if isinstance(field_type, GraphQLList):
            count = sizes.get("first", page if page is not None else self.limits.list_size)
            own, child_page = 0, None
        else:
            count = 1
            own = sizes.get("first", 0)  # a connection reads its page whatever is selected of it
            child_page = sizes.get("first")
        children = 0
        for selection in node.selection_set.selections:
            if isinstance(selection, FieldNode):
                sized = self.sized_child(selection, sizes)
                children += self.field_cost(
                    selection, child_type, child_page if sized is None else sized, depth + 1
                )
            else:  # a fragment: its fields are this field's children
                children += self.selection_cost(
                    SelectionSetNode(selections=(selection,)), child_type, child_page, depth + 1
                )
        return own + count * (1 + children)

    @staticmethod
    def sized_child(selection: FieldNode, sizes: Mapping[str, int]) -> int | None:
        """The size an `xFirst` argument of the parent gives this child list (`pendingTasks`)."""
        for argument, size in sizes.items():
            if argument != "first" and selection.name.value.startswith(argument.removesuffix("First")):
                return size
        return None

    def sizes(self, node: FieldNode, definition: Any) -> dict[str, int]:
        """The field's size arguments (`first`, `pendingFirst`…) as ints, checked against their bounds;
        also refuses literal lists longer than `max_list_items`."""
        sizes: dict[str, int] = {}
        given = {argument.name.value: argument.value for argument in node.arguments or ()}
        for argument in node.arguments or ():
            for length in _literal_lists(argument.value):
                if length > self.limits.max_list_items:
                    raise _Refused(
                        refusal(
                            f"The argument `{argument.name.value}` holds a list of {length} items; at most "
                            f"{self.limits.max_list_items} are accepted (MAX_LIST_ITEMS).",
                            ErrorCode.LIST_TOO_LONG,
                            items=length,
                            limit=self.limits.max_list_items,
                        )
                    )
        for name, arg in definition.args.items():
            if not _is_size_argument(name):
                continue
            value = self.value_of(given.get(name))
            if value is Undefined or value is None:
                default = arg.default_value
                value = default if isinstance(default, int) else self.limits.default_page_size
            if not isinstance(value, int) or isinstance(value, bool):
                continue  # not an Int: validation or variable coercion refuses it
            if not 0 <= value <= self.limits.max_page_size:
                raise _Refused(
                    refusal(
                        f"`{name}` must be between 0 and {self.limits.max_page_size}, got {value}.",
                        ErrorCode.PAGE_SIZE_OUT_OF_RANGE,
                        argument=name,
                        value=value,
                        min=0,
                        max=self.limits.max_page_size,
                    )
                )
            sizes[name] = value
        return sizes

    def value_of(self, node: ValueNode | None) -> Any:
        if node is None:
            return Undefined
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value, Undefined)
        if isinstance(node, NullValueNode):
            return None
        if isinstance(node, IntValueNode):
            try:
                return int(node.value)
            except ValueError:
                return Undefined
        return Undefined
