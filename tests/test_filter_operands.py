"""The filter validator against real mongod: what it accepts, mongod runs; what it refuses, it says why.

Each case goes through `compile_filter` and, whatever the validator decided, to mongod as well (the raw
filter, through the driver). Cases marked "both" are refused by mongod too; "ours" are refused on purpose
although mongod would run them (nested quantifiers that backtrack catastrophically, stricter operands).
Then the same refusals over GraphQL and REST, and the time limit on filter queries (FILTER_MAX_TIME_MS).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pymongo.errors import OperationFailure

from app.store.collections import AGENT_TASK_STATES
from app.store.filters import FilterError, compile_filter
from app.store.regexes import check_regex
from tests.conftest import GraphQLClient

OK, BOTH, OURS = "ok", "both", "ours"

CASES: list[tuple[dict[str, Any], str]] = [
    # Regular expressions: PCRE, not Python's `re`.
    ({"name": {"$regex": r"\p{L}+"}}, OK),
    ({"name": {"$regex": r"\p{Greek}"}}, OK),
    ({"name": {"$regex": r"[[:alpha:]]+\d{2,}"}}, OK),
    ({"name": {"$regex": r"(?<n>a)\k<n>"}}, OK),
    ({"name": {"$regex": r"\x{41}"}}, OK),
    ({"name": {"$regex": r"(?<=ab)c"}}, OK),
    ({"name": {"$regex": r"^build", "$options": "imsx"}}, OK),
    ({"name": {"$regex": "(?x) a # comment\n b"}}, OK),
    ({"name": {"$regex": r"(ab?){3}"}}, OK),
    ({"name": {"$regex": r"\u0041"}}, BOTH),
    ({"name": {"$regex": r"\L"}}, BOTH),
    ({"name": {"$regex": "(unclosed"}}, BOTH),
    ({"name": {"$regex": "a)"}}, BOTH),
    ({"name": {"$regex": r"a{2,1}"}}, BOTH),
    ({"name": {"$regex": r"(?<=a+)b"}}, BOTH),
    ({"name": {"$regex": r"(?<=a{1,3})b"}}, BOTH),
    ({"name": {"$regex": r"\N{U+0041}"}}, BOTH),
    ({"name": {"$regex": r"\p{sc=Greek}"}}, BOTH),
    ({"name": {"$regex": r"(?^)a"}}, BOTH),
    ({"name": {"$regex": r"(*napla:a)"}}, BOTH),
    ({"name": {"$regex": r"(?aD)\d"}}, BOTH),
    ({"name": {"$regex": r"\Qa"}}, BOTH),
    ({"name": {"$regex": "a # runs to the end", "$options": "x"}}, BOTH),
    ({"name": {"$regex": "a\x00b"}}, BOTH),
    ({"name": {"$regex": r"x{99999}"}}, BOTH),
    ({"name": {"$regex": r"(.*a){25}"}}, OURS),
    ({"name": {"$regex": r"(a+)+$"}}, OURS),
    ({"name": {"$regex": r"(\w+\s?)*"}}, OURS),
    ({"name": {"$not": {"$regex": r"(a*)*b"}}}, OURS),
    # $size: MongoDB reads it as a 32-bit integer.
    ({"dependencies": {"$size": 2147483647}}, OK),
    ({"dependencies": {"$size": 0}}, OK),
    ({"dependencies": {"$size": 2147483648}}, BOTH),
    ({"dependencies": {"$size": -1}}, BOTH),
    ({"dependencies": {"$size": 2.5}}, BOTH),
    ({"dependencies": {"$size": 2.0}}, OURS),
    # $type: aliases and the codes MongoDB knows.
    ({"name": {"$type": "string"}}, OK),
    ({"name": {"$type": [2, "null", -1, 127]}}, OK),
    ({"name": {"$type": 0}}, BOTH),
    ({"name": {"$type": 20}}, BOTH),
    ({"name": {"$type": 128}}, BOTH),
    ({"name": {"$type": []}}, BOTH),
    # Logical operators, $not, $exists, $in, $all, $elemMatch.
    ({"$or": [{"name": "a"}, {"status": "pending"}]}, OK),
    ({"$or": []}, BOTH),
    ({"name": {"$not": {}}}, BOTH),
    ({"name": {"$options": "i"}}, BOTH),
    ({"name": {"$exists": True}}, OK),
    ({"name": {"$exists": 1}}, OURS),
    ({"name": {"$in": ["a", "b"]}}, OK),
    ({"name": {"$in": [{"$regex": "a"}]}}, BOTH),
    ({"name": {"$nin": []}}, OK),
    ({"dependencies": {"$all": []}}, OK),
    ({"dependencies": {"$elemMatch": {"task_id": "t1", "status_expected": "completed"}}}, OK),
    ({"dependencies": {"$elemMatch": {}}}, OURS),
    # Numbers: 64-bit integers and finite doubles only.
    ({"attempts": {"$gte": 2**63 - 1}}, OK),
    ({"attempts": {"$lt": -(2**63)}}, OK),
    ({"attempts": {"$gt": 2**63}}, BOTH),
    ({"execution_time_seconds": {"$lte": 1.5e308}}, OK),
    ({"created_at": {"$gte": "2024-01-01T00:00:00Z"}}, OK),
]


@pytest.mark.parametrize(("raw", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
async def test_validator_agrees_with_mongod(db: Any, raw: dict[str, Any], expected: str) -> None:
    collection = db[AGENT_TASK_STATES.name]
    await collection.insert_one({"_id": "t1", "name": "Abc", "dependencies": [{"task_id": "t1"}]})
    try:
        compiled = compile_filter(AGENT_TASK_STATES, raw)
    except FilterError as exc:
        refusal: FilterError | None = exc
    else:
        refusal = None
    if expected == OK:
        assert refusal is None, refusal
        await collection.find(compiled).to_list()  # mongod runs it
        return
    assert refusal is not None, f"validator accepted {raw!r}"
    assert str(refusal) and str(refusal)[-1] != " "
    try:
        await collection.find(raw).to_list()  # the raw filter, as if nothing had checked it
    except (OperationFailure, OverflowError, ValueError):
        mongod_refuses = True
    else:
        mongod_refuses = False
    assert mongod_refuses is (expected == BOTH), f"mongod {'refuses' if mongod_refuses else 'runs'} {raw!r}"


STATES = "query($f: JSON) { agentTasks(filter: $f) { totalCount edges { node { id } } } }"


async def test_regex_and_operand_refusals_over_graphql(gql: GraphQLClient) -> None:
    error = await gql.error(STATES, {"f": {"name": {"$regex": r"\u0041"}}})
    assert error["extensions"]["code"] == "BAD_FILTER"
    assert error["message"].startswith("invalid regular expression at filter.name.$regex: PCRE2 does not")
    error = await gql.error(STATES, {"f": {"name": {"$regex": "(.*a){25}"}}})
    assert error["extensions"]["code"] == "BAD_FILTER"
    assert "nested quantifiers" in error["message"]
    error = await gql.error(STATES, {"f": {"dependencies": {"$size": 2147483648}}})
    assert error == {
        "message": "$size expects an integer from 0 to 2147483647 at filter.dependencies.$size",
        "locations": error["locations"],
        "path": ["agentTasks"],
        "extensions": {"code": "BAD_FILTER"},
    }
    data = await gql.data(STATES, {"f": {"name": {"$regex": r"^\p{L}"}}})
    assert data["agentTasks"]["totalCount"] == 0


async def test_regex_and_operand_refusals_over_rest(client: httpx.AsyncClient) -> None:
    response = await client.post("/agent-tasks/query", json={"name": {"$regex": r"\u0041"}})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_filter"
    assert response.json()["error"]["field"] == "filter.name.$regex"
    response = await client.post("/agent-tasks/query", json={"name": {"$regex": "(a+)+$"}})
    assert response.status_code == 400 and "nested quantifiers" in response.json()["error"]["message"]
    response = await client.post("/agent-tasks/query", json={"dependencies": {"$size": 2147483648}})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("$size expects an integer from 0 to 2147483647")
    response = await client.post("/agent-tasks/query", json={"name": {"$regex": r"\p{L}"}})
    assert response.status_code == 200 and response.json()["total"] == 0


@pytest.mark.parametrize(
    "pattern",
    [
        r"[(]+",
        r"\(a+\)+",
        r"(?:ab)+",
        r"(ab?){3}",
        r"\Qa+(\E+",
        r"[\p{L}]+",
        r"[]a+]+",
        r"(a|b)+",
        r"(?i:x)+",
    ],
)
def test_repeated_groups_without_nested_quantifiers_pass(pattern: str) -> None:
    assert check_regex(pattern) is None


@pytest.mark.parametrize(
    "pattern", [r"(a+)+", r"((a)*b)+", r"(?:x|y+){2,}", r"(?<n>\d+)*", r"(a)(?1)+", r"(?x)( a + ){3}"]
)
def test_nested_quantifiers_are_found(pattern: str) -> None:
    assert (check_regex(pattern) or "").startswith("nested quantifiers")
