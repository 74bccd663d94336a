"""CRUD mutations for the hierarchy, its outputs and standalone agent tasks, and finalization.

The three levels share one generic implementation: `_level_mutations` builds create / update / delete /
finalize (and the output's create / update / delete) for a level from its types, so no resolver is
written three times. Every resolver converts its input and calls the `Hierarchy` service; refusals come
back as error types in the result union.

(No `from __future__ import annotations` here: the generated resolvers' annotations must be real types.)
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import strawberry

from app.api import inputs as i
from app.api.results import ConflictError, Error, NotFoundError, TransitionError, ValidationError, error_from
from app.api.types.convert import from_doc
from app.api.types.events import TaskEvent, event_from_doc
from app.api.types.outputs import BehaviorTaskOutput, SubTaskOutput, TaskOutput
from app.api.types.tasks import AgentTaskState, BehaviorTask, MetaWorkflowTask, SubTask
from app.lifecycle.errors import Invalid, ServiceError
from app.lifecycle.hierarchy import LEVELS, NewTask, Written

ERRORS = (NotFoundError, ValidationError, TransitionError, ConflictError)
IdempotencyKey = Annotated[
    str | None,
    strawberry.argument(
        description="A retried request with the same key returns the first answer, applying nothing twice."
    ),
]


def _union(name: str, success: type, description: str) -> Any:
    return Annotated[
        success | NotFoundError | ValidationError | TransitionError | ConflictError,
        strawberry.union(name, description=description),
    ]


def _payload(name: str, field_name: str, node: type, description: str) -> type:
    """A success type `{<field_name>: node, events: [TaskEvent!]!}`."""
    namespace = {
        "__annotations__": {field_name: node, "events": list[TaskEvent]},
        field_name: strawberry.field(description="The object as stored after the change."),
        "events": strawberry.field(description="The events written by the change, in order."),
    }
    return strawberry.type(type(name, (), namespace), description=description)


@strawberry.type(description="The task and everything removed with it are gone.")
class DeleteSuccess:
    deleted_ids: list[strawberry.ID] = strawberry.field(
        description="Ids of every task deleted (the subtree)."
    )
    events: list[TaskEvent] = strawberry.field(description="The events written by the deletion.")


DeleteResult = Annotated[
    DeleteSuccess | NotFoundError | ValidationError | TransitionError | ConflictError,
    strawberry.union("DeleteResult", description="Outcome of a delete."),
]

AgentTaskSuccess = _payload(
    "AgentTaskSuccess", "state", AgentTaskState, "The task's state as stored after the change."
)
AgentTaskResult = _union("AgentTaskResult", AgentTaskSuccess, "Outcome of creating or editing an agent task.")


async def _answer(work: Awaitable[Any], build: Callable[[Any], Any]) -> Any:
    try:
        return build(await work)
    except ServiceError as exc:
        return error_from(exc)


def _events(written: Written) -> list[TaskEvent]:
    return [event_from_doc(e) for e in written.events]


def _new_task(kind: str, data: dict[str, Any], path: str, parent_id: str | None = None) -> NewTask:
    """The service's `NewTask` from a create input (nested children included)."""
    level = LEVELS[kind]
    data = dict(data)
    state = data.pop("state", None) or {}
    output = data.pop("output", None)
    children = data.pop("sub_tasks", None) or data.pop("behavior_tasks", None) or []
    task_id = data.pop("id", None)
    if parent_id is not None and level.parent_field:
        given = data.pop(level.parent_field, None)
        if given is not None and given != parent_id:
            raise Invalid(f"{path}.{level.parent_field}", "a nested task belongs to the task it is nested in")
    child_field = "subTasks" if kind == "meta_workflow" else "behaviorTasks"
    return NewTask(
        kind=kind,
        fields=data,
        state=state,
        output=output,
        children=[
            _new_task(level.child_kind, child, f"{path}.{child_field}[{n}]", task_id or "")  # type: ignore[arg-type]
            for n, child in enumerate(children)
        ],
        id=task_id,
        path=path,
    )


def _level_mutations(
    kind: str,
    name: str,
    node: type,
    output_node: type,
    create_input: type,
    update_input: type,
    output_input: type,
) -> list[tuple[str, Any]]:
    """create/update/delete/finalize for one level, and create/update/delete of its output."""
    level = LEVELS[kind]
    label = level.label
    success = _payload(f"{name}Success", "task", node, f"The {label} as stored after the change.")
    result = _union(f"{name}Result", success, f"Outcome of writing a {label}.")
    output_result = Annotated[
        output_node | NotFoundError | ValidationError | TransitionError | ConflictError,
        strawberry.union(
            f"{output_node.__name__}Result", description=f"Outcome of writing a {label}'s output."
        ),
    ]

    def task_success(written: Written) -> Any:
        return success(task=from_doc(node, level.spec, written.doc), events=_events(written))

    def output_success(doc: dict[str, Any]) -> Any:
        return from_doc(output_node, level.output_spec, doc)

    async def create(
        self: Any, info: strawberry.Info, input: create_input, idempotency_key: IdempotencyKey = None
    ) -> result:  # type: ignore[valid-type]
        async def work() -> Written:
            new = _new_task(kind, i.to_fields(input), "input")
            return await info.context.app.hierarchy.create(new, idempotency_key=idempotency_key)

        return await _answer(work(), task_success)

    async def update(
        self: Any,
        info: strawberry.Info,
        id: strawberry.ID,
        input: update_input,
        idempotency_key: IdempotencyKey = None,
    ) -> result:  # type: ignore[valid-type]
        work = info.context.app.hierarchy.update(
            kind, id, i.to_fields(input), idempotency_key=idempotency_key
        )
        return await _answer(work, task_success)

    async def delete(
        self: Any,
        info: strawberry.Info,
        id: strawberry.ID,
        cascade: Annotated[
            bool, strawberry.argument(description="Also delete every task below it, with outputs and states.")
        ] = False,
    ) -> DeleteResult:
        work = info.context.app.hierarchy.delete(kind, id, cascade=cascade)
        return await _answer(work, lambda w: DeleteSuccess(deleted_ids=w.deleted_ids, events=_events(w)))

    async def finalize(
        self: Any, info: strawberry.Info, id: strawberry.ID, idempotency_key: IdempotencyKey = None
    ) -> result:  # type: ignore[valid-type]
        work = info.context.app.hierarchy.finalize(kind, id, idempotency_key=idempotency_key)
        return await _answer(work, task_success)

    async def create_output(
        self: Any, info: strawberry.Info, task_id: strawberry.ID, input: output_input
    ) -> output_result:  # type: ignore[valid-type]
        work = info.context.app.hierarchy.put_output(
            level.output_spec, task_id, i.to_fields(input), create=True
        )
        return await _answer(work, output_success)

    async def update_output(
        self: Any, info: strawberry.Info, task_id: strawberry.ID, input: output_input
    ) -> output_result:  # type: ignore[valid-type]
        work = info.context.app.hierarchy.put_output(
            level.output_spec, task_id, i.to_fields(input), create=False
        )
        return await _answer(work, output_success)

    async def delete_output(self: Any, info: strawberry.Info, task_id: strawberry.ID) -> output_result:  # type: ignore[valid-type]
        work = info.context.app.hierarchy.delete_output(level.output_spec, task_id)
        return await _answer(work, output_success)

    task_name, output_name = _snake(name), _snake(output_node.__name__)
    table = [
        (
            f"create_{task_name}",
            create,
            f"Create a {label} (and anything nested in the input), its state and output, in one transaction.",
        ),
        (f"update_{task_name}", update, f"Change fields of a {label}; refused once it is finalized."),
        (
            f"delete_{task_name}",
            delete,
            f"Delete a {label} with its output and state; refused if it has children unless `cascade`.",
        ),
        (f"finalize_{task_name}", finalize, f"Finalize a {label} (one-way); it then refuses edits."),
        (f"create_{output_name}", create_output, f"Create the output document of a {label}."),
        (f"update_{output_name}", update_output, f"Change fields of a {label}'s output."),
        (f"delete_{output_name}", delete_output, f"Delete the output document of a {label}."),
    ]
    return [(field, strawberry.mutation(resolver=fn, description=text)) for field, fn, text in table]


def _snake(name: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name).lstrip("_")


_FIELDS = [
    *_level_mutations(
        "meta_workflow",
        "MetaWorkflowTask",
        MetaWorkflowTask,
        TaskOutput,
        i.CreateMetaWorkflowTaskInput,
        i.UpdateMetaWorkflowTaskInput,
        i.TaskOutputInput,
    ),
    *_level_mutations(
        "sub_task",
        "SubTask",
        SubTask,
        SubTaskOutput,
        i.CreateSubTaskInput,
        i.UpdateSubTaskInput,
        i.SubTaskOutputInput,
    ),
    *_level_mutations(
        "behavior_task",
        "BehaviorTask",
        BehaviorTask,
        BehaviorTaskOutput,
        i.CreateBehaviorTaskInput,
        i.UpdateBehaviorTaskInput,
        i.BehaviorTaskOutputInput,
    ),
]
# The name for creating a whole tree: the same operation as createMetaWorkflowTask.
_FIELDS.append(
    (
        "create_workflow",
        strawberry.mutation(
            resolver=dict(_FIELDS)["create_meta_workflow_task"].base_resolver.wrapped_func,
            description="Create a meta task with its nested sub-tasks, behavior tasks, states and outputs"
            " in one transaction: all or nothing.",
        ),
    )
)


def _state_success(written: Written) -> Any:
    return AgentTaskSuccess(
        state=from_doc(AgentTaskState, AgentTaskState.spec, written.doc), events=_events(written)
    )


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
        data = i.to_fields(input)
        work = info.context.app.hierarchy.create_standalone(
            data.pop("id", None), data, idempotency_key=idempotency_key
        )
        return await _answer(work, _state_success)

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
        data = i.to_fields(input)
        work = info.context.app.hierarchy.create_standalone(
            data.pop("id", None), data, idempotency_key=idempotency_key, parent_id=parent_id
        )
        return await _answer(work, _state_success)

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
        work = info.context.app.hierarchy.update_state(
            id, i.to_fields(input), expected_version=expected_version, idempotency_key=idempotency_key
        )
        return await _answer(work, _state_success)

    @strawberry.mutation(
        description="Delete a standalone task; refused while other tasks depend on it or name it as parent."
    )
    async def delete_agent_task(self, info: strawberry.Info, id: strawberry.ID) -> DeleteResult:
        work = info.context.app.hierarchy.delete_standalone(id)
        return await _answer(work, lambda w: DeleteSuccess(deleted_ids=w.deleted_ids, events=_events(w)))


HierarchyMutation = strawberry.type(
    type("HierarchyMutation", (), dict(_FIELDS)),
    description="Creating, editing, deleting and finalizing tasks and outputs.",
)

__all__ = ["ERRORS", "AgentTaskMutation", "Error", "HierarchyMutation"]
