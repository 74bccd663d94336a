"""Root query fields: one task, output or state by id, and a filtered, paginated list of each collection.

Resolvers are thin: a lookup goes through the request's loaders, a list through `list_page` (the one
implementation of every list: the resolvers only name their typed arguments' stored fields).
"""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.connections import list_page
from app.api.lists import (
    ORDER,
    After,
    AgentTaskOrder,
    AgentTaskStateConnection,
    BehaviorTaskConnection,
    BehaviorTaskOrder,
    BehaviorTaskOutputConnection,
    BehaviorTaskOutputOrder,
    Filter,
    First,
    IsFinalized,
    IsFinalizedStep,
    MetaWorkflowTaskConnection,
    MetaWorkflowTaskOrder,
    PersonalityType,
    ProcessorSubjectId,
    SubTaskConnection,
    SubTaskOrder,
    SubTaskOutputConnection,
    SubTaskOutputOrder,
    TaskOutputConnection,
    TaskOutputOrder,
)
from app.api.types.enums import TaskKind, TaskPriority, TaskStatus
from app.api.types.fetch import load_one, prefetch
from app.api.types.outputs import BehaviorTaskOutput, SubTaskOutput, TaskOutput
from app.api.types.tasks import AgentTaskState, BehaviorTask, MetaWorkflowTask, SubTask


@strawberry.type(
    name="Query", description="Reading the task hierarchy, its outputs and its execution states."
)
class ReadQuery:
    # One document by id.

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

    # Lists: filtered, sorted, paginated; a typed argument is a condition on the stored field named here.

    @strawberry.field(description="Meta workflow tasks, filtered and paginated.")
    async def meta_workflow_tasks(
        self,
        info: strawberry.Info,
        filter: Filter = None,
        meta_workflow_id: Annotated[
            str | None, strawberry.argument(description="Only this high-level workflow.")
        ] = None,
        dsl_workflow_id: Annotated[
            str | None, strawberry.argument(description="Only this DSL workflow.")
        ] = None,
        personality_type: PersonalityType = None,
        is_finalized: IsFinalized = None,
        order_by: Annotated[MetaWorkflowTaskOrder | None, strawberry.argument(description=ORDER)] = None,
        first: First = None,
        after: After = None,
    ) -> MetaWorkflowTaskConnection:
        typed = {
            "meta_workflow_id": meta_workflow_id,
            "dsl_workflow_id": dsl_workflow_id,
            "personality_type": personality_type,
            "is_finalized": is_finalized,
        }
        return await list_page(info, MetaWorkflowTask, filter, typed, order_by, first, after)

    @strawberry.field(description="Sub-tasks, filtered and paginated.")
    async def sub_tasks(
        self,
        info: strawberry.Info,
        filter: Filter = None,
        task_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Parent meta task id.")
        ] = None,
        behavior_workflow_id: Annotated[
            str | None, strawberry.argument(description="Only this behavior workflow.")
        ] = None,
        personality_type: PersonalityType = None,
        is_finalized: IsFinalized = None,
        order_by: Annotated[SubTaskOrder | None, strawberry.argument(description=ORDER)] = None,
        first: First = None,
        after: After = None,
    ) -> SubTaskConnection:
        typed = {
            "task_id": task_id,
            "behavior_workflow_id": behavior_workflow_id,
            "personality_type": personality_type,
            "is_finalized": is_finalized,
        }
        return await list_page(info, SubTask, filter, typed, order_by, first, after)

    @strawberry.field(description="Behavior tasks, filtered and paginated.")
    async def behavior_tasks(
        self,
        info: strawberry.Info,
        filter: Filter = None,
        sub_task_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Parent sub-task id.")
        ] = None,
        action_type: Annotated[str | None, strawberry.argument(description="Only this action type.")] = None,
        action_sub_type: Annotated[
            str | None, strawberry.argument(description="Only this action subtype.")
        ] = None,
        is_finalized: IsFinalized = None,
        order_by: Annotated[BehaviorTaskOrder | None, strawberry.argument(description=ORDER)] = None,
        first: First = None,
        after: After = None,
    ) -> BehaviorTaskConnection:
        typed = {
            "sub_task_id": sub_task_id,
            "action_type": action_type,
            "action_sub_type": action_sub_type,
            "is_finalized": is_finalized,
        }
        return await list_page(info, BehaviorTask, filter, typed, order_by, first, after)

    @strawberry.field(
        description="Execution states of tasks (hierarchy and standalone), filtered and paginated."
    )
    async def agent_tasks(
        self,
        info: strawberry.Info,
        filter: Filter = None,
        status: Annotated[
            list[TaskStatus] | None, strawberry.argument(description="Any of these statuses.")
        ] = None,
        agent_name: Annotated[str | None, strawberry.argument(description="Only this agent's tasks.")] = None,
        priority: Annotated[
            list[TaskPriority] | None, strawberry.argument(description="Any of these priorities.")
        ] = None,
        task_kind: Annotated[
            TaskKind | None, strawberry.argument(description="Only tasks of this kind.")
        ] = None,
        workflow_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only the tasks of this workflow.")
        ] = None,
        parent_task_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only the sub-tasks of this task.")
        ] = None,
        order_by: Annotated[AgentTaskOrder | None, strawberry.argument(description=ORDER)] = None,
        first: First = None,
        after: After = None,
    ) -> AgentTaskStateConnection:
        typed = {
            "status": status,
            "agent_name": agent_name,
            "priority": priority,
            "task_kind": task_kind,
            "workflow_id": workflow_id,
            "parent_task_id": parent_task_id,
        }
        return await list_page(info, AgentTaskState, filter, typed, order_by, first, after)

    @strawberry.field(description="Meta task outputs, filtered and paginated.")
    async def task_outputs(
        self,
        info: strawberry.Info,
        filter: Filter = None,
        order_by: Annotated[TaskOutputOrder | None, strawberry.argument(description=ORDER)] = None,
        first: First = None,
        after: After = None,
    ) -> TaskOutputConnection:
        return await list_page(info, TaskOutput, filter, {}, order_by, first, after)

    @strawberry.field(description="Sub-task outputs, filtered and paginated.")
    async def sub_task_outputs(
        self,
        info: strawberry.Info,
        filter: Filter = None,
        is_finalized_step: IsFinalizedStep = None,
        processor_subject_id: ProcessorSubjectId = None,
        order_by: Annotated[SubTaskOutputOrder | None, strawberry.argument(description=ORDER)] = None,
        first: First = None,
        after: After = None,
    ) -> SubTaskOutputConnection:
        typed = {"is_finalized_step": is_finalized_step, "processor_subject_ids": processor_subject_id}
        return await list_page(info, SubTaskOutput, filter, typed, order_by, first, after)

    @strawberry.field(description="Behavior task outputs, filtered and paginated.")
    async def behavior_task_outputs(
        self,
        info: strawberry.Info,
        filter: Filter = None,
        is_finalized_step: IsFinalizedStep = None,
        processor_subject_id: ProcessorSubjectId = None,
        order_by: Annotated[BehaviorTaskOutputOrder | None, strawberry.argument(description=ORDER)] = None,
        first: First = None,
        after: After = None,
    ) -> BehaviorTaskOutputConnection:
        typed = {"is_finalized_step": is_finalized_step, "processor_subject_ids": processor_subject_id}
        return await list_page(info, BehaviorTaskOutput, filter, typed, order_by, first, after)
