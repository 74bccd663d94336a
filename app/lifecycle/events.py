"""The `task_events` outbox: how an event document is shaped (its types are `app.domain.EventType`).

Every change writes its event in the same transaction as the change, so an event exists exactly when
its change committed. Its commit-order position (`seq`, the cursor clients resume from) is stamped just
after the commit, from MongoDB's own commit order (see `app.store.events`).
Seed 003's payloads are kept under `payload` with their own field names.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from app.domain import EventType

__all__ = ["EventType", "event_doc"]


def event_doc(
    type: EventType | str,
    task_id: str,
    workflow_id: str | None,
    agent_id: str | None,
    payload: dict[str, Any],
    now: dt.datetime,
) -> dict[str, Any]:
    """An event document ready to append (`append_events` gives it its `_id` and an unstamped `seq`)."""
    return {
        "type": str(type),
        "task_id": task_id,
        "workflow_id": workflow_id,
        "agent_id": agent_id,
        "timestamp": now,
        "payload": payload,
    }
