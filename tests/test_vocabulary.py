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
