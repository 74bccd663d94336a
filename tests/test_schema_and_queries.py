"""The committed SDL matches the code, every type and field is described, and every operation in
`queries/` validates against the schema."""

from __future__ import annotations

import subprocess
import sys

import pytest
from graphql import parse, validate

from app.api.schema import build_schema, export_sdl
from tests.conftest import ROOT

QUERY_FILES = sorted((ROOT / "queries").glob("*.graphql"))


def test_committed_schema_matches_the_code() -> None:
    committed = (ROOT / "schema" / "schema.graphql").read_text(encoding="utf-8")
    assert committed == export_sdl(), "schema/schema.graphql is stale: run `make schema` and commit it"


def test_export_schema_command_prints_the_sdl() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "export-schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout == export_sdl()


def test_every_type_and_field_has_a_description() -> None:
    schema = build_schema()._schema
    missing = []
    for name, gtype in schema.type_map.items():
        if name.startswith("__") or name in ("String", "Int", "Float", "Boolean", "ID"):
            continue
        if not gtype.description:
            missing.append(name)
        for field_name, field in getattr(gtype, "fields", {}).items():
            if not field.description:
                missing.append(f"{name}.{field_name}")
    assert missing == []


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: p.name)
def test_named_operations_validate(path) -> None:
    errors = validate(build_schema()._schema, parse(path.read_text(encoding="utf-8")))
    assert errors == []
