"""The shape limits of a GraphQL document, measured in one walk that visits each fragment once.

Strawberry's `QueryDepthLimiter` and `MaxAliasesLimiter` walk every fragment spread afresh: a 650-byte
document whose fragments each spread the one before ten times (`F7` → 10^7 expansions) held the event
loop for 27 s before either limiter answered. Here every fragment is summarised once (its depth, the
aliases it brings, the fields it merges into the selection that spreads it) and a spread reuses the
summary, so the walk is linear in the document whatever its spreads multiply to.

Three limits, each with its setting, code and the numbers compared (`extensions`):

- **depth** (`MAX_QUERY_DEPTH`, `QUERY_TOO_DEEP`): how many fields a selection is nested below the
  operation's root field (a root field is at depth 0), fragments and inline fragments being transparent.
  The subtrees of the introspection fields `__schema` and `__type` are not counted: their size is bounded
  by the schema. Fragments spread inside one another, or selections nested, more than `MAX_NESTING` deep
  are refused without being walked further.
- **aliases** (`MAX_QUERY_ALIASES`, `TOO_MANY_ALIASES`): the aliased fields of one operation, a fragment's
  counted every time it is spread (they are that many keys of the answer).
- **work** (`GRAPHQL_VALIDATION_WORK_MAX`, `QUERY_TOO_COMPLEX`): an estimate of what graphql-core's
  validation will do with the document, so that a document that would be slow to validate is refused
  before validation starts. Every node of the document is counted once, weighted by what validating it
  costs (see `SELECTION_WORK` and the others below: a unit is ~100 of graphql-core's function calls), and
  so are the field pairs the overlapping-fields rule compares: in each selection set, the fields sharing
  a response name, with those of the fragments spread there, k fields making k·(k−1)/2 pairs (a thousand
  copies of one field are half a million pairs: 1.2 s of validation). `tests/test_document_limits.py`
  holds the estimate against the function calls that validation really makes, over generated documents.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from graphql import (
    ArgumentNode,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
)

from app.domain import ErrorCode

#: Deepest nesting of selections and fragment spreads walked; deeper is refused (`QUERY_TOO_DEEP`) rather
#: than walked (the walk is recursive; `MAX_QUERY_DEPTH`, 12 by default, refuses such documents anyway).
MAX_NESTING = 150
#: The work units of what validation visits, each about 100 of graphql-core's function calls (measured
#: per kind with 1,000 of it in one document): a selection (field, fragment spread, inline fragment)
#: ~300 calls, an argument ~170, a directive or a variable definition ~120, an operation ~600 (rules
#: that start afresh for each: variable usages, fragment reachability), a pair of fields compared by the
#: overlapping-fields rule ~60 (less for leaves), and a field of a fragment merged into the selection
#: that spreads it.
SELECTION_WORK = 3
ARGUMENT_WORK = 2
DIRECTIVE_WORK = 2
VARIABLE_WORK = 1
OPERATION_WORK = 6
PAIR_WORK = 1
#: Introspection fields whose subtree is not counted toward the depth (bounded by the schema's size).
INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})


@dataclass(frozen=True)
class ShapeLimits:
    """The limits checked here (from `Settings`; the defaults are the settings' defaults)."""

    max_depth: int = 12
    max_aliases: int = 50
    max_work: int = 5_000


@dataclass(frozen=True)
class Shape:
    """What the walk measured: the deepest operation's depth, the most aliases of one operation, the
    validation work estimate."""

    depth: int
    aliases: int
    work: int


def shape_error(message: str, code: ErrorCode, **numbers: int) -> GraphQLError:
    """A request error with a machine-readable `code` and the numbers it compared."""
    return GraphQLError(message, extensions={"code": code, **numbers})


class ShapeRefused(Exception):
    """A limit broken (`measure` raises it; `check_shape` returns its error)."""

    def __init__(self, error: GraphQLError) -> None:
        self.error = error


@dataclass
class _Summary:
    """One selection set (or fragment) as the limits see it."""

    depth: int = 0  # fields nested below this selection set's own fields (0: only leaves)
    aliases: int = 0  # aliases in it, spreads expanded
    names: Counter[str] = field(default_factory=Counter)  # response names merged into this selection set


def check_shape(document: DocumentNode, limits: ShapeLimits) -> GraphQLError | None:
    """The first limit the document breaks, or None. Runs before validation: the document may be invalid
    (unknown fragments, cycles), which is validation's to say."""
    try:
        measure(document, limits)
    except ShapeRefused as refused:
        return refused.error
    return None


def measure(document: DocumentNode, limits: ShapeLimits) -> Shape:
    """Walk the document once (see the module); raises `ShapeRefused` on the first limit broken (nesting
    past `MAX_NESTING` whatever the limits)."""
    walk = _Walk(document, limits)
    depth = aliases = 0
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            walk.charge(OPERATION_WORK + VARIABLE_WORK * len(definition.variable_definitions or ()))
            walk.charge(walk.directives(definition.directives))
            for variable in definition.variable_definitions or ():
                walk.charge(_value_nodes(variable.default_value) + walk.directives(variable.directives))
            summary = walk.selection_set(definition.selection_set, 0)
            name = definition.name.value if definition.name else "anonymous"
            # The root fields are at depth 0, so the operation's depth is its root selection's.
            if summary.depth > limits.max_depth:
                raise ShapeRefused(
                    shape_error(
                        f"The operation '{name}' nests fields {summary.depth} levels below its root field; at"
                        f" most {limits.max_depth} are accepted (MAX_QUERY_DEPTH).",
                        ErrorCode.QUERY_TOO_DEEP,
                        depth=summary.depth,
                        limit=limits.max_depth,
                    )
                )
            if summary.aliases > limits.max_aliases:
                raise ShapeRefused(
                    shape_error(
                        f"The operation '{name}' uses {summary.aliases} aliases (a fragment's counted each"
                        f" time it is spread); at most {limits.max_aliases} are accepted"
                        " (MAX_QUERY_ALIASES).",
                        ErrorCode.TOO_MANY_ALIASES,
                        aliases=summary.aliases,
                        limit=limits.max_aliases,
                    )
                )
            depth, aliases = max(depth, summary.depth), max(aliases, summary.aliases)
    # Fragments no operation spreads are still validated: walk them too (once; the memo holds the rest).
    for name in walk.fragments:
        walk.fragment(name, 0)
    return Shape(depth=depth, aliases=aliases, work=walk.work)


def _value_nodes(node: ValueNode | None) -> int:
    """The values written inside a literal (list items, object fields, recursively), each validated."""
    count = 0
    stack = [node] if node is not None else []
    while stack:
        item = stack.pop()
        if isinstance(item, ListValueNode):
            count += len(item.values)
            stack.extend(item.values)
        elif isinstance(item, ObjectValueNode):
            count += len(item.fields)
            stack.extend(f.value for f in item.fields)
    return count


class _Walk:
    def __init__(self, document: DocumentNode, limits: ShapeLimits) -> None:
        self.limits = limits
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.memo: dict[str, _Summary] = {}
        self.visiting: set[str] = set()
        self.work = 0

    def charge(self, units: int) -> None:
        self.work += units
        if self.work > self.limits.max_work:
            raise ShapeRefused(
                shape_error(
                    f"Validating this document would take more than {self.limits.max_work} units of work"
                    " (GRAPHQL_VALIDATION_WORK_MAX: one per node, per pair of fields sharing a response"
                    f" name in one selection, {OPERATION_WORK} per operation): send a smaller document.",
                    ErrorCode.QUERY_TOO_COMPLEX,
                    limit=self.limits.max_work,
                )
            )

    @staticmethod
    def arguments(arguments: Sequence[ArgumentNode] | None) -> int:
        """The work of a list of arguments: each, and every value written inside it."""
        return sum(ARGUMENT_WORK + _value_nodes(argument.value) for argument in arguments or ())

    def directives(self, directives: Sequence[DirectiveNode] | None) -> int:
        return sum(DIRECTIVE_WORK + self.arguments(d.arguments) for d in directives or ())

    def too_deep(self) -> ShapeRefused:
        return ShapeRefused(
            shape_error(
                f"Selections and fragments are nested more than {MAX_NESTING} deep.",
                ErrorCode.QUERY_TOO_DEEP,
                limit=MAX_NESTING,
            )
        )

    def fragment(self, name: str, nesting: int) -> _Summary:
        """A fragment's summary, walked on first use; an unknown or cyclic spread adds nothing (validation
        refuses the document)."""
        summary = self.memo.get(name)
        if summary is not None:
            return summary
        definition = self.fragments.get(name)
        if definition is None or name in self.visiting:
            return _Summary()
        self.visiting.add(name)
        try:
            self.charge(SELECTION_WORK + self.directives(definition.directives))
            summary = self.selection_set(definition.selection_set, nesting + 1)
        finally:
            self.visiting.discard(name)
        self.memo[name] = summary
        return summary

    def selection_set(self, selection_set: SelectionSetNode, nesting: int) -> _Summary:
        if nesting > MAX_NESTING:
            raise self.too_deep()
        summary = _Summary()
        self.merge(summary, selection_set, nesting, set())
        # The overlapping-fields rule compares the fields sharing a response name pairwise.
        self.charge(PAIR_WORK * sum(k * (k - 1) // 2 for k in summary.names.values() if k > 1))
        return summary

    def merge(self, into: _Summary, selection_set: SelectionSetNode, nesting: int, spread: set[str]) -> None:
        """Add a selection set's selections to `into` (inline fragments merge into their parent; a fragment
        spread twice in one selection set merges once, as validation sees it)."""
        for selection in selection_set.selections:
            self.charge(SELECTION_WORK + self.directives(selection.directives))
            if isinstance(selection, FieldNode):
                self.charge(self.arguments(selection.arguments))
                into.names[(selection.alias or selection.name).value] += 1
                if selection.alias is not None:
                    into.aliases += 1
                if selection.selection_set is not None:
                    child = self.selection_set(selection.selection_set, nesting + 1)
                    into.aliases += child.aliases
                    if selection.name.value not in INTROSPECTION_ROOTS:
                        into.depth = max(into.depth, 1 + child.depth)
            elif isinstance(selection, InlineFragmentNode):
                if nesting + 1 > MAX_NESTING:
                    raise self.too_deep()
                self.merge(into, selection.selection_set, nesting + 1, spread)
            elif isinstance(selection, FragmentSpreadNode):
                if nesting + 1 > MAX_NESTING:
                    raise self.too_deep()
                fragment = self.fragment(selection.name.value, nesting + 1)
                into.aliases += fragment.aliases
                into.depth = max(into.depth, fragment.depth)
                if selection.name.value not in spread:
                    spread.add(selection.name.value)
                    self.charge(len(fragment.names))  # its fields are compared with this selection's
                    into.names.update(fragment.names)
