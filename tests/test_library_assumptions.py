"""Every private name of a library the server still relies on, in one place, each with why it stays.

The rest were replaced by public APIs or small modules of our own (rate-limit windows in
`app/store/rate_windows.py`, the Host header in `app/edge.py`, the operation name through
`ExecutionContext.operation_name`). What is left has no public equivalent; when an upgrade renames or
reshapes one of these, this module fails first, naming the assumption, instead of a request failing
somewhere deep in the server.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pcre2
import pcre2._cy as pcre2_compiler
from graphql import GraphQLSchema
from strawberry.schema import Schema
from strawberry.types.execution import ExecutionContext

from app.api.execution import PER_EVENT_CACHES, EventScopedExecutor
from app.api.schema import build_schema
from app.live.reader import buffered

ROOT = Path(__file__).resolve().parent.parent

#: (file, the private name it touches): the complete list. A new private touch-point must be added here,
#: with a test below, or removed.
KNOWN = {
    ("app/api/schema.py", "_schema"),
    ("app/api/schema.py", "_execute_operation"),
    ("app/api/schema.py", "_provided_operation_name"),
    ("app/api/http.py", "_schema"),
    ("app/api/execution.py", "_relevant_sub_fields"),
    ("app/store/regexes.py", "pcre2._cy"),
    ("app/live/reader.py", "_cursor._data"),
}


def test_strawberry_schema_wraps_a_graphql_core_schema_as_schema() -> None:
    """`Schema._schema`: the graphql-core schema that documents are validated and prepared against
    (Strawberry's own code reads it the same way; it has no public accessor)."""
    schema = build_schema()
    assert isinstance(schema._schema, GraphQLSchema)


def test_strawberry_executes_through_execute_operation() -> None:
    """`Schema._execute_operation(execution_context, ...)`: the one coroutine every query runs through,
    which `QUERY_TIMEOUT_SECONDS` wraps (Strawberry has no public hook around the whole execution)."""
    method = Schema.__dict__.get("_execute_operation")
    assert method is not None and inspect.iscoroutinefunction(method)
    assert next(iter(inspect.signature(method).parameters)) == "self"
    assert "execution_context" in inspect.signature(method).parameters


def test_strawberry_keeps_the_operation_name_the_client_sent() -> None:
    """`ExecutionContext._provided_operation_name`: the name as sent, before `operation_name` falls back
    on the first operation's; query checks must select the operation graphql-core will."""
    context = ExecutionContext(
        query="{ a }", schema=build_schema(), allowed_operations=(), provided_operation_name="Named"
    )
    assert context._provided_operation_name == "Named"


def test_graphql_core_executor_has_the_memo_cache_reset_per_event() -> None:
    """The executor's memo cache `_relevant_sub_fields` (and the `@defer`/`@stream` plans, reset only if
    present): emptied for every subscription event so what one event memoized is freed with it (the
    subscription memory leak; `tests/test_subscription_memory.py` measures it)."""
    graphql_core = [c for c in EventScopedExecutor.__mro__ if c.__module__.startswith("graphql.")]
    assert graphql_core, "the executor no longer derives from graphql-core's"
    sources = "".join(inspect.getsource(c) for c in graphql_core)
    assert "self._relevant_sub_fields" in sources, (
        "graphql-core's executor no longer has _relevant_sub_fields"
    )
    assert ("_relevant_sub_fields", dict) in PER_EVENT_CACHES


def test_pcre2_compiles_with_options_turned_off() -> None:
    """`pcre2._cy.compile(pattern, options, disabled_options)`: the public `pcre2.compile` always adds
    ALT_BSUX (`\\uhhhh` as in Python), which MongoDB's PCRE does not have; only the compiler turns it off."""
    parameters = list(inspect.signature(pcre2_compiler.compile).parameters)
    assert parameters[:3] == ["pattern", "options", "disabled_options"]
    assert issubclass(pcre2.PatternError, Exception)


async def test_a_pymongo_change_stream_shows_how_many_changes_it_holds(db: Any) -> None:
    """`AsyncChangeStream._cursor._data`: the changes a change stream fetched and has not handed out yet.
    The event reader pauses only once they are all handled (`app.live.reader.buffered`); PyMongo has no
    public way to ask. Without it the reader never pauses: correct, only costlier."""
    stream = await db.task_events.watch([{"$match": {"operationType": "insert"}}])
    async with stream:
        await db.task_events.insert_many([{"n": 1}, {"n": 2}])
        first = await stream.next()
        assert first["fullDocument"]["n"] == 1
        assert buffered(stream) in (0, 1)  # the second came in the same batch, or is still on the server
        if buffered(stream) == 1:
            await stream.next()
        assert buffered(stream) == 0


def test_no_other_private_name_of_a_library_is_used() -> None:
    """Scans app/ for `._name` on library objects and `from lib._module` imports; each hit must be KNOWN."""
    found: set[tuple[str, str]] = set()
    patterns = {
        "_schema": re.compile(r"\bschema\._schema\b"),
        "_execute_operation": re.compile(r"super\(\)\._execute_operation\b"),
        "_provided_operation_name": re.compile(r"\._provided_operation_name\b"),
        "_relevant_sub_fields": re.compile(r"\"_relevant_sub_fields\""),
        "pcre2._cy": re.compile(r"import pcre2\._cy\b"),
        "_cursor._data": re.compile(r"[\"']_cursor[\"'].*[\"']_data[\"']"),
    }
    private_import = re.compile(r"^\s*(?:from|import)\s+(?!app\b)([\w.]*\._\w+)", re.M)
    for path in sorted((ROOT / "app").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        relative = str(path.relative_to(ROOT))
        for name, pattern in patterns.items():
            if pattern.search(text):
                found.add((relative, name))
        for module in private_import.findall(text):
            found.add((relative, module))
    assert found == KNOWN
