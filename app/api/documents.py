"""GraphQL documents prepared once per text (parsed, shape-checked, validated), large ones off the event
loop, and each client's share of that work bounded.

Why: preparing a document is pure CPU and, on the event loop, blocks every other client for as long as
it takes. A document at the token limit takes 0.1–0.4 s to parse and refuse, so one client sending them
back to back raised another client's median latency from 3 ms to 200–360 ms. Three things bound it:

- **Once per text.** What a text prepares into (its document and validation errors, or the refusal of its
  syntax or shape) is kept in an LRU keyed by the text: the same few documents, sent thousands of times
  by agents, are prepared once, and a refused document sent again is refused from the cache.
- **Large documents in another process.** A text longer than `GRAPHQL_INLINE_DOCUMENT_BYTES` is first
  parsed, shape-checked and validated in a worker process (one, started on first use, stopped by the
  lifespan), one text at a time and at most one per client. A thread would not do: parsing holds the GIL,
  and graphql-core's tokens form cycles that only a garbage collection frees, which stopped the event loop
  for 60–120 ms at a time while another thread parsed. A refused text (most of what a flood sends) never
  touches this process's parser; a text the worker accepts is parsed here in a thread (it is within every
  limit, so its parse is bounded) and cached.
- **A CPU budget per client.** The CPU time spent preparing a client's new documents (on the loop, in a
  thread or in the worker process, each measured where it ran) is charged to the client (its API key or
  token subject, else its address): `GRAPHQL_PREPARE_CPU_MS` milliseconds per window (default 1,000 per
  10 s, a tenth of a core). A client over it is refused before anything is parsed (`RATE_LIMITED`,
  `retryAfter`; 429 under `application/graphql-response+json`) until its window ends; documents in the
  cache cost nothing and are never refused by it.

Invariants (MUST):
- The event loop never parses or validates a text longer than `inline_bytes`: such texts go to the
  worker process (then, if accepted, to a thread) under `_Gates.worker`, which admits one at a time.
- A client has at most one text in the worker (its own lock), so no client queues more than one
  document ahead of anybody else's.
- A text's preparation is a pure function of the text, the schema and the limits: caching it (refusals
  included) never changes an answer.

Tuning (not invariants): the inline threshold, the budget, the cache's size (`CACHE_SIZE` entries and
`CACHE_BYTES` of text).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import multiprocessing
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, Source, parse

from app.api.document_shape import ShapeLimits, check_shape
from app.domain import ErrorCode
from app.principal import Principal

logger = logging.getLogger("agent_tasks.graphql")

#: Prepared texts kept (least recently used first out), and the most text they may hold in all.
CACHE_SIZE = 512
#: A parsed document holds ~20 times its text in memory (its nodes, and the tokens their locations keep).
CACHE_BYTES = 4 * 1024 * 1024
#: How much lower the worker process's CPU priority is than the server's (`os.nice`).
WORKER_NICENESS = 10
#: Clients whose budget is remembered at once; past it the fullest budgets (idle clients) are forgotten.
MAX_CLIENTS = 10_000

Validator = Callable[[GraphQLSchema, DocumentNode], list[GraphQLError]]


@dataclass(frozen=True)
class DocumentLimits:
    """The limits of preparing documents (from `Settings`; the defaults are the settings' defaults)."""

    max_tokens: int = 20_000
    shape: ShapeLimits = field(default_factory=ShapeLimits)
    inline_bytes: int = 2048
    #: Milliseconds of CPU a client's new documents may take per `cpu_window` seconds.
    cpu_ms: int = 1000
    cpu_window: float = 10.0


@dataclass(frozen=True)
class Prepared:
    """A text prepared: its document and validation errors, or the refusal of its syntax or shape."""

    document: DocumentNode | None
    errors: Sequence[GraphQLError]


def with_code(error: GraphQLError, code: ErrorCode, **numbers: object) -> GraphQLError:
    """`error` with `extensions.code` (and numbers) added when it has none."""
    if (error.extensions or {}).get("code"):
        return error
    return GraphQLError(
        error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        extensions={**(error.extensions or {}), "code": code, **numbers},
    )


def parse_refusal(error: GraphQLError, max_tokens: int) -> GraphQLError:
    """A syntax error with its code: the token limit and the parser's nesting limit are limits, the rest
    are mistakes in the text (`GRAPHQL_PARSE_FAILED`)."""
    if "more than" in error.message and "tokens" in error.message:
        return GraphQLError(
            f"The document holds more than {max_tokens} tokens (MAX_QUERY_TOKENS): send a shorter one.",
            extensions={"code": ErrorCode.QUERY_TOO_LONG, "limit": max_tokens},
        )
    if "nested too deeply" in error.message:
        return with_code(error, ErrorCode.QUERY_TOO_DEEP)
    return with_code(error, ErrorCode.GRAPHQL_PARSE_FAILED)


def prepare_text(text: str, schema: GraphQLSchema, validator: Validator, limits: DocumentLimits) -> Prepared:
    """Parse, check the shape (before validation: `document_shape`), then validate. Pure CPU."""
    try:
        document = parse(text, max_tokens=limits.max_tokens)
    except GraphQLError as error:
        return Prepared(None, [parse_refusal(error, limits.max_tokens)])
    except RecursionError:
        too_deep = GraphQLError(
            "The document is nested too deeply to parse.", extensions={"code": ErrorCode.QUERY_TOO_DEEP}
        )
        return Prepared(None, [too_deep])
    refused = check_shape(document, limits.shape)
    if refused is not None:
        return Prepared(None, [refused])
    errors = [with_code(e, ErrorCode.GRAPHQL_VALIDATION_FAILED) for e in validator(schema, document)]
    return Prepared(document, errors)


#: Set in the worker process by `_start_worker`: the schema and validator it checks texts against.
_WORKER: tuple[GraphQLSchema, Validator] | None = None


def _start_worker(target: Callable[[], tuple[GraphQLSchema, Validator]]) -> None:
    """In the worker process: build what texts are checked against, and end with the server. A server
    that is SIGKILLed never stops its pool, and the worker would wait for work forever: a thread sees the
    worker handed to another parent (its server died) within a second and ends the process."""
    global _WORKER
    _WORKER = target()
    # Below the server in the CPU's queue: on a busy machine the event loop's requests come first.
    os.nice(WORKER_NICENESS)
    server = os.getppid()

    def end_with_the_server() -> None:
        while os.getppid() == server:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=end_with_the_server, name="end-with-the-server", daemon=True).start()


def _check_in_worker(
    text: str, limits: DocumentLimits
) -> tuple[list[tuple[str, list[int], dict[str, Any]]], float]:
    """In the worker process: prepare the text; its errors (message, positions, extensions: picklable)
    and the CPU milliseconds it took."""
    assert _WORKER is not None, "the worker was not started with a schema"
    started = time.process_time()
    prepared = prepare_text(text, _WORKER[0], _WORKER[1], limits)
    errors = [(e.message, list(e.positions or ()), dict(e.extensions or {})) for e in prepared.errors]
    return errors, (time.process_time() - started) * 1000


def _rebuilt(text: str, errors: list[tuple[str, list[int], dict[str, Any]]]) -> list[GraphQLError]:
    """The worker's errors as GraphQL errors with their locations in `text`."""
    source = Source(text)
    return [
        GraphQLError(message, source=source, positions=positions or None, extensions=extensions)
        for message, positions, extensions in errors
    ]


def client_key(principal: Principal | None, host: str | None) -> str:
    """Whose budget a document's preparation is charged to: the API key or token subject, else the
    client's address."""
    if principal is not None and principal.kind in ("key", "jwt") and principal.id:
        return f"{principal.kind}:{principal.id}"
    return f"address:{host or 'unknown'}"


class CpuBudget:
    """Milliseconds of CPU per client per fixed window, charged after the work (its cost is known only
    then) and checked before the next. Written here rather than taken from `limits`: its in-memory
    storages expire entries with a background task or timer of their own, which no lifespan stops."""

    def __init__(self, ms: int, window: float) -> None:
        self.ms = ms
        self.window = window
        self.spent: dict[str, tuple[float, float]] = {}  # client -> (window start, ms spent in it)

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds until the client may prepare a new document again, or None if it may now."""
        start, spent = self.spent.get(client, (now, 0.0))
        if now - start >= self.window or spent < self.ms:
            return None
        return max(1, math.ceil(start + self.window - now))

    def charge(self, client: str, ms: float, now: float) -> None:
        start, spent = self.spent.get(client, (now, 0.0))
        if now - start >= self.window:
            start, spent = now, 0.0
        self.spent[client] = (start, spent + ms)
        if len(self.spent) > MAX_CLIENTS:
            # Forget the clients whose window has ended (they start afresh anyway), oldest first.
            for key in [k for k, (s, _) in self.spent.items() if now - s >= self.window]:
                del self.spent[key]
            while len(self.spent) > MAX_CLIENTS:
                del self.spent[next(iter(self.spent))]


@dataclass
class _Gates:
    """Per event loop (asyncio locks belong to one loop): one text in the worker, one per client."""

    worker: asyncio.Lock = field(default_factory=asyncio.Lock)
    clients: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def client(self, key: str) -> asyncio.Lock:
        lock = self.clients.get(key)
        if lock is None:
            lock = self.clients[key] = asyncio.Lock()
        return lock


class DocumentBudgetExceeded(GraphQLError):
    def __init__(self, retry_after: int, limits: DocumentLimits) -> None:
        super().__init__(
            f"This client's new GraphQL documents took more than {limits.cpu_ms} ms of CPU in"
            f" {limits.cpu_window:g} s (GRAPHQL_PREPARE_CPU_MS); try again in {retry_after} s, or"
            " send documents the server has seen (they cost nothing).",
            extensions={
                "code": ErrorCode.RATE_LIMITED,
                "retryAfter": retry_after,
                "limit": f"{limits.cpu_ms} ms CPU per {limits.cpu_window:g} s",
            },
        )


class DocumentPreparer:
    """The cache, the worker gate and the budgets of one schema (see the module)."""

    def __init__(
        self,
        validator: Validator,
        limits: DocumentLimits,
        worker_target: Callable[[], tuple[GraphQLSchema, Validator]] | None = None,
    ) -> None:
        self.validator = validator
        self.limits = limits
        #: What the worker process builds to check texts against (a module-level function: it is pickled);
        #: None: large texts are prepared in a thread of this process instead.
        self.worker_target = worker_target
        self.pool: ProcessPoolExecutor | None = None
        self.budget = CpuBudget(limits.cpu_ms, limits.cpu_window)
        self.cache: OrderedDict[str | bytes, tuple[Prepared, int]] = OrderedDict()
        self.cache_bytes = 0
        self.lock = threading.Lock()  # the cache is written from the worker thread too
        self.gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gates] = weakref.WeakKeyDictionary()

    def key(self, text: str) -> str | bytes:
        # Large texts are keyed by a digest so that a refused one does not stay in memory.
        if len(text) <= self.limits.inline_bytes:
            return text
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20).digest()

    def cached(self, key: str | bytes) -> Prepared | None:
        with self.lock:
            entry = self.cache.get(key)
            if entry is None:
                return None
            self.cache.move_to_end(key)
            return entry[0]

    def store(self, key: str | bytes, prepared: Prepared, size: int) -> None:
        weight = size if prepared.document is not None else 0  # a refusal keeps no text
        if weight > CACHE_BYTES // 4:
            return
        with self.lock:
            if key in self.cache:
                return
            self.cache[key] = (prepared, weight)
            self.cache_bytes += weight
            while len(self.cache) > CACHE_SIZE or self.cache_bytes > CACHE_BYTES:
                _, (_, dropped) = self.cache.popitem(last=False)
                self.cache_bytes -= dropped

    def prepare_now(self, text: str, schema: GraphQLSchema) -> tuple[Prepared, float]:
        """Prepare on this thread; the result and the CPU milliseconds it took."""
        started = time.thread_time()
        prepared = prepare_text(text, schema, self.validator, self.limits)
        return prepared, (time.thread_time() - started) * 1000

    async def prepare_large(self, text: str, schema: GraphQLSchema) -> tuple[Prepared, float]:
        """A long text: checked in the worker process; parsed here (in a thread) only if it passes."""
        pool = self.worker_pool()
        if pool is None:
            return await asyncio.to_thread(self.prepare_now, text, schema)
        try:
            errors, worker_ms = await asyncio.get_running_loop().run_in_executor(
                pool, _check_in_worker, text, self.limits
            )
        except BrokenProcessPool:
            logger.warning("the GraphQL document worker process died; starting another for the next text")
            self.close()
            return await asyncio.to_thread(self.prepare_now, text, schema)
        if errors:
            return Prepared(None, _rebuilt(text, errors)), worker_ms
        prepared, ms = await asyncio.to_thread(self.prepare_now, text, schema)
        return prepared, worker_ms + ms

    def worker_pool(self) -> ProcessPoolExecutor | None:
        """The worker process's pool, started on first use (spawned: a fork would copy the event loop)."""
        if self.worker_target is None:
            return None
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.worker_target,),
            )
        return self.pool

    def close(self) -> None:
        """Stop the worker process (the lifespan calls it at shutdown); a later text starts another."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def over_budget(self, text: str, client: str) -> DocumentBudgetExceeded | None:
        """The refusal a new text of this client's would get now (the HTTP view asks before Strawberry
        reads the request: a client over its budget is refused for the least work), or None."""
        if self.cached(self.key(text)) is not None:
            return None
        retry_after = self.budget.retry_after(client, time.monotonic())
        return None if retry_after is None else DocumentBudgetExceeded(retry_after, self.limits)

    async def prepare(self, text: str, schema: GraphQLSchema, client: str) -> Prepared:
        """The prepared text: from the cache, else prepared inline (short) or in the worker (long), the
        client's budget permitting; raises `DocumentBudgetExceeded` when it does not."""
        key = self.key(text)
        prepared = self.cached(key)
        if prepared is not None:
            return prepared
        retry_after = self.budget.retry_after(client, time.monotonic())
        if retry_after is not None:
            raise DocumentBudgetExceeded(retry_after, self.limits)
        fresh: Prepared
        if len(text) <= self.limits.inline_bytes:
            fresh, cpu_ms = self.prepare_now(text, schema)
        else:
            loop = asyncio.get_running_loop()
            gates = self.gates.get(loop)
            if gates is None:
                gates = self.gates[loop] = _Gates()
            async with gates.client(client):
                prepared = self.cached(key)  # the same text may have been prepared while this one waited
                if prepared is not None:
                    return prepared
                retry_after = self.budget.retry_after(client, time.monotonic())
                if retry_after is not None:
                    raise DocumentBudgetExceeded(retry_after, self.limits)
                async with gates.worker:
                    fresh, cpu_ms = await self.prepare_large(text, schema)
        self.budget.charge(client, cpu_ms, time.monotonic())
        self.store(key, fresh, len(text))
        return fresh
