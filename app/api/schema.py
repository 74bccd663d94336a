"""Assembling the Strawberry schema: root types, extensions (depth limit, error masking), SDL export."""

from __future__ import annotations

import logging

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.types import ExecutionContext
from strawberry.utils.logging import StrawberryLogger

from app.api.analytics import AnalyticsQuery
from app.api.context import ContextPerOperation
from app.api.errors import should_mask_error
from app.api.event_queries import EventQuery
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
class Query(ReadQuery, EventQuery, AnalyticsQuery):
    pass


@strawberry.type(description="Changing tasks: lifecycle, CRUD, finalization, events.")
class Mutation(LifecycleMutation, EventMutation, HierarchyMutation, AgentTaskMutation):
    pass


class AgentTasksSchema(strawberry.Schema):
    """The schema, logging a client's mistakes (a parse or validation error, a bad filter, cursor or
    page size) in one INFO line without a traceback; only the unexpected is logged with its traceback."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if error.original_error is None or isinstance(error.original_error, GraphQLError):
                code = (error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED")
                logger.info("refused GraphQL request: %s %s", code, error.message[:300])
            else:
                StrawberryLogger.error(error, execution_context)


def build_schema(
    max_query_depth: int = 12, max_aliases: int = 50, max_tokens: int = 20_000
) -> strawberry.Schema:
    """The schema served at /graphql. Extensions do not change the SDL, only how requests run: the limits
    refuse a hostile document (too deep, too many aliases of a costly field, too long) before it runs.

    A document is parsed and validated once, not on every request (`ParserCache`, `ValidationCache`:
    an agent sends the same few mutations thousands of times). Validation results are cached by document
    and rule set, so the depth and alias rules are built here, once per schema: limiters constructed per
    request would make a new rule class each time and the cache would never hit. Both caches are LRUs of
    `CACHE_SIZE` documents, so a client sending endless distinct documents only churns them."""
    limit_rules = [
        *QueryDepthLimiter(max_depth=max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    ]
    return AgentTasksSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[MetaWorkflowTask, SubTask, BehaviorTask, *ALL_EVENT_TYPES],
        extensions=[
            ContextPerOperation,
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: ParserCache(maxsize=CACHE_SIZE),
            lambda: AddValidationRules(limit_rules),
            lambda: ValidationCache(maxsize=CACHE_SIZE),
            lambda: MaskErrors(should_mask_error=should_mask_error),
        ],
    )


def export_sdl() -> str:
    """The schema as SDL, as committed in `schema/schema.graphql`."""
    return build_schema().as_str() + "\n"
