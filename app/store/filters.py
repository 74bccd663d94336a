"""User-supplied MongoDB-style filters: validation against a collection's allow-list, and translation.

A filter arrives from GraphQL (`filter: JSON`) or from a REST `POST /<entity>/query` body. `compile_filter`
checks it against the collection's `CollectionSpec` and returns a fresh, safe MongoDB query:

* only known fields (the seed id field becomes `_id`) and an allow-list of query operators;
* nothing that runs JavaScript or aggregation expressions (`$where`, `$function`, `$accumulator`, `$expr`)
  and no other unknown `$`-key, anywhere in the document, literals included;
* values typed as the field expects (ISO-8601 strings on timestamp fields become UTC `datetime`s);
* bounded size, depth, `$in` lists and regular expressions, checked before anything else;
* regular expressions checked as MongoDB compiles them (PCRE) and without nested quantifiers
  (`app.store.regexes`), and numbers within the range MongoDB takes for their operator (`$size`: int32).

Every refusal is a `FilterError` whose text is one sentence naming the problem and where it is, as a path
like `filter.status.$in[2]`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.store.collections import CollectionSpec, FieldKind
from app.store.regexes import check_regex

__all__ = ["FilterError", "FilterLimits", "compile_filter", "parse_filter_json"]


class FilterError(ValueError):
    """A refused filter; str(err) is one sentence naming the problem and where (`filter.status.$in[2]`)."""

    path: str

    def __init__(self, message: str, path: str = "filter") -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class FilterLimits:
    """How large a filter may be. Depth counts nested JSON objects (and arrays nested directly in arrays)."""

    max_depth: int = 6
    max_nodes: int = 200
    max_bytes: int = 16_384
    max_in_items: int = 1000
    max_regex_length: int = 256


#: Operators that would make MongoDB evaluate user text as code or as an expression.
_CODE_OPERATORS = frozenset({"$where", "$function", "$accumulator", "$expr"})
_LOGICAL_OPERATORS = ("$and", "$or", "$nor")
_FIELD_OPERATORS = frozenset(
    {
        "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists",
        "$regex", "$options", "$not", "$all", "$size", "$elemMatch", "$type",
    }
)  # fmt: skip
_COMPARISONS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
_REGEX_FLAGS = frozenset("imsx")
_TYPE_ALIASES = frozenset(
    {
        "double", "string", "object", "array", "binData", "undefined", "objectId", "bool", "date", "null",
        "regex", "dbPointer", "javascript", "symbol", "javascriptWithScope", "int", "timestamp", "long",
        "decimal", "minKey", "maxKey", "number",
    }
)  # fmt: skip
_TYPE_CODES = frozenset({-1, 127, *range(1, 20)})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT32_MAX = 2**31 - 1
_KINDS_WITH_DOC_LITERALS = frozenset({FieldKind.JSON, FieldKind.OBJECT, FieldKind.OBJECT_LIST})
_NUMBER_KINDS = frozenset({FieldKind.INT, FieldKind.FLOAT})

#: Maps a user field key to its kind and the key to send to MongoDB (raises FilterError when not allowed).
_Resolver = Callable[[str, str], tuple[FieldKind, str]]


class JsonTooDeep(FilterError):
    """JSON nested deeper than the parser goes (a REST body says which limit applies)."""


def parse_filter_json(text: str | bytes) -> Any:
    """Parse a filter sent as JSON text (a REST body or a string argument); `NaN`/`Infinity` are refused."""

    def _no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        # Python's parser gives up (~1,000 levels) before any depth limit is checked: say so plainly.
        raise JsonTooDeep("filter is nested too deep to parse") from None
    except (ValueError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FilterError(f"filter is not valid JSON: {reason}") from exc


def compile_filter(spec: CollectionSpec, raw: Any, limits: FilterLimits = FilterLimits()) -> dict[str, Any]:
    """Validate a user filter for the collection `spec` and return the MongoDB query it means.

    `None` means no filter (`{}`). The result is a new dict: the user's object is never returned or changed.
    """
    if raw is None:
        return {}
    _check_limits(raw, limits)
    if not isinstance(raw, dict):
        raise FilterError(f"filter must be a JSON object, got {_type_name(raw)}")
    compiler = _Compiler(spec, limits)
    return compiler.query(raw, "filter", compiler.top_level_resolver)


# --- size and depth, checked first -----------------------------------------------------------------------


def _check_limits(raw: Any, limits: FilterLimits) -> None:
    """Refuse a filter that is too deep or too large, looking at each node at most once and stopping early.

    Also refuses code operators (`$where` …) as keys anywhere, so no later step can miss one.
    """
    too_deep = FilterError(f"filter is nested too deep (more than {limits.max_depth} levels)")
    nodes = 0
    approx_bytes = 0  # a lower bound of the JSON size, so giant strings are refused without encoding them
    stack: list[tuple[Any, int, bool, str]] = [(raw, 0, False, "filter")]
    while stack:
        value, depth, in_list, path = stack.pop()
        if isinstance(value, dict):
            depth += 1
            if depth > limits.max_depth:
                raise too_deep
            nodes += len(value)
            approx_bytes += 2 + 4 * len(value)
            _check_counts(nodes, approx_bytes, limits)
            for key, item in value.items():
                if isinstance(key, str):
                    approx_bytes += len(key)
                    if key in _CODE_OPERATORS:
                        raise _code_operator_error(key, path)
                    _check_text(key, path)
                stack.append((item, depth, False, f"{path}.{key}"))
        elif isinstance(value, list):
            if in_list or depth == 0:
                depth += 1
                if depth > limits.max_depth:
                    raise too_deep
            approx_bytes += 2 + len(value)
            _check_counts(nodes, approx_bytes, limits)
            stack.extend((item, depth, True, f"{path}[{index}]") for index, item in enumerate(value))
        else:
            nodes += 1
            if isinstance(value, str):
                approx_bytes += len(value) + 2
                _check_text(value, path)
            elif isinstance(value, int) and not isinstance(value, bool):
                approx_bytes += value.bit_length() // 4 + 1
            else:
                approx_bytes += 1
        _check_counts(nodes, approx_bytes, limits)
    try:
        encoded = json.dumps(raw, ensure_ascii=False, separators=(",", ":"), default=repr).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:
        raise _too_many_bytes(limits) from exc
    if len(encoded) > limits.max_bytes:
        raise _too_many_bytes(limits)


def _check_text(text: str, path: str) -> None:
    """Refuse a string MongoDB cannot store: JSON allows lone surrogates (`"\\ud800"`), UTF-8 does not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FilterError(f"strings must be valid Unicode (no lone surrogate) at {path}", path) from exc


def _check_counts(nodes: int, approx_bytes: int, limits: FilterLimits) -> None:
    if nodes > limits.max_nodes:
        raise FilterError(f"filter is too large (more than {limits.max_nodes} keys and values)")
    if approx_bytes > limits.max_bytes:
        raise _too_many_bytes(limits)


def _too_many_bytes(limits: FilterLimits) -> FilterError:
    return FilterError(f"filter is too large (more than {limits.max_bytes} bytes as JSON)")


# --- the compiler ----------------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, spec: CollectionSpec, limits: FilterLimits) -> None:
        self.spec = spec
        self.limits = limits

    # Queries: field keys and logical operators.

    def top_level_resolver(self, key: str, path: str) -> tuple[FieldKind, str]:
        kind = self.spec.kind_of(key)
        if kind is None:
            raise self._unknown_field(key, path)
        return kind, self.spec.storage_path(key)

    def query(self, doc: dict[str, Any], path: str, resolve: _Resolver) -> dict[str, Any]:
        out: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for key, value in doc.items():
            _check_key_type(key, path)
            if key.startswith("$"):
                if key not in _LOGICAL_OPERATORS:
                    raise _operator_error(key, path)
                out[key] = self._logical(key, value, f"{path}.{key}", resolve)
                continue
            _check_field_path(key, path)
            kind, storage = resolve(key, path)
            if storage in out:
                raise FilterError(
                    f"'{key}' and '{sources[storage]}' are the same field at {path}; combine them with $and",
                    path,
                )
            sources[storage] = key
            out[storage] = self.field_value(key, kind, value, f"{path}.{key}")
        return out

    def _logical(self, op: str, value: Any, path: str, resolve: _Resolver) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not value:
            raise FilterError(f"{op} expects a non-empty list of filter objects at {path}", path)
        compiled = []
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if not isinstance(item, dict):
                raise FilterError(
                    f"{op} items must be JSON objects, got {_type_name(item)} at {item_path}", item_path
                )
            compiled.append(self.query(item, item_path, resolve))
        return compiled

    # A field's value: a literal or an operator document.

    def field_value(self, field: str, kind: FieldKind, value: Any, path: str) -> Any:
        if isinstance(value, dict) and value:
            dollar = [key for key in value if isinstance(key, str) and key.startswith("$")]
            if dollar and len(dollar) != len(value):
                raise FilterError(
                    f"cannot mix operators and plain keys in one object at {path}; "
                    "use either an operator document or a literal value",
                    path,
                )
            if dollar:
                return self.operators(field, kind, value, path)
        return self.literal(kind, value, path)

    def operators(self, field: str, kind: FieldKind, doc: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for op, value in doc.items():
            _check_key_type(op, path)
            if not op.startswith("$"):
                raise FilterError(f"expected only operators in the object at {path}, found '{op}'", path)
            if op not in _FIELD_OPERATORS:
                raise _operator_error(op, path)
            op_path = f"{path}.{op}"
            if op in _COMPARISONS:
                out[op] = self.literal(kind, value, op_path)
            elif op in ("$in", "$nin"):
                items = self._list(op, value, op_path)
                out[op] = [self.literal(kind, item, f"{op_path}[{i}]") for i, item in enumerate(items)]
            elif op == "$all":
                items = self._list(op, value, op_path)
                out[op] = [_safe_value(item, f"{op_path}[{i}]") for i, item in enumerate(items)]
            elif op == "$exists":
                if not isinstance(value, bool):
                    raise FilterError(f"$exists expects true or false at {op_path}", op_path)
                out[op] = value
            elif op == "$regex":
                out[op] = self._regex(value, doc.get("$options"), op_path)
            elif op == "$options":
                if "$regex" not in doc:
                    raise FilterError(f"$options is only allowed next to $regex at {op_path}", op_path)
                out[op] = _regex_options(value, op_path)
            elif op == "$not":
                if not (isinstance(value, dict) and value and all(_is_operator_key(k) for k in value)):
                    raise FilterError(
                        f'$not expects an operator document such as {{"$eq": …}} at {op_path}', op_path
                    )
                out[op] = self.operators(field, kind, value, op_path)
            elif op == "$size":
                # MongoDB parses $size as a 32-bit int: 2147483648 is refused there, not matched.
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT32_MAX:
                    raise FilterError(
                        f"$size expects an integer from 0 to {_INT32_MAX} at {op_path}", op_path
                    )
                out[op] = value
            elif op == "$elemMatch":
                out[op] = self._elem_match(field, kind, value, op_path)
            else:  # $type
                out[op] = _type_operand(value, op_path)
        return out

    def _list(self, op: str, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise FilterError(f"{op} expects a list, got {_type_name(value)} at {path}", path)
        if len(value) > self.limits.max_in_items:
            raise FilterError(f"{op} has more than {self.limits.max_in_items} items at {path}", path)
        return value

    def _regex(self, pattern: Any, options: Any, path: str) -> str:
        if not isinstance(pattern, str):
            raise FilterError(f"$regex expects a string, got {_type_name(pattern)} at {path}", path)
        if len(pattern) > self.limits.max_regex_length:
            raise FilterError(
                f"regular expression is longer than {self.limits.max_regex_length} characters at {path}", path
            )
        # As MongoDB runs it (PCRE, not Python's `re`), and without nested quantifiers (app.store.regexes).
        problem = check_regex(pattern, options if isinstance(options, str) else "")
        if problem is not None:
            raise FilterError(f"invalid regular expression at {path}: {problem}", path)
        return pattern

    def _elem_match(self, field: str, kind: FieldKind, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not value:
            raise FilterError(f"$elemMatch expects a non-empty JSON object at {path}", path)
        keys = list(value)
        for key in keys:
            _check_key_type(key, path)
        if all(_is_operator_key(k) and k not in _LOGICAL_OPERATORS for k in keys):
            element_kind = FieldKind.STRING if kind is FieldKind.STRING_LIST else kind
            return self.operators(field, element_kind, value, path)
        if kind in (FieldKind.OBJECT_LIST, FieldKind.OBJECT):

            def resolve_sub(key: str, where: str) -> tuple[FieldKind, str]:
                sub_kind = self.spec.kind_of(f"{field}.{key}")
                if sub_kind is None:
                    raise self._unknown_field(f"{field}.{key}", where)
                return sub_kind, key

            return self.query(value, path, resolve_sub)
        if kind is FieldKind.JSON:
            return self.query(value, path, lambda key, where: (FieldKind.JSON, key))
        raise FilterError(
            f"$elemMatch on '{field}' takes an operator document such as {{\"$eq\": …}} at {path}", path
        )

    # Literals, checked against the field's kind.

    def literal(self, kind: FieldKind, value: Any, path: str) -> Any:
        if value is None:
            return None
        if kind is FieldKind.STRING:
            if not isinstance(value, str):
                raise _expected("a string", value, path)
            return value
        if kind is FieldKind.BOOL:
            if not isinstance(value, bool):
                raise _expected("a boolean", value, path)
            return value
        if kind in _NUMBER_KINDS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _expected("a number", value, path)
            return _safe_value(value, path)
        if kind is FieldKind.DATETIME:
            return _parse_timestamp(value, path)
        if kind is FieldKind.STRING_LIST:
            if isinstance(value, str):
                return value
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                return list(value)
            raise _expected("a string or a list of strings", value, path)
        # JSON, OBJECT, OBJECT_LIST: any JSON value; objects must not hold operators.
        return _safe_value(value, path)

    def _unknown_field(self, key: str, path: str) -> FilterError:
        allowed = ", ".join(sorted({self.spec.id_field, *self.spec.fields}))
        where = "" if path == "filter" else f" at {path}"
        return FilterError(f"unknown field '{key}' on {self.spec.name}{where}; allowed: {allowed}", path)


# --- helpers ---------------------------------------------------------------------------------------------


def _is_operator_key(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("$")


def _check_key_type(key: Any, path: str) -> None:
    if not isinstance(key, str):
        raise FilterError(f"object keys must be strings, got {_type_name(key)} at {path}", path)


def _check_field_path(key: str, path: str) -> None:
    for segment in key.split("."):
        if not segment or segment.startswith("$") or "\x00" in segment:
            raise FilterError(
                f"invalid field path {_short(key)} at {path}: segments must be non-empty, "
                "must not start with '$' and must not contain NUL",
                path,
            )


def _safe_value(value: Any, path: str) -> Any:
    """A deep copy of a JSON literal, refusing operators, non-JSON types and non-finite numbers."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return _checked_int(value, path)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"numbers must be finite at {path}", path)
        return value
    if isinstance(value, list):
        return [_safe_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            _check_key_type(key, path)
            if key.startswith("$"):
                raise _operator_error(key, path)
            if "\x00" in key:
                raise FilterError(f"object keys must not contain NUL at {path}", path)
            out[key] = _safe_value(item, f"{path}.{key}")
        return out
    raise FilterError(f"value of type {type(value).__name__} is not allowed at {path}", path)


def _checked_int(value: int, path: str) -> int:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise FilterError(f"integer is out of the 64-bit range at {path}", path)
    return value


def _regex_options(value: Any, path: str) -> str:
    if not isinstance(value, str) or any(char not in _REGEX_FLAGS for char in value):
        raise FilterError(f"$options may only hold the letters i, m, s and x at {path}", path)
    return value


def _type_operand(value: Any, path: str) -> Any:
    def valid(item: Any) -> bool:
        if isinstance(item, str):
            return item in _TYPE_ALIASES
        return isinstance(item, int) and not isinstance(item, bool) and item in _TYPE_CODES

    if valid(value):
        return value
    if isinstance(value, list) and value and all(valid(item) for item in value):
        return list(value)
    raise FilterError(f'$type expects a BSON type alias (such as "string") or type number at {path}', path)


def _parse_timestamp(value: Any, path: str) -> datetime:
    if isinstance(value, str) and 0 < len(value) <= 64:
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            try:
                return parsed.astimezone(UTC)
            except (OverflowError, ValueError):
                pass
    raise _expected('an ISO-8601 timestamp such as "2023-10-26T14:00:00Z"', value, path)


def _expected(what: str, value: Any, path: str) -> FilterError:
    return FilterError(f"expected {what} at {path}, got {_describe(value)}", path)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return f"a {_type_name(value)}"


def _short(text: str, limit: int = 40) -> str:
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return repr(shown)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _code_operator_error(op: str, path: str) -> FilterError:
    return FilterError(f"operator '{op}' is not allowed (JavaScript is never run); found at {path}", path)


def _operator_error(op: str, path: str) -> FilterError:
    if op in _CODE_OPERATORS:
        return _code_operator_error(op, path)
    return FilterError(f"unknown operator {_short(op)} at {path}", path)
