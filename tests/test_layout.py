"""The test suite's own layout: no test module imports another (import-linter cannot express it: a
wildcard stands for a whole module name, not `test_*`). What several modules share lives in
tests/support/ or in conftest.py's fixtures, so running or changing one module never drags in another's
fixtures (which pytest would also collect and run in the importing module)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported(tree: ast.AST) -> set[str]:
    """Every module a file imports, by its full name (`from tests import test_x` names tests.test_x)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            if node.module == "tests":
                names.update(f"tests.{alias.name}" for alias in node.names)
    return names


def is_test_module(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[0] == "tests" and parts[1].startswith("test_")


def test_no_test_module_imports_another() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 50 and TESTS / "support" / "servers.py" in files
    offending = {
        str(path.relative_to(TESTS.parent)): sorted(
            n for n in imported(ast.parse(path.read_text())) if is_test_module(n)
        )
        for path in files
    }
    assert {path: names for path, names in offending.items() if names} == {}


def test_the_check_finds_such_an_import() -> None:
    tree = ast.parse(
        "from tests.test_rest import client\nfrom tests import test_web\nimport tests.support.rest"
    )
    assert sorted(n for n in imported(tree) if is_test_module(n)) == ["tests.test_rest", "tests.test_web"]


def test_the_top_of_tests_holds_only_conftest_and_test_modules() -> None:
    """Helpers live in tests/support/, so a file at the top is a test module (or conftest.py)."""
    others = sorted(
        p.name for p in TESTS.glob("*.py") if p.name != "conftest.py" and not p.name.startswith("test_")
    )
    assert others == []
