"""GraphQL enums for the task statuses, priorities and kinds; their values are the stored strings."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="Execution status of a task (seed 000), plus `cancelled`.")
class TaskStatus(Enum):
    PENDING = strawberry.enum_value("pending", description="Ready to be claimed and started.")
    IN_PROGRESS = strawberry.enum_value("in_progress", description="An agent is working on it.")
    AWAITING_DEPENDENCY = strawberry.enum_value(
        "awaiting_dependency", description="Waiting until its dependencies reach their expected status."
    )
    COMPLETED = strawberry.enum_value("completed", description="Finished successfully.")
    FAILED = strawberry.enum_value(
        "failed", description="Failed for good (final failure or attempts used up)."
    )
    RETRYING = strawberry.enum_value("retrying", description="Failed, and will be attempted again.")
    CANCELLED = strawberry.enum_value("cancelled", description="Stopped on request; will not run.")


@strawberry.enum(description="Urgency of a task (seed 001); claiming hands out the most urgent first.")
class TaskPriority(Enum):
    LOW = strawberry.enum_value("low", description="Whenever there is time.")
    MEDIUM = strawberry.enum_value("medium", description="The default.")
    HIGH = strawberry.enum_value("high", description="Before medium and low.")
    URGENT = strawberry.enum_value("urgent", description="Before everything else.")


@strawberry.enum(description="Which kind of task an execution state belongs to.")
class TaskKind(Enum):
    META_WORKFLOW = strawberry.enum_value("meta_workflow", description="A meta workflow task.")
    SUB_TASK = strawberry.enum_value("sub_task", description="A sub-task of a meta workflow.")
    BEHAVIOR_TASK = strawberry.enum_value("behavior_task", description="A behavior task of a sub-task.")
    STANDALONE = strawberry.enum_value("standalone", description="A task outside the hierarchy (seed 000).")


@strawberry.enum(description="Sort direction.")
class SortDirection(Enum):
    ASC = strawberry.enum_value(1, description="Ascending.")
    DESC = strawberry.enum_value(-1, description="Descending.")
