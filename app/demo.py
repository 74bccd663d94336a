"""Demo data: seed 000's agents (SnippetCraftAgent → PodcastScriptWeaverAgent → VoiceForgeAgent) as a
workflow in seed 002's hierarchy, with outputs, states in several statuses and dependencies.

Also `synthetic_tree`, a workflow of any size, used by the tests and the benchmarks. Both return the
documents per collection, in the stored shape; `write_documents` upserts them (loading twice is harmless).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from typing import Any

from app.domain import Status
from app.lifecycle.documents import new_state_doc
from app.store import collections as c
from app.store.bulk import upsert_by_id
from app.store.types import Db

Documents = dict[str, list[dict[str, Any]]]

DEMO_WORKFLOW_ID = "meta_podcast_ai_ethics"
T0 = dt.datetime(2026, 11, 20, 14, 0, tzinfo=dt.UTC)


def _at(minutes: float) -> dt.datetime:
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
    priority: str = "medium",
    dependencies: list[dict[str, str]] | None = None,
    name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An `agent_task_states` document as the server writes it, built by the services' own constructor
    (`new_state_doc`) and then moved along its lifecycle to `status` as of `minute` minutes after T0."""
    created = _at(minute)
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
        updated_at=_at(minute + 5),
    )
    if status in (Status.IN_PROGRESS, Status.COMPLETED, Status.FAILED, Status.RETRYING):
        doc["started_at"] = _at(minute + 1)
    if status == Status.COMPLETED:
        doc["completed_at"] = _at(minute + 4)
        doc["execution_time_seconds"] = 180.0
    doc.update(extra)
    return doc


def _empty() -> Documents:
    return {spec.name: [] for spec in c.ALL}


def demo_documents() -> Documents:
    """The demo workflow: a podcast episode on AI ethics, part-way through production."""
    docs = _empty()
    wf = DEMO_WORKFLOW_ID
    steps = [
        # (sub-task id, agent, personality, status, behaviors: (id, action_type, sub_type, status, progress))
        (
            "sub_snippet",
            "SnippetCraftAgent",
            "curious_researcher",
            "completed",
            [
                ("beh_research_topic", "research", "web_search", "completed", 100),
                ("beh_draft_snippet", "llm_generate", "snippet_draft", "completed", 100),
                ("beh_review_snippet", "review", "fact_check", "completed", 100),
            ],
        ),
        (
            "sub_script",
            "PodcastScriptWeaverAgent",
            "warm_storyteller",
            "in_progress",
            [
                ("beh_outline_script", "llm_generate", "outline", "completed", 100),
                ("beh_write_script", "llm_generate", "script_body", "in_progress", 40),
                ("beh_polish_script", "review", "style_pass", "awaiting_dependency", 0),
            ],
        ),
        (
            "sub_voice",
            "VoiceForgeAgent",
            "calm_narrator",
            "awaiting_dependency",
            [
                ("beh_select_voice", "tts", "voice_selection", "retrying", 0),
                ("beh_synthesize_audio", "tts", "synthesis", "awaiting_dependency", 0),
                ("beh_master_audio", "audio", "mastering", "awaiting_dependency", 0),
            ],
        ),
    ]
    docs["meta_workflow_tasks"].append(
        {
            "_id": wf,
            "meta_workflow_id": "mw_podcast_episode",
            "dsl_workflow_id": "dsl_podcast_v2",
            "sub_task_ids": [s[0] for s in steps],
            "meta_workflow_graph": {
                "nodes": [s[0] for s in steps],
                "edges": [["sub_snippet", "sub_script"], ["sub_script", "sub_voice"]],
            },
            "personality_workflow_id": "pw_friendly_explainer",
            "personality_type": "friendly_explainer",
            "is_finalized": False,
        }
    )
    docs["agent_task_states"].append(
        state_doc(
            wf,
            "meta_workflow",
            "OrchestratorAgent",
            "in_progress",
            workflow_id=wf,
            progress=55,
            step="Producing episode 42: AI ethics",
            attempts=1,
            priority="high",
            name="Podcast episode 42: AI ethics",
            input_parameters={"topic_id": "tech_ai_ethics"},
            triggering_event_id="api_req_xyz789",
        )
    )
    docs["task_outputs"].append(
        {
            "_id": wf,
            "output_framedb_ptr": {"frame_db": "episodes", "frame_id": "ep42"},
            "finalized_sub_task_ids": ["sub_snippet"],
            "task_data_ptr": {"episode_number": 42},
        }
    )
    prev: str | None = None
    for minute, (sub_id, agent, personality, sub_status, behaviors) in enumerate(steps):
        docs["sub_tasks"].append(
            {
                "_id": sub_id,
                "personality_workflow_id": f"pw_{personality}",
                "personality_type": personality,
                "behavior_workflow_id": f"bw_{sub_id}",
                "behavior_task_ids": [b[0] for b in behaviors],
                "behavior_dag_data": {"edges": [[a[0], b[0]] for a, b in itertools.pairwise(behaviors)]},
                "task_id": wf,
                "prev_sub_task_id": prev,
                "is_finalized": sub_status == "completed",
            }
        )
        deps = [{"task_id": prev, "status_expected": "completed"}] if prev else []
        docs["agent_task_states"].append(
            state_doc(
                sub_id,
                "sub_task",
                agent,
                sub_status,
                workflow_id=wf,
                minute=10 * minute,
                progress=40 if sub_status == "in_progress" else 0,
                attempts=1 if sub_status in ("completed", "in_progress") else 0,
                dependencies=deps,
                name=f"{agent}: {sub_id.removeprefix('sub_')}",
            )
        )
        if sub_status != "awaiting_dependency":
            docs["sub_task_outputs"].append(
                {
                    "_id": sub_id,
                    "output_framedb_ptr": {"frame_db": "episodes", "frame_id": f"ep42_{sub_id}"},
                    "processor_subject_ids": [agent],
                    "processor_subjects_graph": {agent: []},
                    "is_finalized_step": sub_status == "completed",
                    "sub_task_data_ptr": {},
                    "prev_sub_task_id": prev,
                }
            )
        prev_beh: str | None = None
        for j, (beh_id, action_type, sub_type, status, progress) in enumerate(behaviors):
            docs["behavior_tasks"].append(
                {
                    "_id": beh_id,
                    "sub_task_id": sub_id,
                    "action_id": f"act_{beh_id.removeprefix('beh_')}",
                    "action_type": action_type,
                    "action_sub_type": sub_type,
                    "is_finalized": status == "completed",
                }
            )
            extra: dict[str, Any] = {}
            if status == "retrying":
                extra["last_error"] = {
                    "timestamp": _at(10 * minute + 3),
                    "message": "Voice catalogue timed out",
                    "details": "GET /voices: 504 Gateway Timeout after 30s",
                }
            beh_deps = [{"task_id": prev_beh, "status_expected": "completed"}] if prev_beh else []
            if j == 0 and prev:
                beh_deps.append({"task_id": prev, "status_expected": "completed"})
            docs["agent_task_states"].append(
                state_doc(
                    beh_id,
                    "behavior_task",
                    agent,
                    status,
                    workflow_id=wf,
                    minute=10 * minute + j,
                    progress=progress,
                    attempts=1 if status in ("completed", "in_progress", "retrying") else 0,
                    step="Querying LLM for script text" if status == "in_progress" else None,
                    dependencies=beh_deps,
                    name=f"{action_type}/{sub_type}",
                    **extra,
                )
            )
            if status == "completed":
                docs["behavior_task_outputs"].append(
                    {
                        "_id": beh_id,
                        "output_framedb_ptr": {"frame_db": "artifacts", "frame_id": f"art_{beh_id}"},
                        "processor_subject_ids": [agent],
                        "processor_subjects_graph": {agent: []},
                        "processor_modules_graph": {"llm": ["prompt", "completion"]},
                        "is_finalized_step": True,
                        "behavior_data_ptr": {"tokens": 1200 + 100 * j},
                    }
                )
            prev_beh = beh_id
        prev = sub_id
    # Seed 000's own example: a standalone task outside any workflow.
    docs["agent_task_states"].append(
        state_doc(
            "task_agent_snippet_abc123",
            "standalone",
            "SnippetCraftAgent",
            "in_progress",
            workflow_id=None,
            minute=-60,
            progress=40,
            step="Querying LLM for snippet text",
            attempts=1,
            input_parameters={"topic_id": "tech_ai_ethics"},
            triggering_event_id="api_req_xyz789",
        )
    )
    return docs


def synthetic_tree(workflow_id: str, sub_tasks: int, behaviors: int) -> Documents:
    """A workflow of `sub_tasks` × `behaviors` tasks with every output and state, for tests and benchmarks."""
    docs = _empty()
    sub_ids = [f"{workflow_id}_s{i}" for i in range(sub_tasks)]
    docs["meta_workflow_tasks"].append(
        {"_id": workflow_id, "meta_workflow_id": "mw_synthetic", "sub_task_ids": sub_ids}
    )
    docs["task_outputs"].append({"_id": workflow_id, "finalized_sub_task_ids": []})
    docs["agent_task_states"].append(
        state_doc(workflow_id, "meta_workflow", "Orchestrator", "in_progress", workflow_id=workflow_id)
    )
    statuses = ("completed", "in_progress", "pending", "failed", "awaiting_dependency")
    for i, sub_id in enumerate(sub_ids):
        beh_ids = [f"{sub_id}_b{j}" for j in range(behaviors)]
        prev = sub_ids[i - 1] if i else None
        docs["sub_tasks"].append(
            {"_id": sub_id, "task_id": workflow_id, "behavior_task_ids": beh_ids, "prev_sub_task_id": prev}
        )
        docs["sub_task_outputs"].append({"_id": sub_id, "processor_subject_ids": [f"agent{i}"]})
        deps = [{"task_id": prev, "status_expected": "completed"}] if prev else []
        docs["agent_task_states"].append(
            state_doc(
                sub_id, "sub_task", f"Agent{i % 3}", "in_progress", workflow_id=workflow_id, dependencies=deps
            )
        )
        for j, beh_id in enumerate(beh_ids):
            status = statuses[(i + j) % len(statuses)]
            docs["behavior_tasks"].append(
                {"_id": beh_id, "sub_task_id": sub_id, "action_type": "llm_generate"}
            )
            docs["behavior_task_outputs"].append({"_id": beh_id, "processor_subject_ids": [f"agent{i}"]})
            beh_deps = [{"task_id": beh_ids[j - 1], "status_expected": "completed"}] if j else []
            docs["agent_task_states"].append(
                state_doc(
                    beh_id,
                    "behavior_task",
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


async def load_demo(db: Db, *, reset: bool = False) -> None:
    """Load the demo workflow. Without `reset`, documents already there are kept, so what a user did to
    the demo in GraphiQL survives a restart of `make run`; with it, the demo is put back as it was."""
    await write_documents(db, demo_documents(), overwrite=reset)
