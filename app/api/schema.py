"""Assembling the Strawberry schema: root types, extensions (depth limit, error masking), SDL export."""

from __future__ import annotations

import strawberry
from strawberry.extensions import MaskErrors, QueryDepthLimiter

from app.api.errors import should_mask_error
from app.api.queries import Query
from app.api.types.tasks import BehaviorTask, MetaWorkflowTask, SubTask


def build_schema(max_query_depth: int = 12) -> strawberry.Schema:
    """The schema served at /graphql. Extensions do not change the SDL, only how requests run."""
    return strawberry.Schema(
        query=Query,
        types=[MetaWorkflowTask, SubTask, BehaviorTask],
        extensions=[
            lambda: QueryDepthLimiter(max_depth=max_query_depth),
            lambda: MaskErrors(should_mask_error=should_mask_error),
        ],
    )


def export_sdl() -> str:
    """The schema as SDL, as committed in `schema/schema.graphql`."""
    return build_schema().as_str() + "\n"
