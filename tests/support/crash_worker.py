"""A worker process for the crash test (tests/test_client_worker.py): it claims one task of the agent
given on the command line under a 2-second lease, says so on stdout, and then works on it for ever
(heartbeating), until the test kills it with SIGKILL. It uses only the client, as an agent runtime would."""

from __future__ import annotations

import asyncio
import json
import sys

from agent_tasks_client import AgentTasksClient, ClaimedTask


async def main(url: str, agent_name: str) -> None:
    async def handler(task: ClaimedTask) -> None:
        await task.progress(10, "working, slowly")
        print(json.dumps({"id": task.id, "attempt": task.attempt}), flush=True)
        await asyncio.Event().wait()  # never finishes

    async with (
        AgentTasksClient(url) as client,
        client.worker(
            agent_name, handler, lease_seconds=2, heartbeat_every=0.3, worker_id="doomed"
        ) as worker,
    ):
        await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
