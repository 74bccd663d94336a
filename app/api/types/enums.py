"""GraphQL enums for the task statuses, priorities and kinds: the domain's own enums (`app.domain`), so
their values are the stored strings and their order and descriptions are stated once."""

from __future__ import annotations

from enum import Enum

import strawberry

from app import domain


def _describe(enum: type[Enum], descriptions: dict[object, str]) -> None:
    """Give each GraphQL enum value the domain's description of its member."""
    for value in enum.__strawberry_definition__.values:  # type: ignore[attr-defined]  # set by strawberry.enum
        value.description = descriptions[enum(value.value)]


TaskStatus = strawberry.enum(
    domain.Status, name="TaskStatus", description="Execution status of a task (seed 000), plus `cancelled`."
)
_describe(TaskStatus, dict(domain.STATUS_DESCRIPTIONS))

TaskPriority = strawberry.enum(
    domain.Priority,
    name="TaskPriority",
    description="Urgency of a task (seed 001); claiming hands out the most urgent first.",
)
_describe(TaskPriority, dict(domain.PRIORITY_DESCRIPTIONS))

TaskKind = strawberry.enum(
    domain.TaskKind, name="TaskKind", description="Which kind of task an execution state belongs to."
)
_describe(TaskKind, dict(domain.TASK_KIND_DESCRIPTIONS))


@strawberry.enum(description="Sort direction.")
class SortDirection(Enum):
    ASC = strawberry.enum_value(1, description="Ascending.")
    DESC = strawberry.enum_value(-1, description="Descending.")
