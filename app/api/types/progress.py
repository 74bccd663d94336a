"""The `WorkflowProgress` type and how a workflow's roll-up is gathered through the request's loaders."""

from __future__ import annotations

from collections.abc import Sequence

import strawberry

from app.api.loaders import Loaders
from app.api.types.enums import TaskStatus
from app.domain import Status
from app.lifecycle.expiry import present
from app.lifecycle.rollup import rollup
from app.lifecycle.transitions import utcnow


@strawberry.type(description="How many tasks of a workflow are in one status.")
class StatusCount:
    status: TaskStatus = strawberry.field(description="The status.")
    count: int = strawberry.field(description="How many tasks below the meta task are in it.")


@strawberry.type(
    description="Roll-up of a workflow tree: task counts per status and a completion percentage."
)
class WorkflowProgress:
    workflow_id: strawberry.ID = strawberry.field(description="Id of the meta workflow task.")
    total: int = strawberry.field(
        description="Number of tasks below the meta task (sub-tasks and behavior tasks)."
    )
    percentage: float = strawberry.field(
        description="Mean progress of the leaf tasks (completed = 100), cancelled ones left out; 0–100."
    )
    counts: list[StatusCount] = strawberry.field(description="Tasks per status, every status listed.")
    completed: int = strawberry.field(description="Tasks completed.")
    failed: int = strawberry.field(description="Tasks failed for good.")
    in_progress: int = strawberry.field(description="Tasks being worked on.")


async def workflow_progress(
    loaders: Loaders, workflow_id: str, sub_task_ids: Sequence[str]
) -> WorkflowProgress:
    """Walk the tree a level at a time through the loaders (so it shares their batches and caches)."""
    sub_docs = [d for d in await loaders.sub_task.load_many(list(sub_task_ids)) if d is not None]
    behavior_ids = [bid for d in sub_docs for bid in d.get("behavior_task_ids") or []]
    behavior_docs = [d for d in await loaders.behavior_task.load_many(behavior_ids) if d is not None]
    with_children = {d.get("sub_task_id") for d in behavior_docs}
    descendant_ids = [d["_id"] for d in sub_docs] + [d["_id"] for d in behavior_docs]
    leaf_ids = {d["_id"] for d in behavior_docs} | {
        d["_id"] for d in sub_docs if d["_id"] not in with_children
    }
    states = await loaders.state.load_many([workflow_id, *descendant_ids])
    now = utcnow()
    # Overdue tasks count as failed, as they read everywhere else (see `present`).
    by_id = {
        task_id: None if doc is None else present(doc, now)
        for task_id, doc in zip([workflow_id, *descendant_ids], states, strict=True)
    }
    result = rollup(
        [by_id[i] for i in descendant_ids],
        [by_id[i] for i in descendant_ids if i in leaf_ids],
        by_id[workflow_id],
    )
    return WorkflowProgress(
        workflow_id=strawberry.ID(workflow_id),
        total=result.total,
        percentage=result.percentage,
        counts=[StatusCount(status=TaskStatus(s), count=n) for s, n in result.counts.items()],
        completed=result.counts[Status.COMPLETED],
        failed=result.counts[Status.FAILED],
        in_progress=result.counts[Status.IN_PROGRESS],
    )
