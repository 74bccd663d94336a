"""Assembling the Strawberry schema: root types, extensions (limits, error masking), SDL export."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    NameNode,
    OperationDefinitionNode,
    SelectionSetNode,
    specified_rules,
)
from graphql import OperationType as GraphQLOperationType
from opentelemetry.trace import Tracer
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType
from strawberry.utils.logging import StrawberryLogger

from app.api.access import ScopeCheck
from app.api.analytics import AnalyticsQuery
from app.api.context import Context, ContextPerOperation, DatabaseGate
from app.api.documents import DocumentBudgetExceeded, DocumentLimits, DocumentPreparer, client_key
from app.api.errors import MaskUnexpectedErrors, log_database_error, should_mask_error
from app.api.event_queries import EventQuery
from app.api.execution import EventScopedExecutor, install_direct_resolvers
from app.api.guards import QueryLimits, check_request, refusal
from app.api.keys import KeyMutation, KeyQuery
from app.api.mutations.bulk import BulkMutation
from app.api.mutations.events import EventMutation
from app.api.mutations.hierarchy import AgentTaskMutation, HierarchyMutation
from app.api.mutations.lifecycle import LifecycleMutation
from app.api.observe import OperationObserver
from app.api.queries import ReadQuery
from app.api.retention import RetentionMutation, RetentionQuery
from app.api.steering import SteeringMutation, SteeringQuery
from app.api.subscriptions import Subscription
from app.api.tracing import OperationSpan
from app.api.types.events import ALL_EVENT_TYPES
from app.api.types.tasks import BehaviorTask, MetaWorkflowTask, SubTask
from app.api.viewer import ViewerQuery
from app.domain import ErrorCode

logger = logging.getLogger("agent_tasks.graphql")

# The roots are the topical classes merged (what `strawberry.tools.merge_types` does), written as classes
# so that their names and descriptions are plain code; fields keep the order of the bases.


@strawberry.type(description="Reading the task hierarchy, its outputs, its execution states and its events.")
class Query(ReadQuery, EventQuery, AnalyticsQuery, KeyQuery, RetentionQuery, SteeringQuery, ViewerQuery):
    pass


@strawberry.type(description="Changing tasks: lifecycle, CRUD, finalization, events.")
class Mutation(
    LifecycleMutation,
    BulkMutation,
    EventMutation,
    HierarchyMutation,
    AgentTaskMutation,
    KeyMutation,
    RetentionMutation,
    SteeringMutation,
):
    pass


def placeholder(operation_name: str | None) -> DocumentNode:
    """A document Strawberry can take the operation type of (`query <operation_name> { __typename }`),
    standing in for a refused text: validation then answers the refusal, over HTTP and WebSocket alike
    (an error raised while parsing would escape Strawberry's streaming path as an unexpected one)."""
    return DocumentNode(
        definitions=(
            OperationDefinitionNode(
                operation=GraphQLOperationType.QUERY,
                name=NameNode(value=operation_name) if operation_name else None,
                variable_definitions=(),
                directives=(),
                selection_set=SelectionSetNode(
                    selections=(FieldNode(name=NameNode(value="__typename"), arguments=(), directives=()),)
                ),
            ),
        )
    )


def client_of(context: object) -> str:
    """Whose budget a document's preparation is charged to (`documents.client_key`)."""
    if isinstance(context, Context):
        request = context.request
        return client_key(context.principal, request.client.host if request and request.client else None)
    return client_key(None, None)


class PreparedDocuments(SchemaExtension):
    """Parsing and validation through the `DocumentPreparer` (`app/api/documents.py`: once per text,
    large texts off the event loop, a CPU budget per client), then `guards.check_request` per request (it
    reads the variables). A refused text (syntax, shape, budget) is answered as a request error with its
    code, in place of validation's."""

    def __init__(self, preparer: DocumentPreparer, limits: QueryLimits) -> None:
        super().__init__()
        self.preparer = preparer
        self.limits = limits
        self.refusal: GraphQLError | None = None
        self.errors: list[GraphQLError] = []

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            try:
                prepared = await self.preparer.prepare(
                    context.query, context.schema._schema, client_of(context.context)
                )
            except DocumentBudgetExceeded as exc:
                self.refusal = exc
            else:
                if prepared.document is None:
                    self.refusal = prepared.errors[0]
                else:
                    context.graphql_document = prepared.document
                    self.errors = list(prepared.errors)
            if self.refusal is not None:
                # No document yet, so `operation_name` is the one the client sent.
                context.graphql_document = placeholder(context.operation_name)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self.refusal is not None:
            context.pre_execution_errors = [self.refusal]
        else:
            assert context.graphql_document is not None
            # Before validation's errors, as before validation itself: what it refuses is the reason
            # to give, even for a document validation also refuses.
            error = check_request(
                context.schema._schema,
                context.graphql_document,
                # As the client sent it: `operation_name` falls back on the first operation's name.
                context._provided_operation_name,
                context.variables,
                self.limits,
            )
            context.pre_execution_errors = [error] if error is not None else self.errors
        yield


class AgentTasksSchema(strawberry.Schema):
    """The schema with an execution deadline: a query still running after `timeout_seconds` is cancelled
    and answers `QUERY_TIMEOUT`. Mutations are not cancelled: they answer what they did (a write
    cancelled halfway would leave the client unsure whether it happened); subscriptions run on."""

    timeout_seconds: float | None = None
    #: Where its documents are prepared (`build_schema` sets it; the HTTP view asks it too).
    documents: DocumentPreparer | None = None

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """A client's mistakes (a parse or validation error, a refused limit, a bad filter, cursor or page
        size) are logged in one INFO line, database failures in one WARNING line, neither with a
        traceback; only the unexpected is logged with its traceback."""
        for error in errors:
            if log_database_error(error):
                continue
            if error.original_error is None or isinstance(error.original_error, GraphQLError):
                code = (error.extensions or {}).get("code", ErrorCode.GRAPHQL_VALIDATION_FAILED)
                logger.info("refused GraphQL request: %s %s", code, error.message[:300])
            else:
                StrawberryLogger.error(error, execution_context)

    async def _execute_operation(self, execution_context: ExecutionContext, *args: Any, **kwargs: Any) -> Any:
        timeout = self.timeout_seconds
        if timeout is None or execution_context.operation_type is not OperationType.QUERY:
            return await super()._execute_operation(execution_context, *args, **kwargs)
        # In a task of its own, and answered at the deadline whatever it does with its cancellation: with
        # `asyncio.timeout` around the execution, a query whose deadline had passed still answered its data
        # (the cancellation was absorbed somewhere below, in the driver or graphql-core's gathering).
        work = asyncio.ensure_future(super()._execute_operation(execution_context, *args, **kwargs))
        try:
            done, _ = await asyncio.wait({work}, timeout=timeout)
        except asyncio.CancelledError:
            work.cancel()  # the request itself was cancelled (client gone, shutdown)
            raise
        if work in done:
            return work.result()
        work.cancel()
        work.add_done_callback(_discard)
        raise refusal(
            f"The query ran longer than {timeout:g} s (QUERY_TIMEOUT_SECONDS) and was cancelled: "
            "ask for less (smaller pages, fewer nested lists).",
            ErrorCode.QUERY_TIMEOUT,
            limit_seconds=timeout,
        )


def _discard(task: asyncio.Future[Any]) -> None:
    """Retrieve what a query cancelled at its deadline ended with, so asyncio does not log it."""
    if not task.cancelled():
        task.exception()


def build_schema(
    limits: QueryLimits | None = None,
    documents: DocumentLimits | None = None,
    timeout_seconds: float | None = None,
    tracer: Tracer | None = None,
) -> strawberry.Schema:
    """The schema served at /graphql. Extensions do not change the SDL, only how requests run: the limits
    refuse a hostile document (too long, too deep, too many aliases, too costly to validate or to answer)
    before it runs.

    A text is parsed, shape-checked and validated once (`documents`: `app/api/documents.py`, with its
    own cache, large texts off the event loop, a CPU budget per client); `guards.check_request` then
    refuses, per request, what `limits` bound (cost, list lengths, page sizes, several operations without
    a name); `timeout_seconds` is the queries' deadline. With a `tracer`, each query and mutation is a span
    (`app/api/tracing.py`)."""
    limits = limits or QueryLimits()
    preparer = DocumentPreparer(
        partial(_validate, rules=tuple(specified_rules)), documents or DocumentLimits(), validation_target
    )
    schema = AgentTasksSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[MetaWorkflowTask, SubTask, BehaviorTask, *ALL_EVENT_TYPES],
        extensions=[
            OperationObserver,  # outermost: times everything below, sees the errors as answered
            ContextPerOperation,
            ScopeCheck,  # before the database gate: a refusal needs no database
            DatabaseGate,
            lambda: PreparedDocuments(preparer, limits),
            lambda: MaskUnexpectedErrors(should_mask_error=should_mask_error),
            *([lambda: OperationSpan(tracer)] if tracer is not None else []),
        ],
        # Subscription events run with caches of their own: graphql-core's grow for the subscription's life.
        execution_context_class=EventScopedExecutor,
    )
    schema.timeout_seconds = timeout_seconds
    schema.documents = preparer
    install_direct_resolvers(schema._schema)
    return schema


def validation_target() -> tuple[GraphQLSchema, Callable[[GraphQLSchema, DocumentNode], list[GraphQLError]]]:
    """What the document worker process validates against: this schema and its rules (built there)."""
    return build_schema()._schema, partial(_validate, rules=tuple(specified_rules))


def _validate(schema: GraphQLSchema, document: DocumentNode, rules: tuple[Any, ...]) -> list[GraphQLError]:
    """graphql-core's rules and Strawberry's own (`validate_document` adds `@oneOf` and `Maybe` checks)."""
    return validate_document(schema, document, rules)


def export_sdl() -> str:
    """The schema as SDL, as committed in `schema/schema.graphql`."""
    return build_schema().as_str() + "\n"
