"""GraphQL documents that were cheap to send and costly to refuse (issue 18, findings 1, 5 and 6): fragment
fan-outs, walks bounded by a work estimate, codes on every refusal, large documents off the event loop and
a CPU budget per client. Work is measured in function calls (`sys.setprofile`), never in seconds."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules

from app.api.document_shape import ShapeLimits, ShapeRefused, measure
from app.api.documents import DocumentLimits, DocumentPreparer, prepare_text
from app.api.schema import _validate, build_schema, validation_target
from app.server import create_app
from app.settings import Settings
from tests.support.servers import ServerGroup, ServerProcess

GRJ = "application/graphql-response+json"
SCHEMA = build_schema()._schema
VALIDATE = partial(_validate, rules=tuple(specified_rules))
LIMITS = DocumentLimits()
#: The largest body the server reads (MAX_BODY_BYTES), minus room for the JSON around the query.
BODY_LIMIT = 1024 * 1024 - 64

#: The bound on the work of preparing one document, in Python function calls (C calls included), at the
#: default limits: parsing costs at most ~40 calls per token plus one per character (a comment or a string
#: is read a character at a time), validation ~10,000 calls plus ~130 per unit of the work estimate
#: (`app/api/document_shape.py`). About 2.5 million calls, ~0.3 s on the 2-core development machine.
CALLS_PER_TOKEN = 40
VALIDATION_CALLS_BASE = 10_000
VALIDATION_CALLS_PER_UNIT = 130


def call_bound(text: str) -> int:
    return (
        CALLS_PER_TOKEN * LIMITS.max_tokens
        + len(text)
        + VALIDATION_CALLS_BASE
        + VALIDATION_CALLS_PER_UNIT * LIMITS.shape.max_work
    )


def count_calls(work: Callable[[], Any]) -> tuple[int, Any]:
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        result = work()
    finally:
        sys.setprofile(None)
    return calls, result


def fan_out(levels: int, fan: int = 10) -> str:
    """The issue's document: `F0 { __typename }`, each `Fi` spreading `F(i-1)` `fan` times (fan^levels
    expansions; 7 levels, 650 bytes, held the event loop 27 s before the fix)."""
    fragments = ["fragment F0 on Query { __typename }"] + [
        f"fragment F{i} on Query {{ {' '.join([f'...F{i - 1}'] * fan)} }}" for i in range(1, levels + 1)
    ]
    return f"query {{ ...F{levels} }}\n" + "\n".join(fragments)


# --- finding 1: a fragment fan-out --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(module_servers: ServerGroup) -> ServerProcess:
    return module_servers.start("doclimits")


async def test_a_fragment_fan_out_is_answered_and_the_server_stays_responsive(server: ServerProcess) -> None:
    """10^10 expansions (~900 bytes): hours of the event loop before the fix, answered at once after. A
    client timeout, not a speed assertion: before the fix the answer never came."""
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        answer, health = await asyncio.gather(
            http.post("/graphql", json={"query": fan_out(10)}), http.get("/healthz")
        )
        assert answer.status_code == 200 and answer.json() == {"data": {"__typename": "Query"}}
        assert health.status_code == 200
        # An alias inside the fan-out counts once per expansion: 10^7 aliases, refused with the numbers.
        aliased = fan_out(7).replace("F0 on Query { __typename }", "F0 on Query { a: __typename }")
        body = (await http.post("/graphql", json={"query": aliased}, headers={"Accept": GRJ})).json()
        assert body["errors"][0]["extensions"] == {
            "code": "TOO_MANY_ALIASES",
            "aliases": 10**7,
            "limit": 50,
        }


def test_the_shape_walk_visits_each_fragment_once() -> None:
    # The work estimate grows with the document's length, not with what its spreads multiply to.
    unlimited = ShapeLimits(max_depth=10**6, max_aliases=10**12, max_work=10**12)
    works = [measure(parse(fan_out(levels)), unlimited).work for levels in (5, 10, 20, 40)]
    assert works == sorted(works) and works[-1] < 10 * works[0], works
    calls, _ = count_calls(lambda: measure(parse(fan_out(40)), unlimited))
    assert calls < 100_000  # 10^40 expansions


# --- finding 1 and 6: no document under the body limit is costly to refuse ----------------------------


def families(rng: random.Random) -> Iterator[tuple[str, str]]:
    """Hostile documents of many shapes, sized at random up to the token and body limits."""
    n = rng.randint(2_000, 9_000)
    yield "aliases", "{" + " ".join(f"a{i}: __typename" for i in range(n)) + "}"
    yield "copies", "{" + " ".join(["agentTasks(first: 1) { totalCount }"] * rng.randint(50, 2_500)) + "}"
    yield "typename copies", "{" + " ".join(["__typename"] * rng.randint(100, 19_000)) + "}"
    yield "unknown directives", "{ __typename " + " ".join(["@a"] * rng.randint(100, 9_900)) + "}"
    yield "skip directives", "{ __typename " + " ".join(["@skip(if: false)"] * rng.randint(100, 3_000)) + "}"
    yield "operations", " ".join(f"query q{i} {{ __typename }}" for i in range(rng.randint(100, 3_900)))
    yield "anonymous operations", " ".join(["{ __typename }"] * rng.randint(100, 6_000))
    yield (
        "spreads of one",
        "{" + " ".join(["...F"] * rng.randint(100, 9_000)) + "} fragment F on Query { id: __typename }",
    )
    k = rng.randint(50, 2_000)
    yield (
        "many fragments",
        "{ "
        + " ".join(f"...G{i}" for i in range(k))
        + " } "
        + " ".join(f"fragment G{i} on Query {{ __typename }}" for i in range(k)),
    )
    yield "inline fragments", "{" + " ".join(["... on Query { __typename }"] * rng.randint(100, 3_000)) + "}"
    yield "fan-out", fan_out(rng.randint(3, 40), rng.randint(2, 30))
    yield "chain", fan_out(rng.randint(100, 3_000), 1)
    yield (
        "variables",
        "query(" + " ".join(f"$v{i}: Int" for i in range(rng.randint(100, 6_000))) + ") { __typename }",
    )
    yield (
        "arguments",
        "{ agentTask(" + " ".join(f"a{i}: 1" for i in range(rng.randint(100, 6_000))) + ") { id } }",
    )
    yield (
        "a literal list",
        "{ agentTasks(filter: [" + ",".join(["1"] * rng.randint(100, 19_000)) + "]) { totalCount } }",
    )
    depth = rng.randint(10, 3_000)
    yield "nesting", '{ agentTask(id: "x") { ' + "parent { " * depth + "id" + " }" * depth + " } }"
    yield "a long comment", "#" + "x" * rng.randint(1_000, BODY_LIMIT - 100) + "\n{ __typename }"
    yield "a long string", '{ agentTask(id: "' + "x" * rng.randint(1_000, BODY_LIMIT - 100) + '") { id } }'


def test_no_document_under_the_body_limit_is_costly_to_prepare() -> None:
    rng = random.Random(18)
    for _round in range(2):
        for family, text in families(rng):
            assert len(text.encode()) <= BODY_LIMIT, family
            calls, prepared = count_calls(lambda text=text: prepare_text(text, SCHEMA, VALIDATE, LIMITS))
            assert calls <= call_bound(text), (family, len(text), calls)
            # Either refused with a code, or valid and within every limit.
            for error in prepared.errors:
                assert error.extensions and error.extensions.get("code"), (family, error.message)


def test_the_work_estimate_bounds_what_validation_does() -> None:
    """Documents the shape check lets through: validation makes at most ~130 calls per unit of work."""
    rng = random.Random(6)
    unlimited = ShapeLimits(max_depth=10**6, max_aliases=10**12, max_work=10**12)
    checked = 0
    for family, text in families(rng):
        try:
            document = parse(text, max_tokens=LIMITS.max_tokens)
        except GraphQLError:
            continue
        try:
            work = measure(document, unlimited).work
        except ShapeRefused:
            continue  # nested past MAX_NESTING: refused before validation
        if work > LIMITS.shape.max_work:
            continue  # refused before validation
        calls, _ = count_calls(lambda document=document: VALIDATE(SCHEMA, document))
        assert calls <= VALIDATION_CALLS_BASE + VALIDATION_CALLS_PER_UNIT * work, (family, work, calls)
        checked += 1
    assert checked >= 5


# --- finding 5: every refusal of a document has a code -------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ agentTask(id: ", "GRAPHQL_PARSE_FAILED"),
        ("{ nope }", "GRAPHQL_VALIDATION_FAILED"),
        ("{" + " ".join(f"a{i}: __typename" for i in range(7_000)) + "}", "QUERY_TOO_LONG"),
        ("{ " + 'agentTask(id: "x") { ' + "parent { " * 13 + "id" + " }" * 13 + " } }", "QUERY_TOO_DEEP"),
        ("{" + " ".join(f'a{i}: agentTask(id: "x") {{ id }}' for i in range(51)) + "}", "TOO_MANY_ALIASES"),
        ("{" + " ".join(["agentTasks(first: 1) { totalCount }"] * 100) + "}", "QUERY_TOO_COMPLEX"),
        ("{a" * 3000 + "}" * 3000, "QUERY_TOO_DEEP"),
    ],
    ids=["syntax", "validation", "tokens", "depth", "aliases", "work", "parser nesting"],
)
async def test_every_refused_document_has_a_code(server: ServerProcess, query: str, code: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for accept, status in ((GRJ, 400), ("application/json", 200)):
            response = await http.post("/graphql", json={"query": query}, headers={"Accept": accept})
            assert response.status_code == status, response.text
            errors = response.json()["errors"]
            assert errors and all(e["extensions"]["code"] == code for e in errors), errors
            # Sent again, it is refused from the cache with the same answer.
            again = await http.post("/graphql", json={"query": query}, headers={"Accept": accept})
            assert again.json() == response.json()


# --- finding 6: large documents off the event loop, a budget per client --------------------------------


async def test_large_documents_are_prepared_off_the_event_loop() -> None:
    threads: list[threading.Thread] = []

    def recording(schema: GraphQLSchema, document: DocumentNode) -> list[GraphQLError]:
        threads.append(threading.current_thread())
        return VALIDATE(schema, document)

    preparer = DocumentPreparer(recording, DocumentLimits(inline_bytes=100))
    small = await preparer.prepare("{ __typename }", SCHEMA, "a")
    large = await preparer.prepare("{ " + " ".join(["__typename"] * 50) + " }", SCHEMA, "a")
    assert small.document is not None and large.document is not None and not small.errors
    assert threads[0] is threading.current_thread() and threads[1] is not threading.current_thread()
    # A text prepared before is not prepared again.
    await preparer.prepare("{ __typename }", SCHEMA, "b")
    assert len(threads) == 2


async def test_a_large_refused_document_never_reaches_this_processs_parser() -> None:
    """Large texts are checked in a worker process first: one it refuses is answered from what the worker
    found (with its locations), this process's validator never sees it; one it accepts is prepared here,
    in a thread."""
    threads: list[threading.Thread] = []

    def recording(schema: GraphQLSchema, document: DocumentNode) -> list[GraphQLError]:
        threads.append(threading.current_thread())
        return VALIDATE(schema, document)

    preparer = DocumentPreparer(recording, DocumentLimits(inline_bytes=100), validation_target)
    try:
        invalid = "{ " + " ".join(["__typename"] * 50) + " nope }"
        refused = await preparer.prepare(invalid, SCHEMA, "a")
        assert refused.document is None and threads == []
        (error,) = refused.errors
        assert error.extensions == {"code": "GRAPHQL_VALIDATION_FAILED"}
        assert error.message == "Cannot query field 'nope' on type 'Query'."
        assert error.locations is not None and error.locations[0].column == invalid.index("nope") + 1
        too_long = await preparer.prepare("{" + " __typename" * 25_000 + "}", SCHEMA, "a")
        assert too_long.errors[0].extensions == {"code": "QUERY_TOO_LONG", "limit": 20_000}
        assert threads == [] and preparer.pool is not None
        accepted = await preparer.prepare("{ " + " ".join(["__typename"] * 50) + " }", SCHEMA, "a")
        assert accepted.document is not None and not accepted.errors
        assert len(threads) == 1 and threads[0] is not threading.current_thread()
    finally:
        preparer.close()
    assert preparer.pool is None


def distinct_large(i: int) -> str:
    """A valid document over the inline threshold, distinct for each `i`."""
    return f"query Q{i} {{ " + " ".join(f"a{j}: __typename" for j in range(40)) + " }" + " " * 3000


async def test_a_client_over_its_cpu_budget_is_refused_and_others_are_not(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"graphql_prepare_cpu_ms": 1, "graphql_prepare_cpu_window_seconds": 600}
    )
    app = create_app(settings)

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 1234))
        return httpx.AsyncClient(transport=transport, base_url="http://localhost", headers={"Accept": GRJ})

    async with app.router.lifespan_context(app), client("10.0.0.1") as flooder, client("10.0.0.2") as other:
        first = await flooder.post("/graphql", json={"query": distinct_large(0)})
        assert first.status_code == 200 and first.json()["data"]["a0"] == "Query"
        refused = await flooder.post("/graphql", json={"query": distinct_large(1)})
        assert refused.status_code == 429, refused.text
        (error,) = refused.json()["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["limit"] == "1 ms CPU per 600 s"
        assert "GRAPHQL_PREPARE_CPU_MS" in error["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 600
        # What the server has prepared before costs nothing and is still answered.
        assert (await flooder.post("/graphql", json={"query": distinct_large(0)})).status_code == 200
        # Another client has a budget of its own.
        assert (await other.post("/graphql", json={"query": distinct_large(2)})).status_code == 200
