"""The progress roll-up of a workflow tree, as a pure function over its tasks' states.

Definition (documented in docs/QUERYING.md):
- `counts` are over every task below the meta task (its sub-tasks and their behavior tasks), by status;
  a task with no state document counts as `pending`.
- `percentage` is the mean, over the leaves (behavior tasks, plus sub-tasks that have none), of each
  leaf's progress: 100 when completed, its `progress_percentage` otherwise (0 when unknown), with
  cancelled leaves left out. A workflow with no leaves is 0 % until its meta task is completed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.domain import STATUSES, Status, normalise_status


@dataclass(frozen=True)
class Rollup:
    """Counts of tasks per status, the total, and the completion percentage."""

    counts: dict[str, int]
    total: int
    percentage: float


def _status(state: Mapping[str, Any] | None) -> str:
    status = normalise_status((state or {}).get("status") or Status.PENDING)  # "In Progress" → in_progress
    return status if status in STATUSES else Status.PENDING


def _leaf_progress(state: Mapping[str, Any] | None) -> float:
    if _status(state) == Status.COMPLETED:
        return 100.0
    value = (state or {}).get("progress_percentage")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(min(100, max(0, value)))


def rollup(
    descendants: Sequence[Mapping[str, Any] | None],
    leaves: Sequence[Mapping[str, Any] | None],
    root: Mapping[str, Any] | None = None,
) -> Rollup:
    """Roll up a tree from the states of every task below the root and of its leaves."""
    counter = Counter(_status(s) for s in descendants)
    counts = {status: counter.get(status, 0) for status in STATUSES}
    active = [s for s in leaves if _status(s) != Status.CANCELLED]
    if active:
        percentage = round(sum(_leaf_progress(s) for s in active) / len(active), 2)
    else:
        percentage = 100.0 if _status(root) == Status.COMPLETED else 0.0
    return Rollup(counts=counts, total=len(descendants), percentage=percentage)
