"""The connection to one server: the httpx pool, the GraphQL POST with its retries, and what the server
supports (each probed once).

`Transport` is the bottom of the client: the worker, the claimed task and the event stream sit above it,
`AgentTasksClient` (client.py) on top adds the API's operations. It raises the client's typed errors for
GraphQL errors and HTTP failures (`TransportError`, `Unauthorized`, `Forbidden`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from agent_tasks_client import tracing
from agent_tasks_client.documents import (
    EVENT_FIELDS,
    PAUSE_FIELDS,
    STEERING_FIELDS,
    TIMEOUT_FIELDS,
    TRACING_FIELDS,
)
from agent_tasks_client.enums import ErrorCode
from agent_tasks_client.errors import Forbidden, TransportError, Unauthorized

logger = logging.getLogger("agent_tasks_client")

#: Seconds before the first re-send of a request that got no answer; doubled each time.
RETRY_BACKOFF = 0.2


class Transport:
    """GraphQL over HTTP to one agent-tasks server (see `AgentTasksClient`, which is one)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
        tracer_provider: Any = None,
    ) -> None:
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/graphql") else f"{base}/graphql"
        self.headers = dict(headers or {})
        if api_key is not None:  # sent on every request and on watch_events' WebSocket upgrade
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.retries = retries
        self._http = httpx.AsyncClient(
            timeout=timeout,
            headers={"Accept": "application/json", **self.headers},
            transport=transport,
        )
        #: Spans of the worker's attempts and of `record_tool_call` (OpenTelemetry, from `tracer_provider`
        #: or the global one: a no-op without an SDK; a `tracing.NoTracer` without OpenTelemetry installed).
        self.tracer = tracing.get_tracer(tracer_provider)
        self._lease_support: bool | None = None
        #: Which named types the server's schema has (`_has_type`), each asked once.
        self._schema_types: dict[str, bool] = {}
        self._tracing_support: bool | None = None
        self._probe_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------------------------------- transport

    async def execute(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send any GraphQL document; its `data`. GraphQL errors and HTTP failures raise `TransportError`.

        Connection failures and timeouts are retried `retries` times with backoff: only send a mutation
        through here with an idempotency key (every method of this class does)."""
        body = {"query": query, "variables": dict(variables or {})}
        # Within a span (a worker's attempt), the server continues the trace: its spans nest under ours.
        headers = tracing.propagation_headers()
        delay = RETRY_BACKOFF
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.post(self.endpoint, json=body, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise TransportError(
                        f"no answer from {self.endpoint} after {attempt + 1} tries: {exc!r}"
                    ) from exc
                logger.info("no answer from %s (%r); sending again in %.1f s", self.endpoint, exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay *= 2
        return _data(response)

    async def supports_leases(self) -> bool:
        """Whether the server has leases and fencing (`LeaseLostError`); asked once per client, so this
        client also works with a server from before them (lease arguments and fencing tokens are then
        not sent). A server that refuses introspection is taken to have them."""
        if self._lease_support is None:
            async with self._probe_lock:
                if self._lease_support is None:
                    try:
                        data = await self.execute('{ lease: __type(name: "LeaseLostError") { name } }')
                    except TransportError as exc:
                        if not exc.errors:  # no answer at all: ask again next time
                            raise
                        data = {"lease": True}
                    self._lease_support = data.get("lease") is not None
        return self._lease_support

    async def _has_type(self, name: str) -> bool:
        """Whether the server's schema has the type `name`; asked once per client and type, so this client
        also works with a server from before a feature (its arguments are then not sent). A server that
        refuses introspection is taken to have it; no answer at all raises (and is asked again next time)."""
        known = self._schema_types.get(name)
        if known is None:
            try:
                data = await self.execute("query($n: String!) { t: __type(name: $n) { name } }", {"n": name})
            except TransportError as exc:
                if not exc.errors:
                    raise
                data = {"t": True}
            known = self._schema_types[name] = data.get("t") is not None
        return known

    async def supports_steering(self) -> bool:
        """Whether the server has retry policies and delayed starts (`RetryPolicy` in the schema)."""
        return await self._has_type("RetryPolicy")

    async def supports_timeouts(self) -> bool:
        """Whether the server has timeouts (`TimeoutKind` in the schema)."""
        return await self._has_type("TimeoutKind")

    async def supports_tracing(self) -> bool:
        """Whether the server keeps trace contexts (`traceparent` on `AgentTaskState`); asked once per
        client, like `supports_leases`. A server that refuses introspection is taken to have them."""
        if self._tracing_support is None:
            try:
                data = await self.execute('{ t: __type(name: "AgentTaskState") { fields { name } } }')
            except TransportError as exc:
                if not exc.errors:
                    raise
                data = {"t": {"fields": [{"name": "traceparent"}]}}
            names = {f["name"] for f in ((data.get("t") or {}).get("fields") or [])}
            self._tracing_support = "traceparent" in names
        return self._tracing_support

    async def supports_batch_claims(self) -> bool:
        """Whether the server has `claimTasks` (one probe, cached)."""
        return await self._has_type("ClaimTasksSuccess")

    async def supports_pause(self) -> bool:
        """Whether the server has pause, resume and bulk actions (`PauseScope` in the schema)."""
        return await self._has_type("PauseScope")

    async def fit_selection(self, selection: str) -> str:
        """`selection` without the fields this server lacks (leases, steering, timeouts, tracing)."""
        if not await self.supports_leases():
            selection = selection.replace("leaseHolder leaseExpiresAt", "")
        if not await self.supports_timeouts():
            selection = selection.replace(TIMEOUT_FIELDS, "")
        if not await self.supports_steering():
            selection = selection.replace(STEERING_FIELDS, "")
        if not await self.supports_tracing():
            selection = selection.replace(TRACING_FIELDS, "")
        if not await self.supports_pause():
            selection = selection.replace(PAUSE_FIELDS, "")
        return selection

    async def event_fields(self) -> str:
        """The selection of an event (`EVENT_FIELDS`) without the event types this server lacks."""
        dropped = [] if await self.supports_leases() else ["LeaseExpiredEvent"]
        if not await self.supports_steering():
            dropped += ["TaskRescheduledEvent", "TaskCancelledEvent"]
        if not await self.supports_timeouts():
            dropped += ["TaskTimedOutEvent"]
        if not await self.supports_pause():
            dropped += ["TaskPausedEvent", "TaskResumedEvent"]
        return "\n".join(line for line in EVENT_FIELDS.splitlines() if not any(d in line for d in dropped))


def _data(response: httpx.Response) -> dict[str, Any]:
    """The `data` of a GraphQL answer; `TransportError` saying what was wrong otherwise."""
    try:
        body = response.json()
    except ValueError:
        raise TransportError(
            f"HTTP {response.status_code} from {response.request.url} is not JSON: {response.text[:200]!r}",
            status_code=response.status_code,
        ) from None
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        messages = "; ".join(str(e.get("message")) for e in errors)
        codes = [(e.get("extensions") or {}) for e in errors if isinstance(e, dict)]
        for extensions in codes:
            if extensions.get("code") == ErrorCode.FORBIDDEN:
                raise Forbidden(messages, required_scope=extensions.get("requiredScope"), data=body)
        if response.status_code == 401 or any(x.get("code") == ErrorCode.UNAUTHENTICATED for x in codes):
            raise Unauthorized(messages, status_code=response.status_code, errors=list(errors))
        raise TransportError(
            f"GraphQL error (HTTP {response.status_code}): {messages}",
            status_code=response.status_code,
            errors=list(errors),
        )
    if response.status_code != 200 or not isinstance(body, dict) or body.get("data") is None:
        raise TransportError(
            f"HTTP {response.status_code} from {response.request.url}: {response.text[:200]!r}",
            status_code=response.status_code,
        )
    return dict(body["data"])
