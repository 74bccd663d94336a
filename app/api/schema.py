"""Assembling the Strawberry schema: root types, extensions (limits, error masking), SDL export."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType
from strawberry.utils.logging import StrawberryLogger

from app.api.access import ScopeCheck
from app.api.analytics import AnalyticsQuery
from app.api.context import ContextPerOperation, DatabaseGate
from app.api.errors import MaskUnexpectedErrors, log_database_error, should_mask_error
from app.api.event_queries import EventQuery
from app.api.execution import EventScopedExecutor
from app.api.guards import QueryLimits, check_request, refusal
from app.api.keys import KeyMutation, KeyQuery
from app.api.mutations.events import EventMutation
from app.api.mutations.hierarchy import AgentTaskMutation, HierarchyMutation
from app.api.mutations.lifecycle import LifecycleMutation
from app.api.queries import ReadQuery
from app.api.subscriptions import Subscription
from app.api.types.events import ALL_EVENT_TYPES
from app.api.types.tasks import BehaviorTask, MetaWorkflowTask, SubTask

logger = logging.getLogger("agent_tasks.graphql")

#: Parsed and validated documents kept, each (least recently used first out).
CACHE_SIZE = 512

# The roots are the topical classes merged (what `strawberry.tools.merge_types` does), written as classes
# so that their names and descriptions are plain code; fields keep the order of the bases.


@strawberry.type(description="Reading the task hierarchy, its outputs, its execution states and its events.")
class Query(ReadQuery, EventQuery, AnalyticsQuery, KeyQuery):
    pass


@strawberry.type(description="Changing tasks: lifecycle, CRUD, finalization, events.")
class Mutation(LifecycleMutation, EventMutation, HierarchyMutation, AgentTaskMutation, KeyMutation):
    pass


class GuardedValidation(ValidationCache):
    """`guards.check_request` (per request: it reads the variables), then the cached validation. The
    checks run first so that a document they refuse is never handed to graphql-core's validation."""

    def __init__(self, limits: QueryLimits, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.limits = limits

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None
        error = check_request(
            context.schema._schema,
            context.graphql_document,
            # As the client sent it: `operation_name` falls back on the first operation's name.
            context._provided_operation_name,
            context.variables,
            self.limits,
        )
        if error is None:
            yield from super().on_validate()
        else:
            context.pre_execution_errors = [error]
            yield


class AgentTasksSchema(strawberry.Schema):
    """The schema with an execution deadline: a query still running after `timeout_seconds` is cancelled
    and answers `QUERY_TIMEOUT`. Mutations are not cancelled: they answer what they did (a write
    cancelled halfway would leave the client unsure whether it happened); subscriptions run on."""

    timeout_seconds: float | None = None

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
                code = (error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED")
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
            "QUERY_TIMEOUT",
            limit_seconds=timeout,
        )


def _discard(task: asyncio.Future[Any]) -> None:
    """Retrieve what a query cancelled at its deadline ended with, so asyncio does not log it."""
    if not task.cancelled():
        task.exception()


def build_schema(
    max_query_depth: int = 12,
    max_aliases: int = 50,
    max_tokens: int = 20_000,
    limits: QueryLimits | None = None,
    timeout_seconds: float | None = None,
) -> strawberry.Schema:
    """The schema served at /graphql. Extensions do not change the SDL, only how requests run: the limits
    refuse a hostile document (too deep, too many aliases of a costly field, too long) before it runs.

    A document is parsed and validated once, not on every request (`ParserCache`, `ValidationCache`:
    an agent sends the same few mutations thousands of times). Validation results are cached by document
    and rule set, so the depth and alias rules are built here, once per schema: limiters constructed per
    request would make a new rule class each time and the cache would never hit. Both caches are LRUs of
    `CACHE_SIZE` documents, so a client sending endless distinct documents only churns them. Before
    validation, `guards.check_request` refuses, per request, what `limits` bound (cost, list lengths,
    page sizes, several operations without a name); `timeout_seconds` is the queries' deadline."""
    limit_rules = [
        *QueryDepthLimiter(max_depth=max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    ]
    limits = limits or QueryLimits()
    schema = AgentTasksSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[MetaWorkflowTask, SubTask, BehaviorTask, *ALL_EVENT_TYPES],
        extensions=[
            ContextPerOperation,
            ScopeCheck,  # before the database gate: a refusal needs no database
            DatabaseGate,
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: ParserCache(maxsize=CACHE_SIZE),
            lambda: AddValidationRules(limit_rules),
            lambda: GuardedValidation(limits, CACHE_SIZE),
            lambda: MaskUnexpectedErrors(should_mask_error=should_mask_error),
        ],
        # Subscription events run with caches of their own: graphql-core's grow for the subscription's life.
        execution_context_class=EventScopedExecutor,
    )
    schema.timeout_seconds = timeout_seconds
    return schema


def export_sdl() -> str:
    """The schema as SDL, as committed in `schema/schema.graphql`."""
    return build_schema().as_str() + "\n"
