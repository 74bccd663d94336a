"""The hierarchy services as one object: tree writes (`tree.py`), output writes (`outputs.py`) and
standalone agent tasks (`agent_tasks.py`), sharing one database, lifecycle and idempotency runner.

Each responsibility lives in its own module; this class only puts them behind the single handle the
GraphQL and REST layers hold (`AppState.hierarchy`).
"""

from __future__ import annotations

from app.lifecycle.agent_tasks import AgentTaskWrites
from app.lifecycle.documents import STATE_INPUT_FIELDS, new_state_doc, state_fields
from app.lifecycle.levels import LEVELS, OUTPUT_LEVELS, Level, NewTask, Written
from app.lifecycle.outputs import OutputWrites
from app.lifecycle.tree import TreeWrites

__all__ = [
    "LEVELS",
    "OUTPUT_LEVELS",
    "STATE_INPUT_FIELDS",
    "Hierarchy",
    "Level",
    "NewTask",
    "Written",
    "new_state_doc",
    "state_fields",
]


class Hierarchy(TreeWrites, OutputWrites, AgentTaskWrites):
    """Every hierarchy write: create/update/move/delete/finalize tasks, their outputs, standalone tasks."""
