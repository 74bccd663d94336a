"""The demo workflow: seed 000's agents (SnippetCraftAgent → PodcastScriptWeaverAgent → VoiceForgeAgent)
as a workflow in seed 002's hierarchy, with outputs, states in several statuses and dependencies, and the
history of events that led there; and its loader.

Loaded by the command line only: `agent-tasks serve --demo` (`make run`, the LOAD_DEMO setting) once the
server's resources are open and before it listens, `agent-tasks demo` into a database; the tests and
`agent-tasks demo-agent` (`app/demo/agent.py`) use its ids and shapes. The server itself never imports it.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from app.demo.documents import T0, Documents, at, empty, write_documents
from app.domain import Priority, Status, TaskKind
from app.lifecycle import state_machine as sm
from app.lifecycle.documents import new_state_doc
from app.lifecycle.events import EventType, event_doc
from app.principal import acting_as, system
from app.store import events as event_store
from app.store.transactions import in_transaction
from app.store.types import Db, Session

if TYPE_CHECKING:
    from app.resources import AppState

DEMO_WORKFLOW_ID = "meta_podcast_ai_ethics"


class _History:
    """The demo's states moved along their lifecycle by the state machine's own transitions, recording the
    events the services would have written with each change: a plausible history, consistent with the
    states it leaves behind (versions, attempts, times, dependents released when their dependencies
    complete)."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    def _event(self, type: EventType, task_id: str, payload: dict[str, Any], minute: float) -> None:
        state = self.states[task_id]
        agent = state.get("agent_name") or None
        self.events.append(event_doc(type, task_id, state["workflow_id"], agent, payload, at(minute)))

    def create(self, state: dict[str, Any]) -> None:
        """A new state, and its TASK_CREATED (as a create or `createWorkflow` writes it)."""
        task_id = state["_id"]
        self.states[task_id] = state
        payload = {"task_id": task_id, "task_kind": state["task_kind"], "status": state["status"]}
        self._event(EventType.TASK_CREATED, task_id, payload, (state["created_at"] - T0).total_seconds() / 60)

    def apply(self, task_id: str, minute: float, action: Any, *args: Any) -> None:
        """A lifecycle transition (`sm.start`, `sm.complete`, …) at `minute`: its fields, its version, its
        events, then the release of every task whose dependencies it met (as `Lifecycle` does)."""
        state = self.states[task_id]
        transition: sm.Transition = action(state, at(minute), *args)
        state.update(transition.set_fields)
        state["version"] += 1
        for kind, payload in transition.events:
            self._event(EventType(kind), task_id, payload, minute)
        if transition.changes_status:
            statuses = {i: s["status"] for i, s in self.states.items()}
            for other in self.states.values():
                if other["status"] == Status.AWAITING_DEPENDENCY and sm.dependencies_met(other, statuses):
                    self.apply(other["_id"], minute, sm.release)

    def finalize(self, task_id: str, minute: float) -> None:
        payload = {"task_id": task_id, "task_kind": self.states[task_id]["task_kind"]}
        self._event(EventType.TASK_FINALIZED, task_id, payload, minute)

    def record(self, task_id: str, minute: float, type: EventType, payload: dict[str, Any]) -> None:
        """A TOOL_CALL, TOOL_RESULT or MEMORY_OPERATION, with seed 003's payload (the agent filled in)."""
        agent = self.states[task_id].get("agent_name") or None
        self._event(
            type, task_id, {**payload, "agent_id": agent} if "agent_id" in payload else payload, minute
        )


def _new_state(
    task_id: str,
    kind: str,
    agent: str,
    *,
    workflow_id: str | None,
    minute: float,
    dependencies: list[dict[str, str]],
    name: str,
    priority: str = Priority.MEDIUM,
    **fields: Any,
) -> dict[str, Any]:
    """A state as a create writes it: pending, or awaiting its dependencies (none are met at creation)."""
    state = {
        "agent_name": agent,
        "triggering_event_id": fields.pop("triggering_event_id", f"evt_{workflow_id or task_id}"),
        "input_parameters": fields.pop("input_parameters", {}),
        "name": name,
        "priority": priority,
    }
    status = Status.AWAITING_DEPENDENCY if dependencies else Status.PENDING
    return new_state_doc(task_id, kind, workflow_id, state, dependencies, status, at(minute))


def _tool(
    task: str, minute: float, history: _History, name: str, args: dict[str, Any], **result: Any
) -> None:
    """A tool call and its result, paired by a correlation id."""
    correlation = f"call_{task.removeprefix('beh_')}_{name}"
    history.record(
        task,
        minute,
        EventType.TOOL_CALL,
        {"tool_name": name, "tool_args": args, "agent_id": None, "correlation_id": correlation},
    )
    history.record(
        task,
        minute + 0.5,
        EventType.TOOL_RESULT,
        {
            "tool_name": name,
            "status": result.get("status", "SUCCESS"),
            "result": result.get("result"),
            "error_message": result.get("error_message"),
            "agent_id": None,
            "correlation_id": correlation,
        },
    )


def _memory(task: str, minute: float, history: _History, operation: str, key: str, message: str) -> None:
    history.record(
        task,
        minute,
        EventType.MEMORY_OPERATION,
        {
            "agent_id": None,
            "operation": operation,
            "key_or_query": key,
            "status": "SUCCESS",
            "message": message,
        },
    )


def _demo_history() -> _History:
    """The demo workflow's states and events: created at T0 in one `createWorkflow`, then worked on for
    40 minutes (times in minutes after T0). Seed 000's standalone task came an hour earlier."""
    h = _History()
    wf = DEMO_WORKFLOW_ID
    h.create(
        _new_state(
            "task_agent_snippet_abc123",
            TaskKind.STANDALONE,
            "SnippetCraftAgent",
            workflow_id=None,
            minute=-60,
            dependencies=[],
            name="task_agent_snippet_abc123",
            input_parameters={"topic_id": "tech_ai_ethics"},
            triggering_event_id="api_req_xyz789",
        )
    )
    h.apply("task_agent_snippet_abc123", -59, sm.start)
    h.apply("task_agent_snippet_abc123", -50, sm.report_progress, 40, "Querying LLM for snippet text")

    h.create(
        _new_state(
            wf,
            TaskKind.META_WORKFLOW,
            "OrchestratorAgent",
            workflow_id=wf,
            minute=0,
            dependencies=[],
            name="Podcast episode 42: AI ethics",
            priority=Priority.HIGH,
            input_parameters={"topic_id": "tech_ai_ethics"},
            triggering_event_id="api_req_xyz789",
        )
    )
    prev_sub: str | None = None
    for sub_id, agent, behaviors in _STEPS:
        deps = [{"task_id": prev_sub, "status_expected": Status.COMPLETED}] if prev_sub else []
        name = f"{agent}: {sub_id.removeprefix('sub_')}"
        h.create(
            _new_state(
                sub_id, TaskKind.SUB_TASK, agent, workflow_id=wf, minute=0, dependencies=deps, name=name
            )
        )
        prev_beh: str | None = None
        for beh_id, action_type, sub_type, _ in behaviors:
            after = _BEHAVIOR_DEPENDS_ON.get(beh_id, prev_beh or prev_sub)
            beh_deps = [{"task_id": after, "status_expected": Status.COMPLETED}] if after else []
            h.create(
                _new_state(
                    beh_id,
                    TaskKind.BEHAVIOR_TASK,
                    agent,
                    workflow_id=wf,
                    minute=0,
                    dependencies=beh_deps,
                    name=f"{action_type}/{sub_type}",
                )
            )
            prev_beh = beh_id
        prev_sub = sub_id

    h.apply(wf, 0.5, sm.start)
    h.apply(wf, 0.6, sm.report_progress, 5, "Researching the topic")
    # SnippetCraftAgent: research, draft and review the snippet.
    h.apply("sub_snippet", 1, sm.start)
    h.apply("beh_research_topic", 2, sm.start)
    _tool(
        "beh_research_topic",
        2.5,
        h,
        "web_search",
        {"query": "AI ethics 2026", "limit": 10},
        result={"hits": 10},
    )
    _memory("beh_research_topic", 3.5, h, "store", "research:tech_ai_ethics", "10 sources kept")
    h.apply("beh_research_topic", 4, sm.report_progress, 60, "Reading sources")
    h.apply("beh_research_topic", 5, sm.complete, {"sources": 10})  # releases the draft
    h.finalize("beh_research_topic", 5.2)
    h.apply("beh_draft_snippet", 5.5, sm.start)
    h.apply("beh_draft_snippet", 7, sm.report_progress, 50, "Querying LLM for snippet text")
    h.apply("beh_draft_snippet", 9, sm.complete, {"words": 180})  # releases the review
    h.finalize("beh_draft_snippet", 9.2)
    h.apply("beh_review_snippet", 9.5, sm.start)
    _tool("beh_review_snippet", 10, h, "fact_check", {"claims": 4}, result={"verified": 4})
    h.apply("beh_review_snippet", 13, sm.complete, {"verified_claims": 4})
    h.finalize("beh_review_snippet", 13.2)
    h.apply("sub_snippet", 14, sm.complete, {"snippet": "ep42_sub_snippet"})  # releases the script, outline
    h.finalize("sub_snippet", 14.2)
    h.apply(wf, 14.5, sm.report_progress, 35, "Snippet ready; writing the script")
    # PodcastScriptWeaverAgent: outline, then write (the voice can be chosen once the outline is done).
    h.apply("sub_script", 15, sm.start)
    h.apply("beh_outline_script", 15.5, sm.start)
    _memory("beh_outline_script", 16, h, "retrieve", "snippet:ep42", "snippet and its sources")
    h.apply("beh_outline_script", 20, sm.complete, {"sections": 5})  # releases the writing and the voice
    h.finalize("beh_outline_script", 20.2)
    h.apply("beh_write_script", 21, sm.start)
    # VoiceForgeAgent: the voice catalogue timed out; the task waits to be retried.
    h.apply("beh_select_voice", 22, sm.start)
    _tool(
        "beh_select_voice",
        22.5,
        h,
        "voice_catalogue",
        {"request": "GET /voices", "style": "calm_narrator"},
        status="ERROR",
        error_message="504 Gateway Timeout after 30s",
    )
    h.apply(
        "beh_select_voice",
        23,
        sm.fail,
        "Voice catalogue timed out",
        "GET /voices: 504 Gateway Timeout after 30s",
    )
    h.apply("beh_write_script", 30, sm.report_progress, 20, "Drafting the introduction")
    h.apply("sub_script", 30, sm.report_progress, 40)
    h.apply(wf, 30, sm.report_progress, 55, "Producing episode 42: AI ethics")
    _tool(
        "beh_write_script", 34, h, "llm_generate", {"section": 2, "max_tokens": 1200}, result={"tokens": 1130}
    )
    h.apply("beh_write_script", 35, sm.report_progress, 40, "Querying LLM for script text")
    return h


#: (sub-task id, agent, behaviors: (id, action_type, sub_type, personality)), in the workflow's order.
_STEPS: list[tuple[str, str, list[tuple[str, str, str, str]]]] = [
    (
        "sub_snippet",
        "SnippetCraftAgent",
        [
            ("beh_research_topic", "research", "web_search", "curious_researcher"),
            ("beh_draft_snippet", "llm_generate", "snippet_draft", "curious_researcher"),
            ("beh_review_snippet", "review", "fact_check", "curious_researcher"),
        ],
    ),
    (
        "sub_script",
        "PodcastScriptWeaverAgent",
        [
            ("beh_outline_script", "llm_generate", "outline", "warm_storyteller"),
            ("beh_write_script", "llm_generate", "script_body", "warm_storyteller"),
            ("beh_polish_script", "review", "style_pass", "warm_storyteller"),
        ],
    ),
    (
        "sub_voice",
        "VoiceForgeAgent",
        [
            ("beh_select_voice", "tts", "voice_selection", "calm_narrator"),
            ("beh_synthesize_audio", "tts", "synthesis", "calm_narrator"),
            ("beh_master_audio", "audio", "mastering", "calm_narrator"),
        ],
    ),
]
#: A behavior task depends on the one before it (the first on the previous sub-task), except these.
_BEHAVIOR_DEPENDS_ON = {"beh_select_voice": "beh_outline_script"}


def demo_documents() -> Documents:
    """The demo workflow: a podcast episode on AI ethics, part-way through production."""
    return _demo()[0]


#: The actor of the demo's event history.
DEMO = system("demo")


def demo_events() -> list[dict[str, Any]]:
    """The demo's event history, oldest first, as the services would have written it (unstamped)."""
    return _demo()[1]


def _demo() -> tuple[Documents, list[dict[str, Any]]]:
    history = _demo_history()
    states = history.states
    docs = empty()
    wf = DEMO_WORKFLOW_ID
    docs["meta_workflow_tasks"].append(
        {
            "_id": wf,
            "meta_workflow_id": "mw_podcast_episode",
            "dsl_workflow_id": "dsl_podcast_v2",
            "sub_task_ids": [s[0] for s in _STEPS],
            "meta_workflow_graph": {
                "nodes": [s[0] for s in _STEPS],
                "edges": [["sub_snippet", "sub_script"], ["sub_script", "sub_voice"]],
            },
            "personality_workflow_id": "pw_friendly_explainer",
            "personality_type": "friendly_explainer",
            "is_finalized": False,
        }
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
    for sub_id, agent, behaviors in _STEPS:
        personality = behaviors[0][3]
        sub_status = states[sub_id]["status"]
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
                "is_finalized": sub_status == Status.COMPLETED,
            }
        )
        if sub_status != Status.AWAITING_DEPENDENCY:
            docs["sub_task_outputs"].append(
                {
                    "_id": sub_id,
                    "output_framedb_ptr": {"frame_db": "episodes", "frame_id": f"ep42_{sub_id}"},
                    "processor_subject_ids": [agent],
                    "processor_subjects_graph": {agent: []},
                    "is_finalized_step": sub_status == Status.COMPLETED,
                    "sub_task_data_ptr": {},
                    "prev_sub_task_id": prev,
                }
            )
        for j, (beh_id, action_type, sub_type, _) in enumerate(behaviors):
            status = states[beh_id]["status"]
            docs["behavior_tasks"].append(
                {
                    "_id": beh_id,
                    "sub_task_id": sub_id,
                    "action_id": f"act_{beh_id.removeprefix('beh_')}",
                    "action_type": action_type,
                    "action_sub_type": sub_type,
                    "is_finalized": status == Status.COMPLETED,
                }
            )
            if status == Status.COMPLETED:
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
        prev = sub_id
    docs["agent_task_states"] = list(states.values())
    return docs, history.events


def episode_input(workflow_id: str) -> dict[str, Any]:
    """A new episode shaped like the demo workflow, as `createWorkflow` input (GraphQL names): the same
    agents, sub-tasks and behavior tasks and dependencies, every id suffixed with the workflow's, all
    pending (the demo agent, `agent-tasks demo-agent`, works through it)."""
    suffix = workflow_id.removeprefix("meta_")

    def ref(task_id: str) -> str:
        return f"{task_id}_{suffix}"

    sub_tasks = []
    prev_sub: str | None = None
    for sub_id, agent, behaviors in _STEPS:
        prev_beh: str | None = None
        behavior_inputs = []
        for beh_id, action_type, sub_type, _ in behaviors:
            after = _BEHAVIOR_DEPENDS_ON.get(beh_id, prev_beh or prev_sub)
            behavior_inputs.append(
                {
                    "id": ref(beh_id),
                    "actionType": action_type,
                    "actionSubType": sub_type,
                    "state": {
                        "agentName": agent,
                        "name": f"{action_type}/{sub_type}",
                        "dependencies": [{"taskId": ref(after)}] if after else [],
                    },
                }
            )
            prev_beh = beh_id
        sub_tasks.append(
            {
                "id": ref(sub_id),
                "personalityType": behaviors[0][3],
                "state": {
                    "agentName": agent,
                    "name": f"{agent}: {sub_id.removeprefix('sub_')}",
                    "dependencies": [{"taskId": ref(prev_sub)}] if prev_sub else [],
                },
                "behaviorTasks": behavior_inputs,
            }
        )
        prev_sub = sub_id
    return {
        "id": workflow_id,
        "metaWorkflowId": "mw_podcast_episode",
        "state": {"agentName": "OrchestratorAgent", "name": f"Podcast episode {suffix}", "priority": "HIGH"},
        "subTasks": sub_tasks,
    }


#: The demo's agents: the orchestrator (meta task) and one per sub-task, in the workflow's order.
DEMO_AGENTS = ["OrchestratorAgent", *(agent for _, agent, _ in _STEPS)]


async def load_demo(
    db: Db,
    *,
    reset: bool = False,
    events: bool = False,
    settle: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
) -> None:
    """Load the demo workflow. Without `reset`, documents already there are kept, so what a user did to
    the demo in GraphiQL survives a restart of `make run`; with it, the demo is put back as it was.

    `events`: also its event history (`demo_events`), appended in one transaction through the outbox
    (`append_events`), so the event hub stamps their commit-order positions in that order; `settle` (the
    hub's) waits for the stamps. The history is added only when no event about a demo task exists yet
    (loading twice adds nothing); `reset` replaces every event about the demo's tasks with it."""
    await write_documents(db, demo_documents(), overwrite=reset)
    if events:
        written = await _append_demo_events(db, reset=reset)
        if settle is not None and written:
            await settle(written)


async def load_into(state: AppState, *, reset: bool = False) -> None:
    """The demo loaded into a server's open resources, as `serve --demo` and `agent-tasks demo` load it:
    its documents and its history, stamped by the resources' event hub before this returns (so the first
    request already reads the history in order)."""
    await load_demo(state.store.db, reset=reset, events=True, settle=state.hub.settle)


async def _append_demo_events(db: Db, *, reset: bool) -> list[dict[str, Any]]:
    history = demo_events()
    task_ids = sorted({e["task_id"] for e in history})

    async def work(session: Session) -> list[dict[str, Any]]:
        if reset:
            await event_store.delete_about_tasks(db, task_ids, session)
        elif await event_store.any_about_tasks(db, task_ids, session):
            return []
        batch = [dict(e) for e in history]  # fresh documents on every attempt of the transaction
        with acting_as(DEMO):  # the history's actor: the demo seeder, not whoever started the server
            await event_store.append_events(db, session, batch)
        return batch

    return await in_transaction(db, work)
