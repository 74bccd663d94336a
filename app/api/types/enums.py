"""GraphQL enums for the task statuses, priorities, kinds and error codes: the domain's own enums
(`app.domain`), so their values are the stored strings (and the codes REST answers in lower case) and their
order and descriptions are stated once."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import strawberry

from app import domain


def _describe(enum: type[Enum], descriptions: Mapping[Any, str]) -> None:
    """Give each GraphQL enum value the domain's description of its member (`strawberry.enum` registers
    the domain enum itself, so resolvers return domain members and the stored strings stay the values)."""
    for value in enum.__strawberry_definition__.values:  # type: ignore[attr-defined]  # set by strawberry.enum
        value.description = descriptions[enum(value.value)]


strawberry.enum(
    domain.Status, name="TaskStatus", description="Execution status of a task (seed 000), plus `cancelled`."
)
TaskStatus = domain.Status
_describe(TaskStatus, domain.STATUS_DESCRIPTIONS)

strawberry.enum(
    domain.Priority,
    name="TaskPriority",
    description="Urgency of a task (seed 001); claiming hands out the most urgent first.",
)
TaskPriority = domain.Priority
_describe(TaskPriority, domain.PRIORITY_DESCRIPTIONS)

strawberry.enum(
    domain.TaskKind, name="TaskKind", description="Which kind of task an execution state belongs to."
)
TaskKind = domain.TaskKind
_describe(TaskKind, domain.TASK_KIND_DESCRIPTIONS)

strawberry.enum(
    domain.ErrorCode,
    name="ErrorCode",
    description="Every machine-readable error code: an error's `extensions.code` (GraphQL errors), and the"
    " `code` of `ValidationError` and `ForbiddenError` (errors as data). REST's error bodies carry the same"
    " codes in lower case (`RATE_LIMITED` is REST's `rate_limited`); those marked REST only are never a"
    " GraphQL answer.",
)
ErrorCode = domain.ErrorCode
_describe(ErrorCode, domain.ERROR_CODE_DESCRIPTIONS)


@strawberry.enum(description="Sort direction.")
class SortDirection(Enum):
    ASC = strawberry.enum_value(1, description="Ascending.")
    DESC = strawberry.enum_value(-1, description="Descending.")
