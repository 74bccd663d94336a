"""Claims sent before a task is due, judged by the server's clock rather than the test's.

A test that claims "until just before the task is due" cannot tell from its own clock whether a claim
reached the server before or after that time: on a loaded machine a claim sent 150 ms early can arrive
late, and then rightly hands the task out. So a claim that hands a task out is judged by the start the
server recorded (`started_at`, its clock): before the due time is a bug; at or after it, the claim was
simply late, and the task is the caller's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from agent_tasks_client import AgentTasksClient, ClaimedTask

#: Claims stop this long before the due time by the test's clock (the server's decision is what counts).
MARGIN = dt.timedelta(milliseconds=150)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


async def claims_before(
    client: AgentTasksClient, db: Any, agent: str, due: dt.datetime
) -> tuple[list[str], ClaimedTask | None]:
    """Claim `agent`'s tasks back to back until shortly before `due`. Returns the ids of the tasks the
    server started before `due` (its `started_at`; none while the gate holds) and the task a late claim
    handed out at or after `due`, if one did."""
    # Stored times have millisecond precision: the gate compares the stored (truncated) due time.
    due = _utc(due).replace(microsecond=due.microsecond // 1000 * 1000)
    early: list[str] = []
    while dt.datetime.now(dt.UTC) < due - MARGIN:
        claimed = await client.claim(agent)
        if claimed is not None:
            state = await db.agent_task_states.find_one({"_id": claimed.id})
            if _utc(state["started_at"]) >= due:
                return early, claimed
            early.append(claimed.id)
        await asyncio.sleep(0.02)
    return early, None
