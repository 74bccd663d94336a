"""The task hierarchy (meta workflow → sub-task → behavior task), the `Task` interface and execution states.

These types reference one another (a state's dependency points at a task, a task has a state), so they
live in one module. Stored fields are plain attributes (cheap to resolve); relations are async resolvers
that go through the request's loaders, so a whole tree costs one query per collection per level.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry.scalars import JSON

from app.api.errors import page_size
from app.api.execution import direct
from app.api.types.convert import from_doc
from app.api.types.enums import TaskKind, TaskPriority, TaskStatus
from app.api.types.events import EventType, TaskEvent, event_from_doc
from app.api.types.fetch import load_many, load_one, paced, prefetch, resolve_one
from app.api.types.outputs import BehaviorTaskOutput, SubTaskOutput, TaskOutput
from app.api.types.progress import WorkflowProgress, workflow_progress
from app.domain import Status, parse_status
from app.lifecycle import retry_policy
from app.lifecycle import state_machine as sm
from app.lifecycle.expiry import present
from app.store import collections as c
from app.store.collections import CollectionSpec

NESTED_EVENTS = (
    "The first events of this task, oldest first (at most `first`). This field does not page: to read "
    "further, use the root `taskEvents(taskId: ..., after: <cursor of the last event here>)`."
)
EventTypes = Annotated[
    list[EventType] | None,
    strawberry.argument(description="Only events of these types (an empty list matches none)."),
]
EventsFirst = Annotated[
    int | None,
    strawberry.argument(description="How many events at most (0 to the server's maximum page size)."),
]
NESTED_EVENTS_DEFAULT = 20


async def load_events(
    info: strawberry.Info, task_id: str, types: list[EventType] | None, first: int | None
) -> list[TaskEvent]:
    """The first events of a task through the request's loader, so a whole tree costs one `aggregate`."""
    first = page_size(first, NESTED_EVENTS_DEFAULT, info.context.settings.max_page_size)
    loader = info.context.loaders.events_by_task
    docs = await loader.load(loader.key(task_id, types, first))
    return [event_from_doc(doc) for doc in docs]


@strawberry.interface(description="Anything in the task hierarchy: it has an id and an execution state.")
class Task:
    id: strawberry.ID = strawberry.field(description="The task's id (its seed id, also its `_id`).")

    @strawberry.field(description="The execution state of this task (agent, status, progress, attempts…).")
    @direct
    def state(self, info: strawberry.Info) -> AgentTaskState | None:
        # The object when already loaded, else an awaitable of it, which graphql-core awaits (fetch.py).
        return resolve_one(info, AgentTaskState, c.AGENT_TASK_STATES, self.id)  # type: ignore[return-value]

    @strawberry.field(description=NESTED_EVENTS)
    async def events(
        self, info: strawberry.Info, types: EventTypes = None, first: EventsFirst = NESTED_EVENTS_DEFAULT
    ) -> list[TaskEvent]:
        return await load_events(info, self.id, types, first)


@strawberry.type(description="A meta workflow task: the top of a workflow tree (seed 002 MetaWorkflowTask).")
class MetaWorkflowTask(Task):
    spec: ClassVar[CollectionSpec] = c.META_WORKFLOW_TASKS

    task_id: strawberry.ID = strawberry.field(
        description="Unique id of the meta workflow task (same as `id`)."
    )
    meta_workflow_id: str = strawberry.field(default="", description="Id of the high-level workflow.")
    dsl_workflow_id: str = strawberry.field(default="", description="Id of the associated DSL workflow.")
    sub_task_ids: list[str] = strawberry.field(
        default_factory=list, description="Ids of the sub-tasks under this meta task, in order."
    )
    meta_workflow_graph: JSON = strawberry.field(default_factory=dict, description="Workflow graph topology.")
    personality_workflow_id: str = strawberry.field(
        default="", description="Id of the associated personality workflow."
    )
    personality_type: str = strawberry.field(default="", description="Category or type of the personality.")
    is_finalized: bool = strawberry.field(default=False, description="Whether the task has been finalized.")

    @strawberry.field(description="The sub-tasks, in `subTaskIds` order.")
    async def sub_tasks(self, info: strawberry.Info) -> list[SubTask]:
        sub_tasks = await load_many(info, SubTask, c.SUB_TASKS, self.sub_task_ids)
        await prefetch(info, [s.id for s in sub_tasks], c.SUB_TASK_OUTPUTS)
        return paced(sub_tasks)  # type: ignore[return-value]  # graphql-core completes it item by item

    @strawberry.field(description="The output document of this meta task, if any.")
    @direct
    def output(self, info: strawberry.Info) -> TaskOutput | None:
        # The object when already loaded, else an awaitable of it, which graphql-core awaits (fetch.py).
        return resolve_one(info, TaskOutput, c.TASK_OUTPUTS, self.id)  # type: ignore[return-value]

    @strawberry.field(description="Roll-up of the whole tree below: task counts per status and a percentage.")
    async def progress(self, info: strawberry.Info) -> WorkflowProgress:
        return await workflow_progress(info.context.loaders, self.id, self.sub_task_ids)


@strawberry.type(description="A sub-task: one logical step of a meta workflow (seed 002 SubTaskDefinition).")
class SubTask(Task):
    spec: ClassVar[CollectionSpec] = c.SUB_TASKS

    sub_task_id: strawberry.ID = strawberry.field(description="Unique id of the sub-task (same as `id`).")
    personality_workflow_id: str = strawberry.field(default="", description="Personality workflow id.")
    personality_type: str = strawberry.field(default="", description="Type of personality behavior.")
    behavior_workflow_id: str = strawberry.field(default="", description="Id of the behavior workflow.")
    behavior_task_ids: list[str] = strawberry.field(
        default_factory=list, description="Ids of the behavior tasks of this sub-task, in order."
    )
    behavior_dag_data: JSON = strawberry.field(
        default_factory=dict, description="DAG of the behavior tasks inside this sub-task."
    )
    task_id: str = strawberry.field(default="", description="Id of the parent meta workflow task.")
    prev_sub_task_id: str | None = strawberry.field(
        default=None, description="Id of the previous sub-task in the chain, if any."
    )
    is_finalized: bool = strawberry.field(default=False, description="Whether the sub-task is finalized.")

    @strawberry.field(description="The parent meta workflow task.")
    async def meta_task(self, info: strawberry.Info) -> MetaWorkflowTask | None:
        return await load_one(info, MetaWorkflowTask, c.META_WORKFLOW_TASKS, self.task_id or None)

    @strawberry.field(description="The previous sub-task in the chain (`prevSubTaskId`), if any.")
    async def previous_sub_task(self, info: strawberry.Info) -> SubTask | None:
        return await load_one(info, SubTask, c.SUB_TASKS, self.prev_sub_task_id)

    @strawberry.field(description="The behavior tasks, in `behaviorTaskIds` order.")
    async def behavior_tasks(self, info: strawberry.Info) -> list[BehaviorTask]:
        behavior_tasks = await load_many(info, BehaviorTask, c.BEHAVIOR_TASKS, self.behavior_task_ids)
        await prefetch(info, [b.id for b in behavior_tasks], c.BEHAVIOR_TASK_OUTPUTS)
        return paced(behavior_tasks)  # type: ignore[return-value]  # graphql-core completes it item by item

    @strawberry.field(description="The output document of this sub-task, if any.")
    @direct
    def output(self, info: strawberry.Info) -> SubTaskOutput | None:
        # The object when already loaded, else an awaitable of it, which graphql-core awaits (fetch.py).
        return resolve_one(info, SubTaskOutput, c.SUB_TASK_OUTPUTS, self.id)  # type: ignore[return-value]


@strawberry.type(
    description="A behavior task: one atomic action of a sub-task (seed 002 BehaviorTaskDefinition)."
)
class BehaviorTask(Task):
    spec: ClassVar[CollectionSpec] = c.BEHAVIOR_TASKS

    behavior_task_id: strawberry.ID = strawberry.field(
        description="Unique id of the behavior task (same as `id`)."
    )
    sub_task_id: str = strawberry.field(default="", description="Id of the parent sub-task.")
    action_id: str = strawberry.field(default="", description="Id of the action.")
    action_type: str = strawberry.field(default="", description="Main type of the action.")
    action_sub_type: str = strawberry.field(default="", description="Detailed subtype of the action.")
    is_finalized: bool = strawberry.field(default=False, description="Whether the task has been finalized.")

    @strawberry.field(description="The parent sub-task.")
    async def sub_task(self, info: strawberry.Info) -> SubTask | None:
        return await load_one(info, SubTask, c.SUB_TASKS, self.sub_task_id or None)

    @strawberry.field(description="The output document of this behavior task, if any.")
    @direct
    def output(self, info: strawberry.Info) -> BehaviorTaskOutput | None:
        # The object when already loaded, else an awaitable of it, which graphql-core awaits (fetch.py).
        return resolve_one(info, BehaviorTaskOutput, c.BEHAVIOR_TASK_OUTPUTS, self.id)  # type: ignore[return-value]


#: Which GraphQL type and collection holds a task of each kind.
TASK_TYPES: dict[str, type[MetaWorkflowTask] | type[SubTask] | type[BehaviorTask]] = {
    TaskKind.META_WORKFLOW: MetaWorkflowTask,
    TaskKind.SUB_TASK: SubTask,
    TaskKind.BEHAVIOR_TASK: BehaviorTask,
}


async def load_task(info: strawberry.Info, task_id: str, kind: TaskKind | None) -> Task | None:
    """The hierarchy task with this id; looked up in the collection its kind names, else in all three.

    States written by other programs carry no kind, so the fallback asks the three loaders at once
    (still one batched query per collection).
    """
    if kind is TaskKind.STANDALONE:
        return None
    kinds = [kind.value] if kind is not None else list(TASK_TYPES)
    found = await asyncio.gather(*(load_one(info, TASK_TYPES[k], TASK_TYPES[k].spec, task_id) for k in kinds))
    return next((task for task in found if task is not None), None)


@strawberry.type(description="The last error a task met (seed 000 `last_error`).")
class LastError:
    timestamp: dt.datetime | None = strawberry.field(default=None, description="When the error happened.")
    message: str = strawberry.field(default="", description="What went wrong.")
    details: str | None = strawberry.field(default=None, description="More detail, e.g. a stack trace.")
    error_type: str | None = strawberry.field(
        default=None, description="The type the worker gave (`failTask(errorType:)`), if any."
    )


@strawberry.type(
    description="How a failed attempt is retried (Temporal's RetryPolicy): the task's own fields over the"
    " server's defaults (docs/STEERING.md)."
)
class RetryPolicy:
    initial_interval: float = strawberry.field(description="Seconds before the second attempt (0: at once).")
    backoff_coefficient: float = strawberry.field(description="Each delay is this times the one before.")
    maximum_interval: float = strawberry.field(
        description="The longest delay, in seconds (0: 100 × initialInterval)."
    )
    maximum_attempts: int = strawberry.field(
        description="Attempts allowed (0 = unlimited); alias maxAttempts."
    )
    non_retryable_error_types: list[str] = strawberry.field(
        description="A failTask(errorType:) in this list fails the task for good."
    )
    jitter: float = strawberry.field(description="Each delay is spread uniformly over delay × (1 ± jitter).")


@strawberry.type(description="A dependency of a task: another task that must reach a given status first.")
class TaskDependency:
    task_id: strawberry.ID = strawberry.field(description="Id of the task depended on.")
    status_expected: str = strawberry.field(
        default=Status.COMPLETED,
        description="Status the task depended on must reach, as the stored string (`completed`: lower case).",
        deprecation_reason="Use `expectedStatus`, the same status as the `TaskStatus` enum (the type"
        " `DependencyInput.statusExpected` takes). This string stays for existing clients.",
    )

    @strawberry.field(
        description="Status the task depended on must reach (`DependencyInput.statusExpected`); null only for"
        " a status this server does not know, stored by another program."
    )
    def expected_status(self) -> TaskStatus | None:
        # Read as every stored status is read (`parse_status`: "canceled", "In-Progress"…); none = completed.
        return parse_status(self.status_expected or Status.COMPLETED)

    @strawberry.field(description="The execution state of the task depended on.")
    @direct
    def state(self, info: strawberry.Info) -> AgentTaskState | None:
        # The object when already loaded, else an awaitable of it, which graphql-core awaits (fetch.py).
        return resolve_one(info, AgentTaskState, c.AGENT_TASK_STATES, self.task_id)  # type: ignore[return-value]

    @strawberry.field(
        description="The hierarchy task depended on (null for a standalone task or a dangling id)."
    )
    async def task(self, info: strawberry.Info) -> Task | None:
        state = await load_one(info, AgentTaskState, c.AGENT_TASK_STATES, self.task_id)
        return await load_task(info, self.task_id, state.task_kind if state else None)

    @strawberry.field(description="Whether the task depended on has reached `expectedStatus`.")
    @direct
    def satisfied(self, info: strawberry.Info) -> bool:
        # Compares the stored document directly: building a whole AgentTaskState per dependency just to
        # read its status was a large share of a tree query's time.
        loader = info.context.loaders.state
        known, doc = loader.peek(self.task_id)
        if known:
            return self._met(doc)
        # An awaitable of the answer, which graphql-core awaits (see fetch.py).
        return self._met_later(loader.load(self.task_id))  # type: ignore[return-value]

    def _met(self, doc: Mapping[str, Any] | None) -> bool:
        if doc is None:
            return False
        return sm.normalise_status(present(doc).get("status")) == sm.normalise_status(self.status_expected)

    async def _met_later(self, doc: Awaitable[Mapping[str, Any] | None]) -> bool:
        return self._met(await doc)


@strawberry.type(
    description="Execution state of one task run by one agent (seed 000, with seed 001's extras)."
)
class AgentTaskState:
    spec: ClassVar[CollectionSpec] = c.AGENT_TASK_STATES

    id: strawberry.ID = strawberry.field(description="Id of the task this state belongs to.")
    task_id: strawberry.ID = strawberry.field(description="Id of the task (same as `id`).")
    agent_name: str = strawberry.field(default="", description="Agent processing this task.")
    triggering_event_id: str | None = strawberry.field(
        default=None, description="Id of the event that triggered this task (API request, previous task…)."
    )
    input_parameters: JSON = strawberry.field(
        default_factory=dict, description="Parameters given to the agent."
    )
    status: TaskStatus = strawberry.field(default=TaskStatus.PENDING, description="Execution status.")
    progress_percentage: int = strawberry.field(default=0, description="Estimated progress, 0–100.")
    current_step: str | None = strawberry.field(default=None, description="The step being processed now.")
    attempts: int = strawberry.field(default=0, description="How many times this task has been attempted.")
    last_error: LastError | None = strawberry.field(default=None, description="The last error, if any.")
    output_references: JSON = strawberry.field(
        default_factory=dict, description="References to the outputs this task generated."
    )
    dependencies: list[TaskDependency] = strawberry.field(
        default_factory=list, description="Tasks that must reach a given status before this one may start."
    )
    created_at: dt.datetime | None = strawberry.field(default=None, description="When the state was created.")
    updated_at: dt.datetime | None = strawberry.field(default=None, description="When it last changed.")
    expires_at: dt.datetime | None = strawberry.field(
        default=None, description="When the task times out if not finished (optional)."
    )
    name: str | None = strawberry.field(default=None, description="Human-readable task name (seed 001).")
    description: str | None = strawberry.field(default=None, description="What the task is about (seed 001).")
    priority: TaskPriority = strawberry.field(default=TaskPriority.MEDIUM, description="Urgency (seed 001).")
    started_at: dt.datetime | None = strawberry.field(
        default=None, description="When the last attempt started."
    )
    completed_at: dt.datetime | None = strawberry.field(default=None, description="When it completed.")
    execution_time_seconds: float | None = strawberry.field(
        default=None, description="How long the successful attempt took, in seconds."
    )
    parent_task_id: str | None = strawberry.field(default=None, description="Parent task id (seed 001).")
    max_attempts: int | None = strawberry.field(
        default=None, description="Attempts allowed before a non-final failure becomes final."
    )
    task_kind: TaskKind | None = strawberry.field(
        default=None, description="Which kind of task this state belongs to (unknown for foreign documents)."
    )
    workflow_id: str | None = strawberry.field(
        default=None, description="Id of the meta workflow task whose tree holds this task, if any."
    )
    version: int = strawberry.field(default=0, description="Change counter, for compare-and-set updates.")
    lease_holder: str | None = strawberry.field(
        default=None,
        description="Who holds the lease of this task in progress (the claim's `workerId`, else its agent);"
        " null when there is no lease.",
    )
    lease_expires_at: dt.datetime | None = strawberry.field(
        default=None,
        description="When the lease runs out unless a heartbeat extends it; the sweep then returns the task"
        " to retrying. Null when there is no lease.",
    )
    last_heartbeat_at: dt.datetime | None = strawberry.field(
        default=None, description="When the holder last sent heartbeatTask in this attempt (null: never)."
    )
    next_attempt_at: dt.datetime | None = strawberry.field(
        default=None,
        description="A retrying task is not claimed before this (its retry policy's delay, or the worker's"
        " nextRetryDelay); null: at once.",
    )
    not_before: dt.datetime | None = strawberry.field(
        default=None, description="A delayed start: the task is not claimed before this (null: at once)."
    )
    schedule_to_start_timeout: float | None = strawberry.field(
        default=None,
        description="Seconds the task may wait, once schedulable (created, released, retrying), for a start;"
        " then it fails (TASK_TIMED_OUT SCHEDULE_TO_START). 0 or null: none.",
    )
    start_to_close_timeout: float | None = strawberry.field(
        default=None,
        description="Seconds one attempt may run; then it fails and the retry policy applies"
        " (START_TO_CLOSE). 0 or null: none.",
    )
    schedule_to_close_timeout: float | None = strawberry.field(
        default=None,
        description="Seconds the whole task may take from its creation, retries included; then it fails"
        " for good (SCHEDULE_TO_CLOSE). 0 or null: none.",
    )
    schedule_to_start_deadline: dt.datetime | None = strawberry.field(
        default=None, description="When the schedule-to-start timeout runs out (null: not running)."
    )
    start_to_close_deadline: dt.datetime | None = strawberry.field(
        default=None, description="When the running attempt's start-to-close timeout runs out (null: none)."
    )
    schedule_to_close_deadline: dt.datetime | None = strawberry.field(
        default=None, description="When the schedule-to-close timeout runs out (null: not running)."
    )
    traceparent: str | None = strawberry.field(
        default=None,
        description='W3C trace context its attempts continue: a worker starts its "task attempt" span as'
        " a child of it (docs/TRACING.md). Null: none was given or traced when it was created.",
    )
    paused_from: TaskStatus | None = strawberry.field(
        default=None,
        description="A paused task: the status resumeTask restores (PENDING, RETRYING or"
        " AWAITING_DEPENDENCY; pending and awaiting are decided by its dependencies at the resume).",
    )
    paused_at: dt.datetime | None = strawberry.field(default=None, description="A paused task: since when.")
    pause_requested: bool = strawberry.field(
        default=False,
        description="A task in progress asked to pause (pauseTask): its attempt runs on and its worker is"
        " not stopped; completing completes it, a failure that would be retried (or a lapsed lease) pauses"
        " it instead.",
    )
    concurrency_key: str | None = strawberry.field(
        default=None,
        description="The task's concurrency key: a limit on KEY caps its tasks in progress (null: none).",
    )
    retry_policy: strawberry.Private[Any] = None

    @strawberry.field(
        name="retryPolicy",
        description="The retry policy in force: the task's own fields over the server's defaults.",
    )
    def effective_retry_policy(self, info: strawberry.Info) -> RetryPolicy:
        policy = retry_policy.effective(self.retry_policy, info.context.app.lifecycle.retry_policy)
        limit = (
            sm.DEFAULT_MAX_ATTEMPTS
            if self.max_attempts is None or self.max_attempts < 0
            else self.max_attempts
        )
        return RetryPolicy(
            initial_interval=policy.get("initial_interval", 0.0),
            backoff_coefficient=policy.get("backoff_coefficient", 2.0),
            maximum_interval=policy.get("maximum_interval", 0.0),
            maximum_attempts=limit,
            non_retryable_error_types=policy.get("non_retryable_error_types", []),
            jitter=policy.get("jitter", 0.0),
        )

    @strawberry.field(description="The hierarchy task this state belongs to (null for a standalone task).")
    async def task(self, info: strawberry.Info) -> Task | None:
        return await load_task(info, self.id, self.task_kind)

    @strawberry.field(description="The parent task's state (`parentTaskId`, seed 001), if any.")
    async def parent(self, info: strawberry.Info) -> AgentTaskState | None:
        return await load_one(info, AgentTaskState, c.AGENT_TASK_STATES, self.parent_task_id)

    @strawberry.field(
        description="The tasks naming this one as their parent (seed 001 sub-tasks), oldest first."
    )
    async def subtasks(self, info: strawberry.Info) -> list[AgentTaskState]:
        docs = await info.context.loaders.states_by_parent.load(self.id)
        return [from_doc(AgentTaskState, c.AGENT_TASK_STATES, doc) for doc in docs]

    @strawberry.field(description=NESTED_EVENTS)
    async def events(
        self, info: strawberry.Info, types: EventTypes = None, first: EventsFirst = NESTED_EVENTS_DEFAULT
    ) -> list[TaskEvent]:
        return await load_events(info, self.id, types, first)
