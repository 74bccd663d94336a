"""GraphQL input types for writing tasks, and their conversion to stored (snake_case) fields.

Input attribute names are the seeds' field names, so `to_fields` only has to drop what the client did
not send (`UNSET`), unwrap enums and convert nested inputs; `null` is kept (it clears a field).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from enum import Enum
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from app.api.types.enums import TaskPriority, TaskStatus

UNSET: Any = strawberry.UNSET

#: The `idempotencyKey` argument of creates and transitions (the event recorders word theirs differently).
IdempotencyKey = Annotated[
    str | None,
    strawberry.argument(
        description="A retried request with the same key returns the first answer, applying nothing twice."
    ),
]


def to_fields(value: Any) -> Any:
    """An input object as a dict of the fields that were given (recursively); other values as stored."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_fields(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not UNSET
        }
    if isinstance(value, list):
        return [to_fields(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value


@strawberry.input(description="A task this one depends on, and the status it must reach first.")
class DependencyInput:
    task_id: strawberry.ID = strawberry.field(description="Id of the task depended on.")
    status_expected: TaskStatus = strawberry.field(
        default=TaskStatus.COMPLETED, description="Status it must reach (default completed)."
    )


@strawberry.input(
    description="A retry policy (Temporal's RetryPolicy); omitted fields come from the server's defaults"
    " (docs/STEERING.md)."
)
class RetryPolicyInput:
    initial_interval: float | None = strawberry.field(
        default=UNSET, description="Seconds before the second attempt (0: at once)."
    )
    backoff_coefficient: float | None = strawberry.field(
        default=UNSET, description="Each delay is this times the one before (1 to 100)."
    )
    maximum_interval: float | None = strawberry.field(
        default=UNSET, description="The longest delay, in seconds (0: 100 × initialInterval)."
    )
    maximum_attempts: int | None = strawberry.field(
        default=UNSET, description="Attempts allowed (0 = unlimited); the same value as `maxAttempts`."
    )
    non_retryable_error_types: list[str] | None = strawberry.field(
        default=UNSET, description="A failTask(errorType:) in this list fails the task for good."
    )
    jitter: float | None = strawberry.field(
        default=UNSET, description="Spread each delay uniformly over delay × (1 ± jitter), 0 to 1."
    )


@strawberry.input(
    description="Execution-state fields a client sets (status and counters belong to the lifecycle)."
)
class TaskStateInput:
    agent_name: str | None = strawberry.field(default=UNSET, description="Agent that will process the task.")
    priority: TaskPriority | None = strawberry.field(default=UNSET, description="Urgency (default medium).")
    dependencies: list[DependencyInput] | None = strawberry.field(
        default=UNSET, description="Tasks that must reach a status first; unknown ids and cycles are refused."
    )
    expires_at: dt.datetime | None = strawberry.field(
        default=UNSET, description="After this, an unfinished task is failed as expired."
    )
    input_parameters: JSON | None = strawberry.field(default=UNSET, description="Parameters for the agent.")
    output_references: JSON | None = strawberry.field(default=UNSET, description="References to outputs.")
    triggering_event_id: str | None = strawberry.field(default=UNSET, description="What triggered the task.")
    name: str | None = strawberry.field(default=UNSET, description="Human-readable name.")
    description: str | None = strawberry.field(default=UNSET, description="What the task is about.")
    max_attempts: int | None = strawberry.field(
        default=UNSET,
        description="Attempts allowed before a non-final failure becomes final (default 3; 0 = unlimited);"
        " alias of retryPolicy.maximumAttempts.",
    )
    retry_policy: RetryPolicyInput | None = strawberry.field(
        default=UNSET,
        description="How failed attempts are retried; in createWorkflow, a task's policy is inherited by"
        " the tasks below it that name none.",
    )
    not_before: dt.datetime | None = strawberry.field(
        default=UNSET, description="A delayed start: the task is not claimed before this."
    )
    schedule_to_start_timeout: float | None = strawberry.field(
        default=UNSET,
        description="Seconds the task may wait for a start once schedulable, then it fails (0: none; default:"
        " the server's SCHEDULE_TO_START_TIMEOUT_SECONDS). Inherited down a createWorkflow subtree.",
    )
    start_to_close_timeout: float | None = strawberry.field(
        default=UNSET,
        description="Seconds one attempt may run, then it fails and the retry policy applies (0: none;"
        " default: START_TO_CLOSE_TIMEOUT_SECONDS). Inherited down a createWorkflow subtree.",
    )
    schedule_to_close_timeout: float | None = strawberry.field(
        default=UNSET,
        description="Seconds the whole task may take from its creation, retries included, then it fails"
        " (0: none; default: SCHEDULE_TO_CLOSE_TIMEOUT_SECONDS). Inherited down a createWorkflow subtree.",
    )
    traceparent: str | None = strawberry.field(
        default=UNSET,
        description="W3C trace context (`00-<trace id>-<span id>-<flags>`) the task's attempts continue;"
        " default: the creating request's (its span, or its `traceparent` header).",
    )
    concurrency_key: str | None = strawberry.field(
        default=UNSET,
        description="A concurrency key (e.g. a model or a tenant): a limit on KEY caps its tasks in"
        " progress; in createWorkflow, inherited by the tasks below that name none.",
    )


@strawberry.input(description="A standalone task (seed 000/001): a state with no hierarchy task.")
class CreateAgentTaskInput(TaskStateInput):
    id: strawberry.ID | None = strawberry.field(
        default=None, description="Task id; generated (uuid4) if omitted."
    )
    parent_task_id: strawberry.ID | None = strawberry.field(
        default=UNSET, description="Parent task (seed 001)."
    )


@strawberry.input(description="Fields of a task's state to change; omitted fields are left as they are.")
class UpdateAgentTaskInput(TaskStateInput):
    parent_task_id: strawberry.ID | None = strawberry.field(
        default=UNSET, description="Parent task (seed 001)."
    )


@strawberry.input(description="Output of a meta workflow task (seed 002 TaskOutputData).")
class TaskOutputInput:
    output_framedb_ptr: JSON | None = strawberry.field(
        default=UNSET, description="Pointer to the output in FrameDB."
    )
    task_data_ptr: JSON | None = strawberry.field(default=UNSET, description="Additional task output data.")


@strawberry.input(description="Output of a sub-task (seed 002 SubTaskOutputData).")
class SubTaskOutputInput:
    output_framedb_ptr: JSON | None = strawberry.field(
        default=UNSET, description="Pointer to the output in FrameDB."
    )
    processor_subject_ids: list[str] | None = strawberry.field(
        default=UNSET, description="Subjects involved."
    )
    processor_subjects_graph: JSON | None = strawberry.field(
        default=UNSET, description="Graph of the subjects."
    )
    is_finalized_step: bool | None = strawberry.field(
        default=UNSET, description="Whether the step is finalized."
    )
    sub_task_data_ptr: JSON | None = strawberry.field(default=UNSET, description="Additional data.")
    prev_sub_task_id: str | None = strawberry.field(
        default=UNSET, description="Previous sub-task, for linkage."
    )


@strawberry.input(description="Output of a behavior task (seed 002 BehaviorTaskOutputData).")
class BehaviorTaskOutputInput:
    output_framedb_ptr: JSON | None = strawberry.field(
        default=UNSET, description="Pointer to the output in FrameDB."
    )
    processor_subject_ids: list[str] | None = strawberry.field(
        default=UNSET, description="Subjects that processed it."
    )
    processor_subjects_graph: JSON | None = strawberry.field(
        default=UNSET, description="Subject-level graph."
    )
    processor_modules_graph: JSON | None = strawberry.field(default=UNSET, description="Module-level graph.")
    is_finalized_step: bool | None = strawberry.field(
        default=UNSET, description="Whether the step is finalized."
    )
    behavior_data_ptr: JSON | None = strawberry.field(default=UNSET, description="Additional output.")


@strawberry.input(
    description="Fields of a meta workflow task to change; omitted fields are left as they are."
)
class UpdateMetaWorkflowTaskInput:
    meta_workflow_id: str | None = strawberry.field(
        default=UNSET, description="Id of the high-level workflow."
    )
    dsl_workflow_id: str | None = strawberry.field(default=UNSET, description="Associated DSL workflow id.")
    meta_workflow_graph: JSON | None = strawberry.field(default=UNSET, description="Workflow graph topology.")
    personality_workflow_id: str | None = strawberry.field(
        default=UNSET, description="Personality workflow id."
    )
    personality_type: str | None = strawberry.field(default=UNSET, description="Category of the personality.")


@strawberry.input(description="Fields of a sub-task to change; a new `taskId` moves it to another meta task.")
class UpdateSubTaskInput:
    task_id: strawberry.ID | None = strawberry.field(
        default=UNSET, description="New parent meta task (a move)."
    )
    personality_workflow_id: str | None = strawberry.field(
        default=UNSET, description="Personality workflow id."
    )
    personality_type: str | None = strawberry.field(
        default=UNSET, description="Type of personality behavior."
    )
    behavior_workflow_id: str | None = strawberry.field(
        default=UNSET, description="Id of the behavior workflow."
    )
    behavior_dag_data: JSON | None = strawberry.field(default=UNSET, description="DAG of the behavior tasks.")
    prev_sub_task_id: str | None = strawberry.field(default=UNSET, description="Previous sub-task.")


@strawberry.input(description="Fields of a behavior task to change; a new `subTaskId` moves it.")
class UpdateBehaviorTaskInput:
    sub_task_id: strawberry.ID | None = strawberry.field(
        default=UNSET, description="New parent sub-task (a move)."
    )
    action_id: str | None = strawberry.field(default=UNSET, description="Id of the action.")
    action_type: str | None = strawberry.field(default=UNSET, description="Main type of the action.")
    action_sub_type: str | None = strawberry.field(default=UNSET, description="Detailed subtype.")


# The create inputs are the update inputs (the same seed fields) plus an optional id, the task's state,
# its output and, for the upper levels, the children to create with it; only the parent field's
# meaning differs, so it is restated.


@strawberry.input(description="A behavior task to create, with its state and optional output.")
class CreateBehaviorTaskInput(UpdateBehaviorTaskInput):
    sub_task_id: strawberry.ID | None = strawberry.field(
        default=UNSET, description="Parent sub-task (required unless nested in a sub-task input)."
    )
    id: strawberry.ID | None = strawberry.field(default=None, description="Id; generated (uuid4) if omitted.")
    state: TaskStateInput | None = strawberry.field(default=None, description="Its execution state.")
    output: BehaviorTaskOutputInput | None = strawberry.field(
        default=None, description="Its output, if known."
    )


@strawberry.input(description="A sub-task to create, with its state, optional output and behavior tasks.")
class CreateSubTaskInput(UpdateSubTaskInput):
    task_id: strawberry.ID | None = strawberry.field(
        default=UNSET, description="Parent meta task (required unless nested in a workflow input)."
    )
    prev_sub_task_id: str | None = strawberry.field(
        default=UNSET, description="Previous sub-task; inside a workflow, defaults to the one listed before."
    )
    id: strawberry.ID | None = strawberry.field(default=None, description="Id; generated (uuid4) if omitted.")
    state: TaskStateInput | None = strawberry.field(default=None, description="Its execution state.")
    output: SubTaskOutputInput | None = strawberry.field(default=None, description="Its output, if known.")
    behavior_tasks: list[CreateBehaviorTaskInput] | None = strawberry.field(
        default=None, description="Behavior tasks to create under it, in order."
    )


@strawberry.input(
    description="A meta workflow task to create, with its whole tree if given (one transaction)."
)
class CreateMetaWorkflowTaskInput(UpdateMetaWorkflowTaskInput):
    id: strawberry.ID | None = strawberry.field(default=None, description="Id; generated (uuid4) if omitted.")
    state: TaskStateInput | None = strawberry.field(default=None, description="Its execution state.")
    output: TaskOutputInput | None = strawberry.field(default=None, description="Its output, if known.")
    sub_tasks: list[CreateSubTaskInput] | None = strawberry.field(
        default=None,
        description="Sub-tasks to create under it, in order (chained by prevSubTaskId by default).",
    )
