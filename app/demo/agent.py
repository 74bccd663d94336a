"""`agent-tasks demo-agent`: the demo's agents, written with the Python client (`agent_tasks_client`),
working through a podcast workflow on a running server, so that GraphiQL or a subscription shows the
tree progressing live.

Each agent is a `Worker` over the workflow. Behavior tasks do the "work": a few steps of random length,
each reported with `reportProgress`, a tool call and its result, a memory write, now and then a tool
timeout that fails the attempt (it is retried). Sub-tasks and the meta task supervise: they hold their
lease (heartbeats), report the share of their children completed, and complete once all of them have.

Without `--workflow` a new episode shaped like the demo is created (`workflow.episode_input`). With
`--workflow meta_podcast_ai_ethics` (`make run` loads it) the demo's own workflow is finished; its tasks
left in progress by the demo's history hold no lease, so they are failed (and so retried) first.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from typing import Any

from agent_tasks_client import AgentTasksClient, ClaimedTask, Event, FatalError, RetryableError, Worker
from app.demo.workflow import DEMO_AGENTS, episode_input
from app.domain import EventType, Status, TaskKind

#: A tool per action type, for the TOOL_CALL / TOOL_RESULT events a behavior task records.
_TOOLS = {
    "research": "web_search",
    "llm_generate": "llm_generate",
    "review": "fact_check",
    "tts": "tts_engine",
    "audio": "audio_mixer",
}
#: Share of first attempts whose tool times out (the attempt fails and is retried).
FLAKY = 0.15


class DemoAgents:
    """The handlers of the demo's agents over one workflow."""

    def __init__(self, client: AgentTasksClient, workflow_id: str, pace: float, rng: random.Random) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.pace = pace
        self.rng = rng

    async def handle(self, task: ClaimedTask) -> dict[str, Any]:
        if task.state.task_kind in (TaskKind.META_WORKFLOW, TaskKind.SUB_TASK):
            return await self._supervise(task)
        return await self._work(task)

    async def _pause(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high) * self.pace)

    async def _work(self, task: ClaimedTask) -> dict[str, Any]:
        action = (task.state.name or "work/step").split("/")[0]
        tool = _TOOLS.get(action, "llm_generate")
        correlation = uuid.uuid4().hex[:12]
        await task.progress(5, f"{task.agent_name} starts {task.state.name}")
        await task.record_tool_call(
            tool, {"task": task.id, "attempt": task.attempt}, correlation_id=correlation
        )
        await self._pause(0.5, 1.5)
        if task.attempt == 1 and self.rng.random() < FLAKY:
            await task.record_tool_result(
                tool, "ERROR", error_message="504 Gateway Timeout", correlation_id=correlation
            )
            raise RetryableError(f"{tool} timed out")
        await task.record_tool_result(tool, "SUCCESS", result={"ok": True}, correlation_id=correlation)
        for step, percentage in enumerate((35, 65, 90), start=1):
            await task.progress(percentage, f"{task.state.name}: step {step} of 3")
            await self._pause(0.3, 1.0)
        await task.record_memory_operation(
            "store", f"output:{task.id}", "SUCCESS", message="kept for the next step"
        )
        return {"output": f"{task.id}.out", "attempt": task.attempt}

    async def _supervise(self, task: ClaimedTask) -> dict[str, Any]:
        """Wait for the children (behavior tasks of a sub-task, sub-tasks of the meta task), reporting the
        share completed; the worker's heartbeats hold the lease meanwhile."""
        last = -1
        while True:
            tree = await self.client.workflow_tree(self.workflow_id)
            if tree is None:
                raise FatalError(f"workflow {self.workflow_id} is gone")
            if task.id == tree["id"]:
                children = [s["state"] for s in tree["subTasks"]]
            else:
                sub = next(s for s in tree["subTasks"] if s["id"] == task.id)
                children = [b["state"] for b in sub["behaviorTasks"]]
            statuses = [c["status"] for c in children if c is not None]
            if "FAILED" in statuses or "CANCELLED" in statuses:
                raise FatalError("a child task failed for good")
            done = statuses.count("COMPLETED")
            if done == len(statuses):
                return {"children": done}
            if done != last:
                await task.progress(100 * done / max(1, len(statuses)), f"{done} of {len(statuses)} done")
                last = done
            await asyncio.sleep(0.5 * self.pace)


async def hand_back_stale(client: AgentTasksClient, workflow_id: str) -> list[str]:
    """Fail (non-final) the workflow's tasks left in progress without a lease, so workers retry them."""
    tree = await client.workflow_tree(workflow_id)
    if tree is None:
        raise SystemExit(f"agent-tasks: no workflow {workflow_id!r} on the server (run `make run` first?)")
    ids = [tree["id"]] + [s["id"] for s in tree["subTasks"]]
    ids += [b["id"] for s in tree["subTasks"] for b in s["behaviorTasks"]]
    handed = []
    for task_id in ids:
        state = await client.get_task(task_id)
        if state is not None and state.status == Status.IN_PROGRESS and state.lease_holder is None:
            await client.fail(task_id, "no worker holds it: handed back to the demo agent")
            handed.append(task_id)
    return handed


async def run(url: str, workflow_id: str | None, pace: float, seed: int | None, concurrency: int = 3) -> int:
    """Work through the workflow until its meta task completes (or fails); 0 when it completed."""
    rng = random.Random(seed)
    async with AgentTasksClient(url) as client:
        if workflow_id is None:
            workflow_id = f"meta_episode_{uuid.uuid4().hex[:6]}"
            await client.create_workflow(episode_input(workflow_id))
            print(f"demo-agent: created workflow {workflow_id}", flush=True)
        else:
            for task_id in await hand_back_stale(client, workflow_id):
                print(
                    f"demo-agent: {task_id} was in progress with no lease: failed, to be retried", flush=True
                )
        print(
            f'demo-agent: watch it: subscription {{ taskEvents(workflowId: "{workflow_id}", after: "HEAD")'
            " { type taskId } }",
            flush=True,
        )
        agents = DemoAgents(client, workflow_id, pace, rng)
        workers = [
            client.worker(
                name,
                agents.handle,
                concurrency=concurrency,
                # Never under 10 s, however fast the pace: a lease only has to outlive a late heartbeat
                # (a loaded machine delayed them past a 2 s lease), and no demo worker dies.
                lease_seconds=max(10, round(15 * pace)),
                workflow_id=workflow_id,
                worker_id=f"demo-{name}",
                poll_max=max(0.2, pace),
                wake_on_events=True,
            )
            for name in DEMO_AGENTS
        ]
        printer = asyncio.create_task(_print_events(client, workflow_id))
        try:
            for worker in workers:
                worker.start()
            status = await _until_finished(client, workflow_id, pace)
        finally:
            printer.cancel()
            await asyncio.gather(*(w.stop() for w in workers))
        _summary(workers)
        print(f"demo-agent: workflow {workflow_id} {status}", flush=True)
        return 0 if status == Status.COMPLETED else 1


async def _until_finished(client: AgentTasksClient, workflow_id: str, pace: float) -> str:
    while True:
        state = await client.get_task(workflow_id)
        if state is not None and state.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
            return state.status
        await asyncio.sleep(max(0.1, 0.5 * pace))


async def _print_events(client: AgentTasksClient, workflow_id: str) -> None:
    async for event in client.watch_events(workflow_id=workflow_id, after="HEAD"):
        print(f"  {_describe(event)}", flush=True)


def _describe(event: Event) -> str:
    data = event.data
    details: dict[str, str] = {
        EventType.STATUS_CHANGED: f"{data.get('fromStatus')} → {data.get('toStatus')}",
        EventType.TASK_PROGRESS: f"{round(100 * float(data.get('progress') or 0))}%"
        f" {data.get('details') or ''}",
        EventType.TOOL_CALL: str(data.get("toolName")),
        EventType.TOOL_RESULT: f"{data.get('toolName')} {data.get('toolStatus')}",
        EventType.TASK_FAILED: str(data.get("error")),
    }
    detail = details.get(event.type, "")
    return f"{event.type:<16} {event.task_id:<36} {event.agent_id or '':<26} {detail}".rstrip()


def _summary(workers: list[Worker]) -> None:
    for worker in workers:
        s = worker.stats
        print(
            f"demo-agent: {worker.agent_name}: claimed {s.claimed}, completed {s.completed},"
            f" failed {s.failed}, lost {s.lost}",
            file=sys.stdout,
            flush=True,
        )
