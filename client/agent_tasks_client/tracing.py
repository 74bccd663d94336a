"""The client's spans (the worker's "task attempt", `record_tool_call`) and the `traceparent` header it sends.

Through OpenTelemetry's API when it is installed (`pip install 'agent-tasks-client[tracing]'`, or any
environment that already has `opentelemetry-api`); without it every function here does nothing, so the
client itself needs only httpx and websockets. With the API but no SDK configured, OpenTelemetry's own
no-op applies, as for any instrumented library (docs/TRACING.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace

    AVAILABLE = True
except ImportError:  # the `tracing` extra is not installed: no spans, no traceparent header
    AVAILABLE = False

#: The instrumentation scope the client's spans carry.
SCOPE = "agent_tasks_client"


class NoTracer:
    """What `AgentTasksClient.tracer` is without OpenTelemetry: it starts no span."""

    def __repr__(self) -> str:
        return "NoTracer()"


class Span:
    """The span in progress as the client uses it: attributes and an error status (nothing without
    OpenTelemetry)."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def set_error(self, description: str) -> None:
        if self._span is not None:
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, description))


def get_tracer(tracer_provider: Any = None) -> Any:
    """The client's tracer from `tracer_provider` (an OpenTelemetry `TracerProvider`; None: the global
    one), or a `NoTracer` without OpenTelemetry (a provider given then is ignored)."""
    if not AVAILABLE:
        return NoTracer()
    return trace.get_tracer(SCOPE, tracer_provider=tracer_provider)


def propagation_headers() -> dict[str, str] | None:
    """Within a span: the headers that carry it (`traceparent`), so the server's spans nest under it;
    None outside one or without OpenTelemetry."""
    if not AVAILABLE or not trace.get_current_span().get_span_context().is_valid:
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextmanager
def span(
    tracer: Any,
    name: str,
    *,
    kind: str,
    attributes: Mapping[str, str | int | float | bool],
    traceparent: str | None = None,
) -> Iterator[Span]:
    """A span `name` made current while the block runs: `kind` is `client` or `consumer`; its parent is
    the W3C `traceparent` when given (a task's stored context), else the span in progress."""
    if not AVAILABLE or isinstance(tracer, NoTracer):
        yield Span()
        return
    parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
    span_kind = trace.SpanKind.CONSUMER if kind == "consumer" else trace.SpanKind.CLIENT
    with tracer.start_as_current_span(name, context=parent, kind=span_kind, attributes=dict(attributes)) as s:
        yield Span(s)
