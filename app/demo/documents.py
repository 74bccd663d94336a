"""Documents in the stored shape, for the demo workflow (`app/demo/workflow.py`), the tests and the
benchmarks: `state_doc` (a state as the services write it), `synthetic_tree` (a workflow of any size) and
`write_documents`, which upserts them (writing twice is harmless).

Seed data, not server code: nothing of the server imports it (an import-linter contract).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from app.domain import Priority, Status, TaskKind
from app.lifecycle.documents import new_state_doc
from app.store import collections as c
from app.store.bulk import upsert_by_id
from app.store.types import Db

#: Documents per collection name, in the stored shape.
Documents = dict[str, list[dict[str, Any]]]

#: The time the demo's history starts at, and the default creation time of `state_doc`'s documents.
T0 = dt.datetime(2026, 11, 20, 14, 0, tzinfo=dt.UTC)


def at(minutes: float) -> dt.datetime:
    """`minutes` minutes after T0."""
    return T0 + dt.timedelta(minutes=minutes)


def state_doc(
    task_id: str,
    kind: str,
    agent: str,
    status: str,
    *,
    workflow_id: str | None,
    minute: float = 0,
    progress: int = 0,
    step: str | None = None,
    attempts: int = 0,
    priority: str = Priority.MEDIUM,
    dependencies: list[dict[str, str]] | None = None,
    name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An `agent_task_states` document as the server writes it, built by the services' own constructor
    (`new_state_doc`) and then moved along its lifecycle to `status` as of `minute` minutes after T0."""
    created = at(minute)
    state = {
        "agent_name": agent,
        "triggering_event_id": extra.pop("triggering_event_id", f"evt_{workflow_id or task_id}"),
        "input_parameters": extra.pop("input_parameters", {}),
        "output_references": extra.pop("output_references", {}),
        "name": name or task_id,
        "description": extra.pop("description", None),
        "priority": priority,
    }
    doc = new_state_doc(task_id, kind, workflow_id, state, dependencies or [], status, created)
    doc.update(
        progress_percentage=100 if status == Status.COMPLETED else progress,
        current_step=step,
        attempts=attempts,
        last_error=extra.pop("last_error", None),
        updated_at=at(minute + 5),
    )
    if status in (Status.IN_PROGRESS, Status.COMPLETED, Status.FAILED, Status.RETRYING):
        doc["started_at"] = at(minute + 1)
    if status == Status.COMPLETED:
        doc["completed_at"] = at(minute + 4)
        doc["execution_time_seconds"] = 180.0
    doc.update(extra)
    return doc


def empty() -> Documents:
    """No document, for every collection."""
    return {spec.name: [] for spec in c.ALL}


def synthetic_tree(workflow_id: str, sub_tasks: int, behaviors: int) -> Documents:
    """A workflow of `sub_tasks` × `behaviors` tasks with every output and state, for tests and benchmarks."""
    docs = empty()
    sub_ids = [f"{workflow_id}_s{i}" for i in range(sub_tasks)]
    docs["meta_workflow_tasks"].append(
        {"_id": workflow_id, "meta_workflow_id": "mw_synthetic", "sub_task_ids": sub_ids}
    )
    docs["task_outputs"].append({"_id": workflow_id, "finalized_sub_task_ids": []})
    docs["agent_task_states"].append(
        state_doc(
            workflow_id, TaskKind.META_WORKFLOW, "Orchestrator", Status.IN_PROGRESS, workflow_id=workflow_id
        )
    )
    statuses = (
        Status.COMPLETED,
        Status.IN_PROGRESS,
        Status.PENDING,
        Status.FAILED,
        Status.AWAITING_DEPENDENCY,
    )
    for i, sub_id in enumerate(sub_ids):
        beh_ids = [f"{sub_id}_b{j}" for j in range(behaviors)]
        prev = sub_ids[i - 1] if i else None
        docs["sub_tasks"].append(
            {"_id": sub_id, "task_id": workflow_id, "behavior_task_ids": beh_ids, "prev_sub_task_id": prev}
        )
        docs["sub_task_outputs"].append({"_id": sub_id, "processor_subject_ids": [f"agent{i}"]})
        deps = [{"task_id": prev, "status_expected": Status.COMPLETED}] if prev else []
        docs["agent_task_states"].append(
            state_doc(
                sub_id,
                TaskKind.SUB_TASK,
                f"Agent{i % 3}",
                Status.IN_PROGRESS,
                workflow_id=workflow_id,
                dependencies=deps,
            )
        )
        for j, beh_id in enumerate(beh_ids):
            status = statuses[(i + j) % len(statuses)]
            docs["behavior_tasks"].append(
                {"_id": beh_id, "sub_task_id": sub_id, "action_type": "llm_generate"}
            )
            docs["behavior_task_outputs"].append({"_id": beh_id, "processor_subject_ids": [f"agent{i}"]})
            beh_deps = [{"task_id": beh_ids[j - 1], "status_expected": Status.COMPLETED}] if j else []
            docs["agent_task_states"].append(
                state_doc(
                    beh_id,
                    TaskKind.BEHAVIOR_TASK,
                    f"Agent{i % 3}",
                    status,
                    workflow_id=workflow_id,
                    progress=50,
                    dependencies=beh_deps,
                )
            )
    return docs


async def write_documents(
    db: Db, docs: Mapping[str, list[dict[str, Any]]], *, overwrite: bool = True
) -> None:
    """Upsert the documents by `_id`, collection by collection (`overwrite=False`: only the missing ones)."""
    await upsert_by_id(db, docs, overwrite=overwrite)
