"""Tracing with OpenTelemetry (docs/TRACING.md): off unless the standard `OTEL_*` variables ask for it.

- `requested` / `configure`: whether the environment asks for traces and, if so, the SDK's
  `TracerProvider` with the exporters it names (OTLP over HTTP, or the console). The SDK reads the rest of
  the standard variables itself (sampler, batch processor, resource attributes, OTLP endpoint, headers).
- `TracingMiddleware`: a span per HTTP request or WebSocket connection (server kind), continuing the
  caller's `traceparent`; it also remembers that header for `current_traceparent` when tracing is off.
- `MongoCommandSpans`: a span per MongoDB command (client kind) sent within a traced request; commands of
  background work (event hub, sweepers, heartbeats) have no parent and are left out.
- `current_traceparent`: the W3C `traceparent` a task created now stores (its creating request's span,
  or, with tracing off, the header the request came with), so the worker that claims it continues the
  trace (`agent_tasks_client.worker`).

Invariants: nothing here does I/O at import; with tracing off no span object is made and the middleware
only looks up one header. The GraphQL operation's span is `app/api/tracing.py`'s.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from pymongo import monitoring
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("agent_tasks.tracing")

#: The instrumentation name of every span the server makes.
TRACER_NAME = "agent_tasks"

#: W3C Trace Context `traceparent`: version, trace id, parent span id, flags (lower-case hex). Version ff
#: and all-zero ids are invalid.
_TRACEPARENT = re.compile(
    r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$"
)

#: The `traceparent` header of the request being served (None: none or not valid).
_incoming: ContextVar[str | None] = ContextVar("agent_tasks_traceparent", default=None)


def valid_traceparent(value: object) -> bool:
    """Whether `value` is a W3C `traceparent` (at most 55 characters for version 00)."""
    return isinstance(value, str) and len(value) <= 512 and _TRACEPARENT.match(value) is not None


def current_traceparent() -> str | None:
    """The `traceparent` of the span in progress; else (tracing off) the one the request came with."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    return _incoming.get()


def requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: `OTEL_TRACES_EXPORTER` names an exporter other than
    `none`, or (unset) an OTLP endpoint is set; never with `OTEL_SDK_DISABLED=true`."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if exporters:
        return exporters != ["none"]
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(env: Mapping[str, str] | None = None) -> Any:
    """The SDK's `TracerProvider` the environment asks for, with a batch processor per exporter; None when
    tracing is not requested, or the SDK is not installed (said in one line: `pip install
    'agent-tasks-graphql[tracing]'`). The caller shuts it down (flushing what is buffered)."""
    env = os.environ if env is None else env
    if not requested(env):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        logger.warning(
            "OTEL_* asks for traces but the OpenTelemetry SDK is not installed: tracing stays off"
            " (pip install 'agent-tasks-graphql[tracing]')"
        )
        return None
    # The SDK merges OTEL_RESOURCE_ATTRIBUTES in; a service.name there, or OTEL_SERVICE_NAME, wins over ours.
    named = "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    base = {} if named else {"service.name": env.get("OTEL_SERVICE_NAME") or "agent-tasks"}
    provider = TracerProvider(resource=Resource.create(base))
    names = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()]
    for name in names or ["otlp"]:
        exporter: SpanExporter
        if name == "otlp":
            exporter = _otlp_exporter(env)
        elif name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "none":
            continue
        else:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (this server knows otlp, console)"
            )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol == "grpc":
        try:  # not a dependency: installed by whoever wants gRPC
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError as exc:
            raise ValueError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc installed"
                " (or use http/protobuf, the default)"
            ) from exc
        return grpc.OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


class TracingMiddleware:
    """A server span per HTTP request or WebSocket connection, named `METHOD /route/template` once routed,
    child of the request's `traceparent`; with `tracer` None, only that header is remembered."""

    def __init__(self, app: ASGIApp, tracer: Tracer | None = None) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header: str | None = None
        for name, value in scope.get("headers") or ():
            if name == b"traceparent":
                text = value.decode("latin-1").strip().lower()
                header = text if valid_traceparent(text) else None
                break
        token = _incoming.set(header)
        try:
            if self.tracer is None:
                await self.app(scope, receive, send)
            else:
                await self._traced(self.tracer, scope, receive, send)
        finally:
            _incoming.reset(token)

    async def _traced(self, tracer: Tracer, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "WS") if scope["type"] == "http" else "WS"
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with tracer.start_as_current_span(
            f"{method} {scope.get('path', '')}",
            context=extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")},
        ) as span:
            await self.app(scope, receive, sending)
            route = scope.get("route")
            template = getattr(route, "path", None)
            if template:  # a route template, not the path: ids would make every span name unique
                span.update_name(f"{method} {template}")
                span.set_attribute("http.route", template)
            if status:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


class MongoCommandSpans(monitoring.CommandListener):
    """A client span per MongoDB command sent within a traced request (`db.operation.name`,
    `db.collection.name`, `db.namespace`; never the command's contents)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._open: dict[tuple[Any, int], Any] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not trace.get_current_span().get_span_context().is_valid:
            return  # background work: no request to hang it on
        target = event.command.get(event.command_name)
        collection = target if isinstance(target, str) else None
        name = f"{event.command_name} {collection}" if collection else event.command_name
        attributes = {
            "db.system.name": "mongodb",
            "db.operation.name": event.command_name,
            "db.namespace": event.database_name,
        }
        if collection:
            attributes["db.collection.name"] = collection
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        self._open[(event.connection_id, event.request_id)] = span

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        span = self._open.pop((event.connection_id, event.request_id), None)
        if span is not None:
            span.end()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        span = self._open.pop((event.connection_id, event.request_id), None)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, f"{event.command_name} failed"))
            span.set_attribute("db.response.status_code", str((event.failure or {}).get("code", "")))
            span.end()
