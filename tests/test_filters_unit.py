"""Unit tests of `app.store.filters`: user filters are validated, translated and never run as code.

`compile_filter` is pure (no database), so these are plain unit tests.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app.store.collections import (
    AGENT_TASK_STATES,
    BEHAVIOR_TASK_OUTPUTS,
    META_WORKFLOW_TASKS,
    SUB_TASK_OUTPUTS,
    SUB_TASKS,
    TASK_OUTPUTS,
)
from app.store.filters import FilterError, FilterLimits, compile_filter, parse_filter_json

ATS = AGENT_TASK_STATES


def refused(spec: Any, raw: Any, limits: FilterLimits | None = None) -> FilterError:
    with pytest.raises(FilterError) as info:
        if limits is None:
            compile_filter(spec, raw)
        else:
            compile_filter(spec, raw, limits)
    return info.value


# --- seed 002 examples ----------------------------------------------------------------------------------


def test_none_is_the_empty_filter() -> None:
    assert compile_filter(META_WORKFLOW_TASKS, None) == {}
    assert compile_filter(META_WORKFLOW_TASKS, {}) == {}


def test_seed_examples() -> None:
    assert compile_filter(META_WORKFLOW_TASKS, {"meta_workflow_id": "mw1"}) == {"meta_workflow_id": "mw1"}
    assert compile_filter(SUB_TASK_OUTPUTS, {"is_finalized_step": True}) == {"is_finalized_step": True}
    assert compile_filter(BEHAVIOR_TASK_OUTPUTS, {"processor_subject_ids": {"$in": ["agent1"]}}) == {
        "processor_subject_ids": {"$in": ["agent1"]}
    }


def test_task_id_is_a_normal_field_on_sub_tasks_but_the_id_elsewhere() -> None:
    assert compile_filter(SUB_TASKS, {"task_id": "meta123"}) == {"task_id": "meta123"}
    assert compile_filter(META_WORKFLOW_TASKS, {"task_id": "meta123"}) == {"_id": "meta123"}
    assert compile_filter(TASK_OUTPUTS, {"task_id": "meta123"}) == {"_id": "meta123"}
    assert compile_filter(ATS, {"task_id": {"$in": ["a", "b"]}}) == {"_id": {"$in": ["a", "b"]}}
    assert compile_filter(SUB_TASKS, {"sub_task_id": "s1"}) == {"_id": "s1"}


def test_id_field_translated_inside_logical_operators() -> None:
    raw = {"$or": [{"task_id": "a"}, {"$and": [{"task_id": "b"}, {"is_finalized": False}]}]}
    assert compile_filter(META_WORKFLOW_TASKS, raw) == {
        "$or": [{"_id": "a"}, {"$and": [{"_id": "b"}, {"is_finalized": False}]}]
    }


def test_id_field_and_underscore_id_together_are_refused() -> None:
    err = refused(META_WORKFLOW_TASKS, {"task_id": "a", "_id": "b"})
    assert str(err) == "'_id' and 'task_id' are the same field at filter; combine them with $and"


# --- each allowed operator ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"status": {"$eq": "ready"}}, {"status": {"$eq": "ready"}}),
        ({"status": {"$ne": "done"}}, {"status": {"$ne": "done"}}),
        ({"attempts": {"$gt": 1, "$lte": 5}}, {"attempts": {"$gt": 1, "$lte": 5}}),
        (
            {"execution_time_seconds": {"$gte": 0.5, "$lt": 10}},
            {"execution_time_seconds": {"$gte": 0.5, "$lt": 10}},
        ),
        ({"status": {"$in": ["a", "b", None]}}, {"status": {"$in": ["a", "b", None]}}),
        ({"status": {"$nin": ["a"]}}, {"status": {"$nin": ["a"]}}),
        ({"last_error": {"$exists": False}}, {"last_error": {"$exists": False}}),
        ({"name": {"$regex": "^build", "$options": "im"}}, {"name": {"$regex": "^build", "$options": "im"}}),
        ({"name": {"$regex": "x+"}}, {"name": {"$regex": "x+"}}),
        ({"status": {"$not": {"$in": ["done"]}}}, {"status": {"$not": {"$in": ["done"]}}}),
        ({"name": {"$not": {"$regex": "^tmp"}}}, {"name": {"$not": {"$regex": "^tmp"}}}),
        ({"dependencies": {"$size": 0}}, {"dependencies": {"$size": 0}}),
        ({"dependencies": {"$type": "array"}}, {"dependencies": {"$type": "array"}}),
        ({"attempts": {"$type": 16}}, {"attempts": {"$type": 16}}),
        ({"attempts": {"$type": ["int", "long"]}}, {"attempts": {"$type": ["int", "long"]}}),
        (
            {"dependencies": {"$elemMatch": {"task_id": "t1", "status_expected": "completed"}}},
            {"dependencies": {"$elemMatch": {"task_id": "t1", "status_expected": "completed"}}},
        ),
        (
            {"dependencies": {"$elemMatch": {"$or": [{"task_id": "t1"}, {"task_id": {"$in": ["t2"]}}]}}},
            {"dependencies": {"$elemMatch": {"$or": [{"task_id": "t1"}, {"task_id": {"$in": ["t2"]}}]}}},
        ),
        ({"dependencies.task_id": "t1"}, {"dependencies.task_id": "t1"}),
        ({"last_error.message": {"$regex": "timeout"}}, {"last_error.message": {"$regex": "timeout"}}),
        ({"input_parameters.depth": {"$gte": 3}}, {"input_parameters.depth": {"$gte": 3}}),
        (
            {"input_parameters": {"a": 1, "b": [1, {"c": None}]}},
            {"input_parameters": {"a": 1, "b": [1, {"c": None}]}},
        ),
        (
            {"input_parameters.items": {"$elemMatch": {"kind": "x", "n": {"$gt": 1}}}},
            {"input_parameters.items": {"$elemMatch": {"kind": "x", "n": {"$gt": 1}}}},
        ),
        ({"last_error.details": None}, {"last_error.details": None}),
    ],
)
def test_allowed_operators(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    assert compile_filter(ATS, raw) == expected


def test_string_list_operators() -> None:
    spec = BEHAVIOR_TASK_OUTPUTS
    assert compile_filter(spec, {"processor_subject_ids": "agent1"}) == {"processor_subject_ids": "agent1"}
    assert compile_filter(spec, {"processor_subject_ids": ["a", "b"]}) == {
        "processor_subject_ids": ["a", "b"]
    }
    assert compile_filter(spec, {"processor_subject_ids": {"$all": ["a", "b"]}}) == {
        "processor_subject_ids": {"$all": ["a", "b"]}
    }
    assert compile_filter(spec, {"processor_subject_ids": {"$elemMatch": {"$regex": "^agent"}}}) == {
        "processor_subject_ids": {"$elemMatch": {"$regex": "^agent"}}
    }
    assert compile_filter(spec, {"processor_subject_ids": {"$size": 2}}) == {
        "processor_subject_ids": {"$size": 2}
    }
    err = refused(spec, {"processor_subject_ids": {"$in": [1]}})
    assert str(err) == "expected a string or a list of strings at filter.processor_subject_ids.$in[0], got 1"
    err = refused(spec, {"processor_subject_ids": {"$elemMatch": {"$eq": 3}}})
    assert str(err) == "expected a string at filter.processor_subject_ids.$elemMatch.$eq, got 3"


def test_logical_operators() -> None:
    raw = {
        "$and": [{"status": "ready"}],
        "$or": [{"priority": "high"}, {"attempts": 0}],
        "$nor": [{"name": "x"}],
    }
    assert compile_filter(ATS, raw) == raw
    assert str(refused(ATS, {"$or": []})) == "$or expects a non-empty list of filter objects at filter.$or"
    assert (
        str(refused(ATS, {"$and": {"status": "x"}}))
        == "$and expects a non-empty list of filter objects at filter.$and"
    )
    assert (
        str(refused(ATS, {"$nor": ["x"]})) == "$nor items must be JSON objects, got string at filter.$nor[0]"
    )


# --- code never runs ------------------------------------------------------------------------------------

CODE_OPS = ["$where", "$function", "$accumulator", "$expr"]


def code_message(op: str, where: str) -> str:
    return f"operator '{op}' is not allowed (JavaScript is never run); found at {where}"


@pytest.mark.parametrize("op", CODE_OPS)
@pytest.mark.parametrize(
    ("build", "where"),
    [
        (lambda op: {op: "sleep(1000) || true"}, "filter"),
        (lambda op: {"$and": [{"status": "x"}, {op: "true"}]}, "filter.$and[1]"),
        (lambda op: {"$or": [{"$nor": [{op: {"body": "x"}}]}]}, "filter.$or[0].$nor[0]"),
        (
            lambda op: {"dependencies": {"$elemMatch": {op: "this.task_id == 1"}}},
            "filter.dependencies.$elemMatch",
        ),
        (lambda op: {"status": {"$not": {op: "true"}}}, "filter.status.$not"),
        (lambda op: {"status": {op: "true"}}, "filter.status"),
        (lambda op: {"input_parameters": {"a": {"b": {op: "x"}}}}, "filter.input_parameters.a.b"),
        (lambda op: {"input_parameters": {"$eq": {"k": [{op: "x"}]}}}, "filter.input_parameters.$eq.k[0]"),
        (lambda op: {"input_parameters.k": {"$in": [{op: "x"}]}}, "filter.input_parameters.k.$in[0]"),
    ],
)
def test_code_operators_are_refused_everywhere(op: str, build: Any, where: str) -> None:
    err = refused(ATS, build(op))
    assert str(err) == code_message(op, where)
    assert err.path == where


def test_code_operator_refused_even_on_an_unknown_field() -> None:
    # Refused before the field is even looked at.
    assert str(refused(SUB_TASKS, {"nope": {"$where": "1"}})) == code_message("$where", "filter.nope")


@pytest.mark.parametrize("op", ["$foo", "$text", "$jsonSchema", "$comment", "$lookup", "$search", "$mod"])
def test_unknown_operators(op: str) -> None:
    err = refused(ATS, {"status": {op: "x"}})
    assert str(err) == f"unknown operator '{op}' at filter.status"
    assert err.path == "filter.status"
    assert str(refused(ATS, {op: "x"})) == f"unknown operator '{op}' at filter"


def test_dollar_keys_inside_literals_are_refused() -> None:
    assert str(refused(ATS, {"input_parameters": {"a": {"$gt": 1, "b": 2}}})) == (
        "unknown operator '$gt' at filter.input_parameters.a"
    )
    assert str(refused(ATS, {"input_parameters": {"$eq": {"$foo": 1}}})) == (
        "unknown operator '$foo' at filter.input_parameters.$eq"
    )


def test_logical_operator_inside_field_operators_is_unknown() -> None:
    assert (
        str(refused(ATS, {"status": {"$and": [{"$eq": "x"}]}})) == "unknown operator '$and' at filter.status"
    )


# --- fields ---------------------------------------------------------------------------------------------


def test_unknown_field_names_field_collection_and_allowed_fields() -> None:
    err = refused(SUB_TASKS, {"foo": 1})
    assert str(err) == (
        "unknown field 'foo' on sub_tasks; allowed: behavior_dag_data, behavior_task_ids, "
        "behavior_workflow_id, is_finalized, personality_type, personality_workflow_id, prev_sub_task_id, "
        "sub_task_id, task_id"
    )
    assert err.path == "filter"
    nested = refused(SUB_TASKS, {"$or": [{"task_id": "x"}, {"bar": 1}]})
    assert str(nested).startswith(
        "unknown field 'bar' on sub_tasks at filter.$or[1]; allowed: behavior_dag_data"
    )


def test_unknown_sub_field_of_an_object_list() -> None:
    err = refused(ATS, {"dependencies": {"$elemMatch": {"task_id": "x", "secret": 1}}})
    assert str(err).startswith(
        "unknown field 'dependencies.secret' on agent_task_states at filter.dependencies.$elemMatch"
    )
    assert str(refused(ATS, {"last_error.nope": 1})).startswith(
        "unknown field 'last_error.nope' on agent_task_states;"
    )


def test_sub_paths_of_non_json_fields_are_unknown() -> None:
    assert str(refused(META_WORKFLOW_TASKS, {"meta_workflow_id.x": "a"})).startswith(
        "unknown field 'meta_workflow_id.x' on meta_workflow_tasks;"
    )


@pytest.mark.parametrize(
    "key", ["input_parameters..a", "input_parameters.$x", "input_parameters.a\x00", ".a", "a."]
)
def test_invalid_field_paths(key: str) -> None:
    err = refused(ATS, {key: 1})
    assert str(err).startswith("invalid field path ")
    assert str(err).endswith(
        " at filter: segments must be non-empty, must not start with '$' and must not contain NUL"
    )


def test_mixed_operator_and_plain_keys() -> None:
    err = refused(ATS, {"input_parameters": {"$eq": 1, "a": 2}})
    assert str(err) == (
        "cannot mix operators and plain keys in one object at filter.input_parameters; "
        "use either an operator document or a literal value"
    )
    assert err.path == "filter.input_parameters"


def test_dict_literal_only_for_document_fields() -> None:
    assert str(refused(ATS, {"status": {"a": 1}})) == "expected a string at filter.status, got a object"


# --- values ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"is_finalized": "true"}, "expected a boolean at filter.is_finalized, got the string 'true'"),
        ({"is_finalized": 1}, "expected a boolean at filter.is_finalized, got 1"),
        ({"is_finalized": {"$ne": 0}}, "expected a boolean at filter.is_finalized.$ne, got 0"),
        ({"attempts": {"$gt": "3"}}, "expected a number at filter.attempts.$gt, got the string '3'"),
        ({"attempts": True}, "expected a number at filter.attempts, got true"),
        ({"attempts": {"$in": [1, False]}}, "expected a number at filter.attempts.$in[1], got false"),
        ({"status": 3}, "expected a string at filter.status, got 3"),
        ({"status": {"$in": ["a", ["b"]]}}, "expected a string at filter.status.$in[1], got a list"),
        ({"status": ["a"]}, "expected a string at filter.status, got a list"),
        ({"last_error": {"$exists": 1}}, "$exists expects true or false at filter.last_error.$exists"),
        (
            {"dependencies": {"$size": -1}},
            "$size expects an integer from 0 to 2147483647 at filter.dependencies.$size",
        ),
        (
            {"dependencies": {"$size": True}},
            "$size expects an integer from 0 to 2147483647 at filter.dependencies.$size",
        ),
        (
            {"dependencies": {"$size": 1.5}},
            "$size expects an integer from 0 to 2147483647 at filter.dependencies.$size",
        ),
        ({"status": {"$in": "a"}}, "$in expects a list, got string at filter.status.$in"),
        ({"status": {"$all": {"a": 1}}}, "$all expects a list, got object at filter.status.$all"),
        (
            {"status": {"$type": "bogus"}},
            '$type expects a BSON type alias (such as "string") or type number at filter.status.$type',
        ),
        (
            {"status": {"$type": True}},
            '$type expects a BSON type alias (such as "string") or type number at filter.status.$type',
        ),
        (
            {"status": {"$not": "x"}},
            '$not expects an operator document such as {"$eq": …} at filter.status.$not',
        ),
        (
            {"status": {"$not": {"a": 1}}},
            '$not expects an operator document such as {"$eq": …} at filter.status.$not',
        ),
        (
            {"status": {"$elemMatch": {"a": 1}}},
            "$elemMatch on 'status' takes an operator document such as {\"$eq\": …} "
            "at filter.status.$elemMatch",
        ),
        (
            {"dependencies": {"$elemMatch": []}},
            "$elemMatch expects a non-empty JSON object at filter.dependencies.$elemMatch",
        ),
        ({"input_parameters.x": float("nan")}, "numbers must be finite at filter.input_parameters.x"),
        (
            {"input_parameters.x": {"$gt": float("inf")}},
            "numbers must be finite at filter.input_parameters.x.$gt",
        ),
        (
            {"execution_time_seconds": {"$lt": float("-inf")}},
            "numbers must be finite at filter.execution_time_seconds.$lt",
        ),
        ({"input_parameters.x": 2**70}, "integer is out of the 64-bit range at filter.input_parameters.x"),
        ({"input_parameters.x": (1, 2)}, "value of type tuple is not allowed at filter.input_parameters.x"),
        (
            {"input_parameters.x": {1: "a"}},
            "object keys must be strings, got number at filter.input_parameters.x",
        ),
    ],
)
def test_wrong_values(raw: dict[str, Any], message: str) -> None:
    spec = SUB_TASKS if "is_finalized" in raw else ATS
    assert str(refused(spec, raw)) == message


def test_regex_rules() -> None:
    assert str(refused(ATS, {"name": {"$regex": "(unclosed"}})).startswith(
        "invalid regular expression at filter.name.$regex: missing closing parenthesis (at character 9)"
    )
    assert str(refused(ATS, {"name": {"$regex": "a" * 257}})) == (
        "regular expression is longer than 256 characters at filter.name.$regex"
    )
    assert compile_filter(ATS, {"name": {"$regex": "a" * 256}}) == {"name": {"$regex": "a" * 256}}
    assert (
        str(refused(ATS, {"name": {"$regex": 5}}))
        == "$regex expects a string, got number at filter.name.$regex"
    )
    assert str(refused(ATS, {"name": {"$options": "i"}})) == (
        "$options is only allowed next to $regex at filter.name.$options"
    )
    assert str(refused(ATS, {"name": {"$regex": "a", "$options": "ig"}})) == (
        "$options may only hold the letters i, m, s and x at filter.name.$options"
    )
    limits = FilterLimits(max_regex_length=3)
    assert str(refused(ATS, {"name": {"$regex": "abcd"}}, limits)).startswith(
        "regular expression is longer than 3"
    )


def test_in_list_limit() -> None:
    limits = FilterLimits(max_in_items=3)
    assert compile_filter(ATS, {"status": {"$in": ["a", "b", "c"]}}, limits) == {
        "status": {"$in": ["a", "b", "c"]}
    }
    err = refused(ATS, {"status": {"$nin": ["a", "b", "c", "d"]}}, limits)
    assert str(err) == "$nin has more than 3 items at filter.status.$nin"


# --- datetimes ------------------------------------------------------------------------------------------


def test_datetime_strings_become_utc_datetimes() -> None:
    out = compile_filter(
        ATS,
        {
            "created_at": {"$gte": "2023-10-26T14:00:00Z", "$lt": "2023-10-26T16:30:00+02:00"},
            "updated_at": "2023-10-26T14:00:00.250+00:00",
            "expires_at": {"$in": ["2024-01-01T00:00:00", None]},
            "last_error.timestamp": {"$ne": "2023-10-26"},
        },
    )
    assert out == {
        "created_at": {
            "$gte": datetime(2023, 10, 26, 14, 0, tzinfo=UTC),
            "$lt": datetime(2023, 10, 26, 14, 30, tzinfo=UTC),
        },
        "updated_at": datetime(2023, 10, 26, 14, 0, 0, 250000, tzinfo=UTC),
        "expires_at": {"$in": [datetime(2024, 1, 1, tzinfo=UTC), None]},
        "last_error.timestamp": {"$ne": datetime(2023, 10, 26, tzinfo=UTC)},
    }
    lt = out["created_at"]["$lt"]
    assert lt.utcoffset() == timedelta(0)
    assert lt.tzinfo is UTC


def test_datetime_with_negative_offset() -> None:
    out = compile_filter(ATS, {"started_at": "2023-10-26T09:00:00-05:00"})
    assert out["started_at"] == datetime(2023, 10, 26, 9, tzinfo=timezone(timedelta(hours=-5)))
    assert out["started_at"].tzinfo is UTC


@pytest.mark.parametrize("bad", ["yesterday", "", 1698328800, True, "2023-13-40T00:00:00Z"])
def test_bad_datetimes(bad: Any) -> None:
    err = refused(ATS, {"created_at": {"$gt": bad}})
    assert str(err).startswith(
        'expected an ISO-8601 timestamp such as "2023-10-26T14:00:00Z" at filter.created_at.$gt'
    )


def test_datetime_error_message() -> None:
    assert str(refused(ATS, {"created_at": "soon"})) == (
        'expected an ISO-8601 timestamp such as "2023-10-26T14:00:00Z" at filter.created_at, '
        "got the string 'soon'"
    )


# --- limits ---------------------------------------------------------------------------------------------


def nested_and(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"status": "x"}
    for _ in range(levels - 1):
        doc = {"$and": [doc]}
    return doc


def test_depth_limit() -> None:
    compile_filter(ATS, nested_and(6))
    err = refused(ATS, nested_and(7))
    assert str(err) == "filter is nested too deep (more than 6 levels)"
    assert str(refused(ATS, {"input_parameters": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}})) == (
        "filter is nested too deep (more than 6 levels)"
    )
    assert str(refused(ATS, nested_and(3), FilterLimits(max_depth=2))) == (
        "filter is nested too deep (more than 2 levels)"
    )


def test_arrays_nested_in_arrays_count_as_levels() -> None:
    deep: Any = 1
    for _ in range(10):
        deep = [deep]
    assert str(refused(ATS, {"input_parameters.x": deep})) == "filter is nested too deep (more than 6 levels)"


def test_hostile_depth_is_refused_without_recursion() -> None:
    deep: Any = {"status": "x"}
    for _ in range(100_000):
        deep = {"$and": [deep]}
    assert str(refused(ATS, deep)) == "filter is nested too deep (more than 6 levels)"


def test_node_limit() -> None:
    ok = {"$or": [{"status": f"s{i}"} for i in range(99)]}  # 1 + 99 * 2 = 199 nodes
    compile_filter(ATS, ok)
    big = {"$or": [{"status": f"s{i}"} for i in range(100)]}  # 201 nodes
    assert str(refused(ATS, big)) == "filter is too large (more than 200 keys and values)"
    assert str(refused(ATS, {"status": {"$in": list(map(str, range(5000)))}})) == (
        "filter is too large (more than 200 keys and values)"
    )


def test_byte_limit() -> None:
    assert (
        str(refused(ATS, {"status": "x" * 20_000})) == "filter is too large (more than 16384 bytes as JSON)"
    )
    assert str(refused(ATS, {"status": "é" * 9_000})) == "filter is too large (more than 16384 bytes as JSON)"
    limits = FilterLimits(max_bytes=30)
    assert str(refused(ATS, {"status": "abcdefghijklmnopqrstuvwxyz"}, limits)) == (
        "filter is too large (more than 30 bytes as JSON)"
    )


def test_limits_checked_before_anything_else() -> None:
    # A too-large document is refused as such even though it also names an unknown field.
    assert str(refused(ATS, {"nope": "x" * 20_000})).startswith("filter is too large")


# --- shape ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "got"), [([{"status": "x"}], "list"), ("status", "string"), (3, "number"), (True, "boolean")]
)
def test_top_level_must_be_an_object(raw: Any, got: str) -> None:
    err = refused(ATS, raw)
    assert str(err) == f"filter must be a JSON object, got {got}"
    assert err.path == "filter"


def test_input_is_not_mutated_and_result_is_fresh() -> None:
    raw = {
        "task_id": {"$in": ["a"]},
        "created_at": {"$gt": "2023-10-26T14:00:00Z"},
        "input_parameters": {"nested": {"list": [1, 2]}},
        "$or": [{"status": "x"}],
    }
    before = copy.deepcopy(raw)
    out = compile_filter(ATS, raw)
    assert raw == before
    assert out["input_parameters"] is not raw["input_parameters"]
    assert out["input_parameters"]["nested"]["list"] is not raw["input_parameters"]["nested"]["list"]
    assert out["_id"]["$in"] is not raw["task_id"]["$in"]
    assert out["$or"][0] is not raw["$or"][0]
    out["$or"][0]["status"] = "changed"
    assert raw == before


def test_filter_error_is_a_value_error_with_path() -> None:
    err = refused(ATS, {"status": {"$in": ["a", "b", 3]}})
    assert isinstance(err, ValueError)
    assert err.path == "filter.status.$in[2]"
    assert str(err) == "expected a string at filter.status.$in[2], got 3"


# --- parse_filter_json ----------------------------------------------------------------------------------


def test_parse_filter_json() -> None:
    assert parse_filter_json('{"status": "x"}') == {"status": "x"}
    assert parse_filter_json(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    with pytest.raises(FilterError) as info:
        parse_filter_json("{nope")
    assert str(info.value).startswith(
        "filter is not valid JSON: Expecting property name enclosed in double quotes"
    )
    assert info.value.path == "filter"
    with pytest.raises(FilterError, match=r"^filter is not valid JSON: NaN is not a JSON number$"):
        parse_filter_json('{"a": NaN}')
    with pytest.raises(FilterError, match=r"^filter is not valid JSON: -Infinity is not a JSON number$"):
        parse_filter_json('{"a": -Infinity}')
    with pytest.raises(FilterError, match=r"^filter is not valid JSON: "):
        parse_filter_json(b"\xff\xfe\x00")


def test_parse_then_compile_a_rest_body() -> None:
    body = json.dumps({"meta_workflow_id": "mw1", "task_id": {"$ne": None}}).encode()
    assert compile_filter(META_WORKFLOW_TASKS, parse_filter_json(body)) == {
        "meta_workflow_id": "mw1",
        "_id": {"$ne": None},
    }
