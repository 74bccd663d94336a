"""What each GraphQL operation tells the operator: its name and type for the request's access line
(`request.state.graphql_operation`, read by `app/edge.py`), its latency and its errors by code
(`app/instruments.py`: `agent_tasks_graphql_operation_*`).

Operation names are the client's choice: the metrics bound them (`BoundedLabel`, METRICS_LABEL_VALUES_MAX,
then `other`); an anonymous operation is `(anonymous)`, one whose document could not be read `-`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from app import instruments
from app.api.context import Context
from app.domain import ErrorCode

#: The `operation` label of an operation without a name, and of a request whose document was refused
#: before its operation could be told (a syntax error, a refused size).
ANONYMOUS = "(anonymous)"
UNKNOWN = "-"


class OperationObserver(SchemaExtension):
    """Outermost extension: times the whole operation (parse, validation, execution), then records it."""

    def on_operation(self) -> Iterator[None]:
        begin = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:  # recorded, and passed on unchanged
            failure = exc
            raise
        finally:
            self._record(time.perf_counter() - begin, failure)

    def _record(self, seconds: float, failure: BaseException | None) -> None:
        context = self.execution_context
        try:
            kind = context.operation_type.value
            name = context.operation_name or ANONYMOUS
        except Exception:  # no document, or no such operation in it: the name as sent, if any
            kind, name = UNKNOWN, context.operation_name or UNKNOWN
        request_context = context.context
        if isinstance(request_context, Context) and request_context.request is not None:
            request_context.request.state.graphql_operation = (name, kind)
        meters = instruments.get()
        label = meters.operations(name)
        if kind != "subscription":  # its operation lasts as long as the stream: no latency to speak of
            meters.graphql_duration.labels(label, kind).observe(seconds)
        result = context.result
        errors: list[GraphQLError] = list(
            (getattr(result, "errors", None) if result is not None else None)
            or context.pre_execution_errors
            or []
        )
        codes = [_code(error) for error in errors]
        if failure is not None and not isinstance(failure, GraphQLError | GeneratorExit):
            codes.append(ErrorCode.INTERNAL_SERVER_ERROR)
        elif isinstance(failure, GraphQLError):
            codes.append(_code(failure))
        for code in codes:
            meters.graphql_errors.labels(label, kind, code).inc()


def _code(error: GraphQLError) -> str:
    code = (error.extensions or {}).get("code")
    if isinstance(code, str) and code:
        return code[:64]
    # Validation's own errors carry no code and no path; a field's unexpected exception, masked by now
    # (app/api/errors.py: "Unexpected error.", its original dropped), has a path.
    if error.path is None and error.original_error is None:
        return ErrorCode.GRAPHQL_VALIDATION_FAILED
    return ErrorCode.INTERNAL_SERVER_ERROR
