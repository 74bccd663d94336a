"""CRUD mutations for the hierarchy, its outputs and standalone agent tasks, and finalization.

Every root field is written out below (`create_sub_task` is `createSubTask`) as a one-line resolver that
names its level and hands its arguments to a shared helper (`create_task`, `update_task`, `put_output`…).
The helpers are the one implementation the three levels share: they convert the input, call the
`Hierarchy` service and build the success payload from the level's types (`LevelTypes`); `capture`
turns the service's refusals into the error types of the result union.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import strawberry

from app.api import inputs as i
from app.api.inputs import IdempotencyKey
from app.api.results import (
    ConflictError,
    ErrorResult,
    ForbiddenError,
    NotFoundError,
    TransitionError,
    ValidationError,
    capture,
)
from app.api.types.convert import from_doc
from app.api.types.events import TaskEvent, event_from_doc
from app.api.types.outputs import BehaviorTaskOutput, SubTaskOutput, TaskOutput
from app.api.types.tasks import AgentTaskState, BehaviorTask, MetaWorkflowTask, SubTask
from app.domain import TaskKind
from app.lifecycle.errors import Invalid
from app.lifecycle.hierarchy import LEVELS, Hierarchy, NewTask, Written

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------- payloads


@strawberry.type
class TaskSuccess(Generic[T]):
    """The fields every level's success type shares; each level names its own type below."""

    task: T = strawberry.field(description="The object as stored after the change.")
    events: list[TaskEvent] = strawberry.field(description="The events written by the change, in order.")


@strawberry.type(description="The meta workflow task as stored after the change.")
class MetaWorkflowTaskSuccess(TaskSuccess[MetaWorkflowTask]):
    pass


@strawberry.type(description="The sub-task as stored after the change.")
class SubTaskSuccess(TaskSuccess[SubTask]):
    pass


@strawberry.type(description="The behavior task as stored after the change.")
class BehaviorTaskSuccess(TaskSuccess[BehaviorTask]):
    pass


@strawberry.type(description="The task's state as stored after the change.")
class AgentTaskSuccess:
    state: AgentTaskState = strawberry.field(description="The object as stored after the change.")
    events: list[TaskEvent] = strawberry.field(description="The events written by the change, in order.")


@strawberry.type(description="The task and everything removed with it are gone.")
class DeleteSuccess:
    deleted_ids: list[strawberry.ID] = strawberry.field(
        description="Ids of every task deleted (the subtree)."
    )
    events: list[TaskEvent] = strawberry.field(description="The events written by the deletion.")


# The result unions: the success type, then the errors `capture` may answer, in this order.
MetaWorkflowTaskResult = Annotated[
    MetaWorkflowTaskSuccess
    | NotFoundError
    | ValidationError
    | TransitionError
    | ConflictError
    | ForbiddenError,
    strawberry.union("MetaWorkflowTaskResult", description="Outcome of writing a meta workflow task."),
]
SubTaskResult = Annotated[
    SubTaskSuccess | ErrorResult,
    strawberry.union("SubTaskResult", description="Outcome of writing a sub-task."),
]
BehaviorTaskResult = Annotated[
    BehaviorTaskSuccess | ErrorResult,
    strawberry.union("BehaviorTaskResult", description="Outcome of writing a behavior task."),
]
TaskOutputResult = Annotated[
    TaskOutput | ErrorResult,
    strawberry.union("TaskOutputResult", description="Outcome of writing a meta workflow task's output."),
]
SubTaskOutputResult = Annotated[
    SubTaskOutput | ErrorResult,
    strawberry.union("SubTaskOutputResult", description="Outcome of writing a sub-task's output."),
]
BehaviorTaskOutputResult = Annotated[
    BehaviorTaskOutput | ErrorResult,
    strawberry.union("BehaviorTaskOutputResult", description="Outcome of writing a behavior task's output."),
]
AgentTaskResult = Annotated[
    AgentTaskSuccess | ErrorResult,
    strawberry.union("AgentTaskResult", description="Outcome of creating or editing an agent task."),
]
DeleteResult = Annotated[
    DeleteSuccess | ErrorResult,
    strawberry.union("DeleteResult", description="Outcome of a delete."),
]

Cascade = Annotated[
    bool, strawberry.argument(description="Also delete every task below it, with outputs and states.")
]

# ------------------------------------------------------------------------- the shared implementation

NodeT = TypeVar("NodeT", MetaWorkflowTask, SubTask, BehaviorTask)
SuccessT = TypeVar("SuccessT", bound=TaskSuccess[Any])
OutputT = TypeVar("OutputT", TaskOutput, SubTaskOutput, BehaviorTaskOutput)
CreateInput = i.CreateMetaWorkflowTaskInput | i.CreateSubTaskInput | i.CreateBehaviorTaskInput
UpdateInput = i.UpdateMetaWorkflowTaskInput | i.UpdateSubTaskInput | i.UpdateBehaviorTaskInput
OutputInput = i.TaskOutputInput | i.SubTaskOutputInput | i.BehaviorTaskOutputInput


@dataclass(frozen=True)
class LevelTypes(Generic[NodeT, SuccessT, OutputT]):
    """The GraphQL types of one hierarchy level; its rules and collections are the service's
    `LEVELS[kind]`."""

    kind: str
    node: type[NodeT]
    success: type[SuccessT]
    output: type[OutputT]


META_WORKFLOW = LevelTypes(TaskKind.META_WORKFLOW, MetaWorkflowTask, MetaWorkflowTaskSuccess, TaskOutput)
SUB_TASK = LevelTypes(TaskKind.SUB_TASK, SubTask, SubTaskSuccess, SubTaskOutput)
BEHAVIOR_TASK = LevelTypes(TaskKind.BEHAVIOR_TASK, BehaviorTask, BehaviorTaskSuccess, BehaviorTaskOutput)

#: The create input's field holding a level's children (the service's `Level` names the stored id list).
_CHILDREN_INPUT: dict[str, str] = {TaskKind.META_WORKFLOW: "sub_tasks", TaskKind.SUB_TASK: "behavior_tasks"}


def _hierarchy(info: strawberry.Info) -> Hierarchy:
    return info.context.app.hierarchy


def _events(written: Written) -> list[TaskEvent]:
    return [event_from_doc(e) for e in written.events]


def _task_success(types: LevelTypes[NodeT, SuccessT, OutputT], written: Written) -> SuccessT:
    # Creates, updates and finalizations always return the document they wrote.
    assert written.doc is not None
    task = from_doc(types.node, LEVELS[types.kind].spec, written.doc)
    return types.success(task=task, events=_events(written))


def _deleted(written: Written) -> DeleteSuccess:
    return DeleteSuccess(deleted_ids=[strawberry.ID(i) for i in written.deleted_ids], events=_events(written))


def new_task(kind: str, data: dict[str, Any], path: str, parent_id: str | None = None) -> NewTask:
    """The service's `NewTask` from a create input's fields (nested children included); `path` is where
    the input sits, in the services' (domain) naming."""
    level = LEVELS[kind]
    data = dict(data)
    state = data.pop("state", None) or {}
    output = data.pop("output", None)
    children_field = _CHILDREN_INPUT.get(kind)
    children = (data.pop(children_field, None) if children_field else None) or []
    task_id = data.pop("id", None)
    if parent_id is not None and level.parent_field:
        given = data.pop(level.parent_field, None)
        if given is not None and given != parent_id:
            raise Invalid(f"{path}.{level.parent_field}", "a nested task belongs to the task it is nested in")
    return NewTask(
        kind=kind,
        fields=data,
        state=state,
        output=output,
        children=[
            new_task(level.child_kind, child, f"{path}.{children_field}[{n}]", task_id or "")
            for n, child in enumerate(children)
            if level.child_kind is not None
        ],
        id=task_id,
        path=path,
    )


async def create_task(
    info: strawberry.Info,
    types: LevelTypes[NodeT, SuccessT, OutputT],
    input: CreateInput,
    idempotency_key: str | None,
) -> SuccessT:
    """Create a task of `types`' level with everything nested in `input`, in one transaction."""
    new = new_task(types.kind, i.to_fields(input), "input")
    written = await _hierarchy(info).create(new, idempotency_key=idempotency_key)
    return _task_success(types, written)


async def update_task(
    info: strawberry.Info,
    types: LevelTypes[NodeT, SuccessT, OutputT],
    id: str,
    input: UpdateInput,
    idempotency_key: str | None,
) -> SuccessT:
    written = await _hierarchy(info).update(
        types.kind, id, i.to_fields(input), idempotency_key=idempotency_key
    )
    return _task_success(types, written)


async def finalize_task(
    info: strawberry.Info, types: LevelTypes[NodeT, SuccessT, OutputT], id: str, idempotency_key: str | None
) -> SuccessT:
    written = await _hierarchy(info).finalize(types.kind, id, idempotency_key=idempotency_key)
    return _task_success(types, written)


async def delete_task(
    info: strawberry.Info, types: LevelTypes[NodeT, SuccessT, OutputT], id: str, cascade: bool
) -> DeleteSuccess:
    return _deleted(await _hierarchy(info).delete(types.kind, id, cascade=cascade))


async def put_output(
    info: strawberry.Info,
    types: LevelTypes[NodeT, SuccessT, OutputT],
    task_id: str,
    input: OutputInput,
    *,
    create: bool,
) -> OutputT:
    """Create (`create`) or change the output document of a task of `types`' level."""
    spec = LEVELS[types.kind].output_spec
    doc = await _hierarchy(info).put_output(spec, task_id, i.to_fields(input), create=create)
    return from_doc(types.output, spec, doc)


async def delete_output(
    info: strawberry.Info, types: LevelTypes[NodeT, SuccessT, OutputT], task_id: str
) -> OutputT:
    """Delete the output document of a task of `types`' level; answers it as it was."""
    spec = LEVELS[types.kind].output_spec
    doc = await _hierarchy(info).delete_output(spec, task_id)
    return from_doc(types.output, spec, doc)


# ------------------------------------------------------------------------------------------ the roots


@strawberry.type(description="Creating, editing, deleting and finalizing tasks and outputs.")
class HierarchyMutation:
    # Meta workflow tasks and their outputs.

    @strawberry.mutation(
        description="Create a meta workflow task (and anything nested in the input), its state and output,"
        " in one transaction."
    )
    async def create_meta_workflow_task(
        self,
        info: strawberry.Info,
        input: i.CreateMetaWorkflowTaskInput,
        idempotency_key: IdempotencyKey = None,
    ) -> MetaWorkflowTaskResult:
        return await capture(create_task(info, META_WORKFLOW, input, idempotency_key))

    @strawberry.mutation(description="Change fields of a meta workflow task; refused once it is finalized.")
    async def update_meta_workflow_task(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        input: i.UpdateMetaWorkflowTaskInput,
        idempotency_key: IdempotencyKey = None,
    ) -> MetaWorkflowTaskResult:
        return await capture(update_task(info, META_WORKFLOW, id, input, idempotency_key))

    @strawberry.mutation(
        description="Delete a meta workflow task with its output and state; refused if it has children"
        " unless `cascade`."
    )
    async def delete_meta_workflow_task(
        self, info: strawberry.Info, id: strawberry.ID, cascade: Cascade = False
    ) -> DeleteResult:
        return await capture(delete_task(info, META_WORKFLOW, id, cascade))

    @strawberry.mutation(description="Finalize a meta workflow task (one-way); it then refuses edits.")
    async def finalize_meta_workflow_task(
        self, info: strawberry.Info, id: strawberry.ID, idempotency_key: IdempotencyKey = None
    ) -> MetaWorkflowTaskResult:
        return await capture(finalize_task(info, META_WORKFLOW, id, idempotency_key))

    @strawberry.mutation(description="Create the output document of a meta workflow task.")
    async def create_task_output(
        self, info: strawberry.Info, task_id: strawberry.ID, input: i.TaskOutputInput
    ) -> TaskOutputResult:
        return await capture(put_output(info, META_WORKFLOW, task_id, input, create=True))

    @strawberry.mutation(description="Change fields of a meta workflow task's output.")
    async def update_task_output(
        self, info: strawberry.Info, task_id: strawberry.ID, input: i.TaskOutputInput
    ) -> TaskOutputResult:
        return await capture(put_output(info, META_WORKFLOW, task_id, input, create=False))

    @strawberry.mutation(description="Delete the output document of a meta workflow task.")
    async def delete_task_output(self, info: strawberry.Info, task_id: strawberry.ID) -> TaskOutputResult:
        return await capture(delete_output(info, META_WORKFLOW, task_id))

    # Sub-tasks and their outputs.

    @strawberry.mutation(
        description="Create a sub-task (and anything nested in the input), its state and output, in one"
        " transaction."
    )
    async def create_sub_task(
        self, info: strawberry.Info, input: i.CreateSubTaskInput, idempotency_key: IdempotencyKey = None
    ) -> SubTaskResult:
        return await capture(create_task(info, SUB_TASK, input, idempotency_key))

    @strawberry.mutation(description="Change fields of a sub-task; refused once it is finalized.")
    async def update_sub_task(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        input: i.UpdateSubTaskInput,
        idempotency_key: IdempotencyKey = None,
    ) -> SubTaskResult:
        return await capture(update_task(info, SUB_TASK, id, input, idempotency_key))

    @strawberry.mutation(
        description="Delete a sub-task with its output and state; refused if it has children unless"
        " `cascade`."
    )
    async def delete_sub_task(
        self, info: strawberry.Info, id: strawberry.ID, cascade: Cascade = False
    ) -> DeleteResult:
        return await capture(delete_task(info, SUB_TASK, id, cascade))

    @strawberry.mutation(description="Finalize a sub-task (one-way); it then refuses edits.")
    async def finalize_sub_task(
        self, info: strawberry.Info, id: strawberry.ID, idempotency_key: IdempotencyKey = None
    ) -> SubTaskResult:
        return await capture(finalize_task(info, SUB_TASK, id, idempotency_key))

    @strawberry.mutation(description="Create the output document of a sub-task.")
    async def create_sub_task_output(
        self, info: strawberry.Info, task_id: strawberry.ID, input: i.SubTaskOutputInput
    ) -> SubTaskOutputResult:
        return await capture(put_output(info, SUB_TASK, task_id, input, create=True))

    @strawberry.mutation(description="Change fields of a sub-task's output.")
    async def update_sub_task_output(
        self, info: strawberry.Info, task_id: strawberry.ID, input: i.SubTaskOutputInput
    ) -> SubTaskOutputResult:
        return await capture(put_output(info, SUB_TASK, task_id, input, create=False))

    @strawberry.mutation(description="Delete the output document of a sub-task.")
    async def delete_sub_task_output(
        self, info: strawberry.Info, task_id: strawberry.ID
    ) -> SubTaskOutputResult:
        return await capture(delete_output(info, SUB_TASK, task_id))

    # Behavior tasks and their outputs.

    @strawberry.mutation(
        description="Create a behavior task (and anything nested in the input), its state and output, in"
        " one transaction."
    )
    async def create_behavior_task(
        self,
        info: strawberry.Info,
        input: i.CreateBehaviorTaskInput,
        idempotency_key: IdempotencyKey = None,
    ) -> BehaviorTaskResult:
        return await capture(create_task(info, BEHAVIOR_TASK, input, idempotency_key))

    @strawberry.mutation(description="Change fields of a behavior task; refused once it is finalized.")
    async def update_behavior_task(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        input: i.UpdateBehaviorTaskInput,
        idempotency_key: IdempotencyKey = None,
    ) -> BehaviorTaskResult:
        return await capture(update_task(info, BEHAVIOR_TASK, id, input, idempotency_key))

    @strawberry.mutation(
        description="Delete a behavior task with its output and state; refused if it has children unless"
        " `cascade`."
    )
    async def delete_behavior_task(
        self, info: strawberry.Info, id: strawberry.ID, cascade: Cascade = False
    ) -> DeleteResult:
        return await capture(delete_task(info, BEHAVIOR_TASK, id, cascade))

    @strawberry.mutation(description="Finalize a behavior task (one-way); it then refuses edits.")
    async def finalize_behavior_task(
        self, info: strawberry.Info, id: strawberry.ID, idempotency_key: IdempotencyKey = None
    ) -> BehaviorTaskResult:
        return await capture(finalize_task(info, BEHAVIOR_TASK, id, idempotency_key))

    @strawberry.mutation(description="Create the output document of a behavior task.")
    async def create_behavior_task_output(
        self, info: strawberry.Info, task_id: strawberry.ID, input: i.BehaviorTaskOutputInput
    ) -> BehaviorTaskOutputResult:
        return await capture(put_output(info, BEHAVIOR_TASK, task_id, input, create=True))

    @strawberry.mutation(description="Change fields of a behavior task's output.")
    async def update_behavior_task_output(
        self, info: strawberry.Info, task_id: strawberry.ID, input: i.BehaviorTaskOutputInput
    ) -> BehaviorTaskOutputResult:
        return await capture(put_output(info, BEHAVIOR_TASK, task_id, input, create=False))

    @strawberry.mutation(description="Delete the output document of a behavior task.")
    async def delete_behavior_task_output(
        self, info: strawberry.Info, task_id: strawberry.ID
    ) -> BehaviorTaskOutputResult:
        return await capture(delete_output(info, BEHAVIOR_TASK, task_id))

    # The name for creating a whole tree: the same operation as createMetaWorkflowTask.

    @strawberry.mutation(
        description="Create a meta task with its nested sub-tasks, behavior tasks, states and outputs in one"
        " transaction: all or nothing."
    )
    async def create_workflow(
        self,
        info: strawberry.Info,
        input: i.CreateMetaWorkflowTaskInput,
        idempotency_key: IdempotencyKey = None,
    ) -> MetaWorkflowTaskResult:
        return await capture(create_task(info, META_WORKFLOW, input, idempotency_key))


# ------------------------------------------------------------------------------ standalone agent tasks


def _state_success(written: Written) -> AgentTaskSuccess:
    # Every standalone write returns the state it wrote.
    assert written.doc is not None
    state = from_doc(AgentTaskState, AgentTaskState.spec, written.doc)
    return AgentTaskSuccess(state=state, events=_events(written))


async def create_agent_task(
    info: strawberry.Info,
    input: i.CreateAgentTaskInput,
    idempotency_key: str | None,
    parent_id: str | None = None,
) -> AgentTaskSuccess:
    """Create a standalone task (under `parent_id`, when given)."""
    data = i.to_fields(input)
    written = await _hierarchy(info).create_standalone(
        data.pop("id", None), data, idempotency_key=idempotency_key, parent_id=parent_id
    )
    return _state_success(written)


async def update_agent_task(
    info: strawberry.Info,
    id: str,
    input: i.UpdateAgentTaskInput,
    expected_version: int | None,
    idempotency_key: str | None,
) -> AgentTaskSuccess:
    written = await _hierarchy(info).update_state(
        id, i.to_fields(input), expected_version=expected_version, idempotency_key=idempotency_key
    )
    return _state_success(written)


async def delete_agent_task(info: strawberry.Info, id: str) -> DeleteSuccess:
    return _deleted(await _hierarchy(info).delete_standalone(id))


@strawberry.type(
    description="Creating, editing and deleting standalone agent tasks and any task's state fields."
)
class AgentTaskMutation:
    @strawberry.mutation(
        description="Create a standalone task (seed 000/001): a state with no hierarchy task."
    )
    async def create_agent_task(
        self, info: strawberry.Info, input: i.CreateAgentTaskInput, idempotency_key: IdempotencyKey = None
    ) -> AgentTaskResult:
        return await capture(create_agent_task(info, input, idempotency_key))

    @strawberry.mutation(
        description=(
            "Create a standalone task under a parent (seed 001 `add_subtask`): `createAgentTask` with "
            "`parentTaskId` set. An unknown parent is a NotFoundError."
        )
    )
    async def add_subtask(
        self,
        info: strawberry.Info,
        parent_id: Annotated[strawberry.ID, strawberry.argument(description="The parent task's id.")],
        input: Annotated[
            i.CreateAgentTaskInput,
            strawberry.argument(description="The new task; a `parentTaskId` in it must be `parentId`."),
        ],
        idempotency_key: IdempotencyKey = None,
    ) -> AgentTaskResult:
        return await capture(create_agent_task(info, input, idempotency_key, parent_id=parent_id))

    @strawberry.mutation(
        description="Change the descriptive state fields of any task (agent, priority, dependencies…)."
    )
    async def update_agent_task(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        input: i.UpdateAgentTaskInput,
        expected_version: Annotated[
            int | None, strawberry.argument(description="Apply only at this version.")
        ] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> AgentTaskResult:
        return await capture(update_agent_task(info, id, input, expected_version, idempotency_key))

    @strawberry.mutation(
        description="Delete a standalone task; refused while other tasks depend on it or name it as parent."
    )
    async def delete_agent_task(self, info: strawberry.Info, id: strawberry.ID) -> DeleteResult:
        return await capture(delete_agent_task(info, id))


__all__ = ["AgentTaskMutation", "HierarchyMutation", "LevelTypes", "new_task"]
