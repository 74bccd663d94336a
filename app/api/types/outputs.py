"""The three output documents of seed 002 (§4–6): one per hierarchy level, keyed by its task's id."""

from __future__ import annotations

from typing import ClassVar

import strawberry
from strawberry.scalars import JSON

from app.store import collections as c
from app.store.collections import CollectionSpec


@strawberry.type(description="Output of a meta workflow task (seed 002 TaskOutputData).")
class TaskOutput:
    spec: ClassVar[CollectionSpec] = c.TASK_OUTPUTS

    task_id: strawberry.ID = strawberry.field(
        description="Id of the meta workflow task this output belongs to."
    )
    output_framedb_ptr: JSON = strawberry.field(
        default_factory=dict, description="Pointer to the output in FrameDB."
    )
    finalized_sub_task_ids: list[str] = strawberry.field(
        default_factory=list, description="Ids of the sub-tasks finalized so far, in finalization order."
    )
    task_data_ptr: JSON = strawberry.field(default_factory=dict, description="Additional task output data.")


@strawberry.type(description="Output of a sub-task (seed 002 SubTaskOutputData).")
class SubTaskOutput:
    spec: ClassVar[CollectionSpec] = c.SUB_TASK_OUTPUTS

    sub_task_id: strawberry.ID = strawberry.field(description="Id of the sub-task this output belongs to.")
    output_framedb_ptr: JSON = strawberry.field(
        default_factory=dict, description="Pointer to the output in FrameDB."
    )
    processor_subject_ids: list[str] = strawberry.field(
        default_factory=list, description="Subject ids involved in processing."
    )
    processor_subjects_graph: JSON = strawberry.field(
        default_factory=dict, description="Graph of the processor subjects."
    )
    is_finalized_step: bool = strawberry.field(default=False, description="Whether this step is finalized.")
    sub_task_data_ptr: JSON = strawberry.field(default_factory=dict, description="Additional output data.")
    prev_sub_task_id: str | None = strawberry.field(
        default=None, description="Id of the previous sub-task, for linkage."
    )


@strawberry.type(description="Output of a behavior task (seed 002 BehaviorTaskOutputData).")
class BehaviorTaskOutput:
    spec: ClassVar[CollectionSpec] = c.BEHAVIOR_TASK_OUTPUTS

    behavior_task_id: strawberry.ID = strawberry.field(
        description="Id of the behavior task this output belongs to."
    )
    output_framedb_ptr: JSON = strawberry.field(
        default_factory=dict, description="Pointer to the behavior output in FrameDB."
    )
    processor_subject_ids: list[str] = strawberry.field(
        default_factory=list, description="Subject ids that processed this task."
    )
    processor_subjects_graph: JSON = strawberry.field(
        default_factory=dict, description="Subject-level execution graph."
    )
    processor_modules_graph: JSON = strawberry.field(
        default_factory=dict, description="Module-level execution graph."
    )
    is_finalized_step: bool = strawberry.field(default=False, description="Whether this step is finalized.")
    behavior_data_ptr: JSON = strawberry.field(
        default_factory=dict, description="Additional behavior task output."
    )
