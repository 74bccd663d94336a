"""What the root list fields share: their arguments, each collection's sort order, and its connection type.

Each collection's `<Type>SortField` enum lists the fields the store may sort it by, in the order of its
`CollectionSpec.sort_fields` (the first is the default; tests/test_api_roots.py checks they agree), and
`<Type>Order` pairs one with a direction. `Connection[X]` is named `XConnection` by Strawberry, its
edges `XEdge`; the aliases below give each of them a name to grep for.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from app.api.connections import Connection
from app.api.types.enums import SortDirection
from app.api.types.outputs import BehaviorTaskOutput, SubTaskOutput, TaskOutput
from app.api.types.tasks import AgentTaskState, BehaviorTask, MetaWorkflowTask, SubTask

FILTER = (
    'A MongoDB-style query over the stored (snake_case) field names, e.g. {"status": {"$in": ["pending"]}}.'
)
FIRST = "Page size (default 20, at most the server's maximum page size)."
AFTER = "Return the items after this cursor (an `endCursor` or edge `cursor` from a previous page)."
ORDER = "Sort order; ties are broken by id. Default: by id, ascending."

Filter = Annotated[JSON | None, strawberry.argument(description=FILTER)]
First = Annotated[int | None, strawberry.argument(description=FIRST)]
After = Annotated[str | None, strawberry.argument(description=AFTER)]
IsFinalized = Annotated[
    bool | None, strawberry.argument(description="Only finalized (true) or unfinalized (false) ones.")
]
IsFinalizedStep = Annotated[
    bool | None, strawberry.argument(description="Only finalized (true) or open (false) steps.")
]
ProcessorSubjectId = Annotated[
    str | None, strawberry.argument(description="Outputs whose `processorSubjectIds` contain this id.")
]
PersonalityType = Annotated[str | None, strawberry.argument(description="Only this personality type.")]

# --------------------------------------------------------------------- sort fields (values: stored names)


@strawberry.enum(description="Fields a list of MetaWorkflowTask can be sorted by.")
class MetaWorkflowTaskSortField(Enum):
    TASK_ID = "task_id"
    META_WORKFLOW_ID = "meta_workflow_id"
    DSL_WORKFLOW_ID = "dsl_workflow_id"
    PERSONALITY_TYPE = "personality_type"


@strawberry.enum(description="Fields a list of SubTask can be sorted by.")
class SubTaskSortField(Enum):
    SUB_TASK_ID = "sub_task_id"
    TASK_ID = "task_id"
    BEHAVIOR_WORKFLOW_ID = "behavior_workflow_id"
    PERSONALITY_TYPE = "personality_type"


@strawberry.enum(description="Fields a list of BehaviorTask can be sorted by.")
class BehaviorTaskSortField(Enum):
    BEHAVIOR_TASK_ID = "behavior_task_id"
    SUB_TASK_ID = "sub_task_id"
    ACTION_ID = "action_id"
    ACTION_TYPE = "action_type"
    ACTION_SUB_TYPE = "action_sub_type"


@strawberry.enum(description="Fields a list of AgentTask can be sorted by.")
class AgentTaskSortField(Enum):
    TASK_ID = "task_id"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    STATUS = "status"
    AGENT_NAME = "agent_name"
    PRIORITY = "priority"
    PROGRESS_PERCENTAGE = "progress_percentage"
    EXPIRES_AT = "expires_at"


@strawberry.enum(description="Fields a list of TaskOutput can be sorted by.")
class TaskOutputSortField(Enum):
    TASK_ID = "task_id"


@strawberry.enum(description="Fields a list of SubTaskOutput can be sorted by.")
class SubTaskOutputSortField(Enum):
    SUB_TASK_ID = "sub_task_id"


@strawberry.enum(description="Fields a list of BehaviorTaskOutput can be sorted by.")
class BehaviorTaskOutputSortField(Enum):
    BEHAVIOR_TASK_ID = "behavior_task_id"


# --------------------------------------------------------------------------------------- sort orders

FIELD = "Field to sort by."
DIRECTION = "Sort direction."


@strawberry.input(description="Sort order of a list of MetaWorkflowTask; ties are broken by id.")
class MetaWorkflowTaskOrder:
    field: MetaWorkflowTaskSortField = strawberry.field(
        default=MetaWorkflowTaskSortField.TASK_ID, description=FIELD
    )
    direction: SortDirection = strawberry.field(default=SortDirection.ASC, description=DIRECTION)


@strawberry.input(description="Sort order of a list of SubTask; ties are broken by id.")
class SubTaskOrder:
    field: SubTaskSortField = strawberry.field(default=SubTaskSortField.SUB_TASK_ID, description=FIELD)
    direction: SortDirection = strawberry.field(default=SortDirection.ASC, description=DIRECTION)


@strawberry.input(description="Sort order of a list of BehaviorTask; ties are broken by id.")
class BehaviorTaskOrder:
    field: BehaviorTaskSortField = strawberry.field(
        default=BehaviorTaskSortField.BEHAVIOR_TASK_ID, description=FIELD
    )
    direction: SortDirection = strawberry.field(default=SortDirection.ASC, description=DIRECTION)


@strawberry.input(description="Sort order of a list of AgentTask; ties are broken by id.")
class AgentTaskOrder:
    field: AgentTaskSortField = strawberry.field(default=AgentTaskSortField.TASK_ID, description=FIELD)
    direction: SortDirection = strawberry.field(default=SortDirection.ASC, description=DIRECTION)


@strawberry.input(description="Sort order of a list of TaskOutput; ties are broken by id.")
class TaskOutputOrder:
    field: TaskOutputSortField = strawberry.field(default=TaskOutputSortField.TASK_ID, description=FIELD)
    direction: SortDirection = strawberry.field(default=SortDirection.ASC, description=DIRECTION)


@strawberry.input(description="Sort order of a list of SubTaskOutput; ties are broken by id.")
class SubTaskOutputOrder:
    field: SubTaskOutputSortField = strawberry.field(
        default=SubTaskOutputSortField.SUB_TASK_ID, description=FIELD
    )
    direction: SortDirection = strawberry.field(default=SortDirection.ASC, description=DIRECTION)


@strawberry.input(description="Sort order of a list of BehaviorTaskOutput; ties are broken by id.")
class BehaviorTaskOutputOrder:
    field: BehaviorTaskOutputSortField = strawberry.field(
        default=BehaviorTaskOutputSortField.BEHAVIOR_TASK_ID, description=FIELD
    )
    direction: SortDirection = strawberry.field(default=SortDirection.ASC, description=DIRECTION)


#: Each listed type's order input (the tests check its fields against the type's `spec.sort_fields`).
ORDERS: dict[type, type] = {
    MetaWorkflowTask: MetaWorkflowTaskOrder,
    SubTask: SubTaskOrder,
    BehaviorTask: BehaviorTaskOrder,
    AgentTaskState: AgentTaskOrder,
    TaskOutput: TaskOutputOrder,
    SubTaskOutput: SubTaskOutputOrder,
    BehaviorTaskOutput: BehaviorTaskOutputOrder,
}

# ------------------------------------------------------------------------------------------ connections

MetaWorkflowTaskConnection = Connection[MetaWorkflowTask]  # edges: MetaWorkflowTaskEdge
SubTaskConnection = Connection[SubTask]  # edges: SubTaskEdge
BehaviorTaskConnection = Connection[BehaviorTask]  # edges: BehaviorTaskEdge
AgentTaskStateConnection = Connection[AgentTaskState]  # edges: AgentTaskStateEdge
TaskOutputConnection = Connection[TaskOutput]  # edges: TaskOutputEdge
SubTaskOutputConnection = Connection[SubTaskOutput]  # edges: SubTaskOutputEdge
BehaviorTaskOutputConnection = Connection[BehaviorTaskOutput]  # edges: BehaviorTaskOutputEdge
