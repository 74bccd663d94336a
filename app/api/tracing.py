"""The GraphQL operation's span (docs/TRACING.md): one per query or mutation, named as OpenTelemetry's
GraphQL conventions say (`mutation claimTask`), child of the HTTP request's span; the MongoDB commands
its resolvers send are its children (`app.tracing.MongoCommandSpans`).

Deliberately not Strawberry's `OpenTelemetryExtension`: it has a `resolve` hook, which makes a span per
field and turns off the executor's plain-field and direct-resolver fast paths for every field
(`app/api/execution.py`), a cost paid per field of every response. Subscriptions are left out: a span as
long as a subscription says nothing, and their events' work is the hub's.
"""

from __future__ import annotations

from collections.abc import Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType


class OperationSpan(SchemaExtension):
    """A span around the execution of one query or mutation (its document already prepared)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        kind = ctx.operation_type
        if kind is OperationType.SUBSCRIPTION:
            yield
            return
        name = ctx.operation_name
        attributes = {"graphql.operation.type": kind.value}
        if name:
            attributes["graphql.operation.name"] = name
        span = self.tracer.start_span(
            f"{kind.value} {name}" if name else kind.value, kind=SpanKind.INTERNAL, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
            result = ctx.result
            errors = getattr(result, "errors", None)
            if errors:
                span.set_status(Status(StatusCode.ERROR, str(errors[0].message)[:200]))
        finally:
            otel_context.detach(token)
            span.end()
