"""One vocabulary (issue 24): the domain's enums are the only place a status, a priority, a task kind, an
event type or an error code is spelled out; everything else in `app/` names them as enum members.

`test_no_quoted_vocabulary_outside_the_domain` is the lint rule: it walks every module of `app/` with
`ast` and fails on a string constant equal to one of those values (a member is a `str`, so a MongoDB query
or an event built from members stores the same string). Docstrings and messages are not constants equal to
a value, so prose is free to name them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import bson

from app import domain

APP = Path(__file__).resolve().parent.parent / "app"

#: The values no module but `app/domain.py` may quote, and the enum each belongs to.
VOCABULARY: dict[str, str] = {
    **{s.value: f"Status.{s.name}" for s in domain.Status},
    **{e.value: f"EventType.{e.name}" for e in domain.EventType if e is not domain.EventType.OTHER},
    **{p.value: f"Priority.{p.name}" for p in domain.Priority},
    **{k.value: f"TaskKind.{k.name}" for k in domain.TaskKind},
    **{c.value: f"ErrorCode.{c.name}" for c in domain.ErrorCode},
    **{c.rest: f"ErrorCode.{c.name}.rest" for c in domain.ErrorCode},
}

#: (module, value) pairs allowed to quote a value, each with the reason; keep it short.
ALLOWED: dict[tuple[str, str], str] = {
    ("app/api/loaders.py", "sub_task"): "the name of a `Loaders` attribute (the sub-task loader), not a kind",
    ("app/api/loaders.py", "behavior_task"): "the name of a `Loaders` attribute, not a kind",
}


def _constants(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in VOCABULARY:
            yield node.lineno, node.value


def test_no_quoted_vocabulary_outside_the_domain() -> None:
    found = []
    for path in sorted(APP.rglob("*.py")):
        module = path.relative_to(APP.parent).as_posix()
        if module == "app/domain.py":
            continue
        for line, value in _constants(path):
            if (module, value) not in ALLOWED:
                found.append(f"{module}:{line}: {value!r} (use {VOCABULARY[value]})")
    assert not found, "quoted vocabulary outside app/domain.py:\n" + "\n".join(found)


def test_the_rule_catches_a_quoted_status(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        'QUERY = {"status": "in_progress"}\nEVENT = ("STATUS_CHANGED", {})\nOK = "In progress"\n'
    )
    assert [value for _, value in _constants(module)] == ["in_progress", "STATUS_CHANGED"]


def test_members_are_stored_and_read_as_plain_strings() -> None:
    """A member is a `str`: BSON stores its value, and it reads back as the plain string it equals."""
    doc = {"status": domain.Status.IN_PROGRESS, "type": domain.EventType.STATUS_CHANGED}
    decoded = bson.decode(bson.encode(doc))
    assert decoded == {"status": "in_progress", "type": "STATUS_CHANGED"}
    assert type(decoded["status"]) is str and decoded["status"] == domain.Status.IN_PROGRESS


async def test_a_member_written_through_the_driver_is_the_stored_string(db: object) -> None:
    from typing import Any

    collection: Any = db.agent_task_states  # type: ignore[attr-defined]
    await collection.insert_one({"_id": "m", "status": domain.Status.CANCELLED})
    assert await collection.find_one({"status": "cancelled"}) == {"_id": "m", "status": "cancelled"}
    assert await collection.find_one({"status": domain.Status.CANCELLED}) is not None


#: REST's error codes as clients have read them since the REST API shipped: the enum must keep them.
REST_CODES_BEFORE = {
    "bad_json", "bad_filter", "bad_cursor", "bad_parameter", "untrusted_host", "page_size_out_of_range",
    "unauthenticated", "forbidden", "not_found", "refused", "conflict", "payload_too_large", "rate_limited",
    "unsupported_media_type", "invalid", "idempotency_key_reused", "unknown_field", "filter_too_slow",
    "internal", "database_unavailable", "database_timeout",
}  # fmt: skip


def test_rest_and_graphql_codes_come_from_one_enum() -> None:
    from app.rest.errors import ERROR_CODES

    assert all(isinstance(code, domain.ErrorCode) for code in ERROR_CODES)
    assert {code.rest for code in ERROR_CODES} == REST_CODES_BEFORE
    assert all(code.rest == code.value.lower() for code in domain.ErrorCode)
    assert set(domain.ERROR_CODE_DESCRIPTIONS) == set(domain.ErrorCode)
    # Every code GraphQL does not answer says so in its description, which the SDL carries.
    for code in domain.REST_ONLY:
        assert domain.ERROR_CODE_DESCRIPTIONS[code].startswith("REST only")


def test_the_schema_lists_every_code_and_types_the_code_fields() -> None:
    from graphql import GraphQLEnumType, GraphQLNonNull, build_schema

    sdl = (APP.parent / "schema" / "schema.graphql").read_text()
    schema = build_schema(sdl)
    enum = schema.get_type("ErrorCode")
    assert isinstance(enum, GraphQLEnumType)
    assert list(enum.values) == [code.name for code in domain.ErrorCode]
    validation = schema.get_type("ValidationError")
    forbidden = schema.get_type("ForbiddenError")
    assert validation.fields["code"].type is enum  # type: ignore[union-attr]
    forbidden_code = forbidden.fields["code"].type  # type: ignore[union-attr]
    assert isinstance(forbidden_code, GraphQLNonNull) and forbidden_code.of_type is enum


def test_no_quoted_vocabulary_in_the_client() -> None:
    """The client (its own distribution, importing nothing from `app`) names its own enums
    (`client/agent_tasks_client/enums.py`, kept equal to the schema by tests/test_client_schema.py)."""
    client = APP.parent / "client" / "agent_tasks_client"
    found = [
        f"{path.relative_to(client.parent).as_posix()}:{line}: {value!r}"
        for path in sorted(client.rglob("*.py"))
        if path.name != "enums.py"
        for line, value in _constants(path)
    ]
    assert not found, "quoted vocabulary in the client outside enums.py:\n" + "\n".join(found)
