"""Root query fields: one task, output or state by id, and a filtered, paginated list of each collection.

Resolvers are thin: a lookup goes through the request's loaders, a list through `list_page`.
"""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from app.api.lists import list_field
from app.api.types.enums import TaskKind, TaskPriority, TaskStatus
from app.api.types.fetch import load_one, prefetch
from app.api.types.outputs import BehaviorTaskOutput, SubTaskOutput, TaskOutput
from app.api.types.tasks import AgentTaskState, BehaviorTask, MetaWorkflowTask, SubTask


@strawberry.type
class _ById:
    """Root fields that read one document by id."""

    @strawberry.field(description="A meta workflow task by id.")
    async def meta_workflow_task(self, info: strawberry.Info, id: strawberry.ID) -> MetaWorkflowTask | None:
        task = await load_one(info, MetaWorkflowTask, MetaWorkflowTask.spec, id)
        if task is not None:
            await prefetch(info, [task.id], TaskOutput.spec)
        return task

    @strawberry.field(description="A sub-task by id.")
    async def sub_task(self, info: strawberry.Info, id: strawberry.ID) -> SubTask | None:
        return await load_one(info, SubTask, SubTask.spec, id)

    @strawberry.field(description="A behavior task by id.")
    async def behavior_task(self, info: strawberry.Info, id: strawberry.ID) -> BehaviorTask | None:
        return await load_one(info, BehaviorTask, BehaviorTask.spec, id)

    @strawberry.field(description="The execution state of any task (hierarchy or standalone) by its task id.")
    async def agent_task(self, info: strawberry.Info, id: strawberry.ID) -> AgentTaskState | None:
        return await load_one(info, AgentTaskState, AgentTaskState.spec, id)

    @strawberry.field(description="The output of a meta workflow task.")
    async def task_output(self, info: strawberry.Info, task_id: strawberry.ID) -> TaskOutput | None:
        return await load_one(info, TaskOutput, TaskOutput.spec, task_id)

    @strawberry.field(description="The output of a sub-task.")
    async def sub_task_output(
        self, info: strawberry.Info, sub_task_id: strawberry.ID
    ) -> SubTaskOutput | None:
        return await load_one(info, SubTaskOutput, SubTaskOutput.spec, sub_task_id)

    @strawberry.field(description="The output of a behavior task.")
    async def behavior_task_output(
        self, info: strawberry.Info, behavior_task_id: strawberry.ID
    ) -> BehaviorTaskOutput | None:
        return await load_one(info, BehaviorTaskOutput, BehaviorTaskOutput.spec, behavior_task_id)


def _arg(kind: Any, description: str) -> Any:
    return Annotated[kind | None, strawberry.argument(description=description)]


# Each list: (field name, node type, order type name, description, its typed arguments → stored field).
# One generic resolver serves all seven (see `list_field`); the arguments are what differs.
_LISTS: list[tuple[str, type, str, str, dict[str, tuple[Any, str]]]] = [
    (
        "meta_workflow_tasks",
        MetaWorkflowTask,
        "MetaWorkflowTask",
        "Meta workflow tasks, filtered and paginated.",
        {
            "meta_workflow_id": (_arg(str, "Only this high-level workflow."), "meta_workflow_id"),
            "dsl_workflow_id": (_arg(str, "Only this DSL workflow."), "dsl_workflow_id"),
            "personality_type": (_arg(str, "Only this personality type."), "personality_type"),
            "is_finalized": (
                _arg(bool, "Only finalized (true) or unfinalized (false) ones."),
                "is_finalized",
            ),
        },
    ),
    (
        "sub_tasks",
        SubTask,
        "SubTask",
        "Sub-tasks, filtered and paginated.",
        {
            "task_id": (_arg(strawberry.ID, "Parent meta task id."), "task_id"),
            "behavior_workflow_id": (_arg(str, "Only this behavior workflow."), "behavior_workflow_id"),
            "personality_type": (_arg(str, "Only this personality type."), "personality_type"),
            "is_finalized": (
                _arg(bool, "Only finalized (true) or unfinalized (false) ones."),
                "is_finalized",
            ),
        },
    ),
    (
        "behavior_tasks",
        BehaviorTask,
        "BehaviorTask",
        "Behavior tasks, filtered and paginated.",
        {
            "sub_task_id": (_arg(strawberry.ID, "Parent sub-task id."), "sub_task_id"),
            "action_type": (_arg(str, "Only this action type."), "action_type"),
            "action_sub_type": (_arg(str, "Only this action subtype."), "action_sub_type"),
            "is_finalized": (
                _arg(bool, "Only finalized (true) or unfinalized (false) ones."),
                "is_finalized",
            ),
        },
    ),
    (
        "agent_tasks",
        AgentTaskState,
        "AgentTask",
        "Execution states of tasks (hierarchy and standalone), filtered and paginated.",
        {
            "status": (_arg(list[TaskStatus], "Any of these statuses."), "status"),
            "agent_name": (_arg(str, "Only this agent's tasks."), "agent_name"),
            "priority": (_arg(list[TaskPriority], "Any of these priorities."), "priority"),
            "task_kind": (_arg(TaskKind, "Only tasks of this kind."), "task_kind"),
            "workflow_id": (_arg(strawberry.ID, "Only the tasks of this workflow."), "workflow_id"),
            "parent_task_id": (_arg(strawberry.ID, "Only the sub-tasks of this task."), "parent_task_id"),
        },
    ),
    ("task_outputs", TaskOutput, "TaskOutput", "Meta task outputs, filtered and paginated.", {}),
    (
        "sub_task_outputs",
        SubTaskOutput,
        "SubTaskOutput",
        "Sub-task outputs, filtered and paginated.",
        {
            "is_finalized_step": (
                _arg(bool, "Only finalized (true) or open (false) steps."),
                "is_finalized_step",
            ),
            "processor_subject_id": (
                _arg(str, "Outputs whose `processorSubjectIds` contain this id."),
                "processor_subject_ids",
            ),
        },
    ),
    (
        "behavior_task_outputs",
        BehaviorTaskOutput,
        "BehaviorTaskOutput",
        "Behavior task outputs, filtered and paginated.",
        {
            "is_finalized_step": (
                _arg(bool, "Only finalized (true) or open (false) steps."),
                "is_finalized_step",
            ),
            "processor_subject_id": (
                _arg(str, "Outputs whose `processorSubjectIds` contain this id."),
                "processor_subject_ids",
            ),
        },
    ),
]

Query = strawberry.type(
    type(
        "ReadQuery",
        (_ById,),
        {name: list_field(node, order_name, text, typed) for name, node, order_name, text, typed in _LISTS},
    ),
    name="Query",
    description="Reading the task hierarchy, its outputs and its execution states.",
)
