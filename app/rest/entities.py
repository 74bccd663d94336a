"""The seven REST entities: their URL segment, collection, kind, and what a client may never write.

Everything generic in `app/rest/` (models, handlers, routes, the OpenAPI document) is driven by this
table; the three task levels and their outputs take their collections from the hierarchy's `LEVELS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

from app.domain import TaskKind
from app.lifecycle.hierarchy import LEVELS, Level
from app.store.collections import AGENT_TASK_STATES, CollectionSpec


class Kind(StrEnum):
    """What a REST entity is, which decides the service calls behind its writes."""

    TASK = "task"
    OUTPUT = "output"
    AGENT_TASK = "agent_task"


#: Output fields only the services write: finalizing a sub-task records it in its meta task's output.
_SERVICE_WRITTEN_OUTPUT_FIELDS = frozenset({"finalized_sub_task_ids"})


def children_field(level: Level) -> str | None:
    """The body field nesting a task's children in a create (`sub_tasks`, `behavior_tasks`), as in GraphQL."""
    return f"{level.child_kind}s" if level.child_kind else None


@dataclass(frozen=True, eq=False)
class Entity:
    """One REST entity. `level` is the hierarchy level of a task or of the task an output belongs to."""

    path: str
    name: str
    kind: Kind
    level: Level | None = None

    @property
    def spec(self) -> CollectionSpec:
        if self.level is None:
            return AGENT_TASK_STATES
        return self.level.spec if self.kind is Kind.TASK else self.level.output_spec

    @property
    def label(self) -> str:
        if self.level is None:
            return "agent task"
        return self.level.label if self.kind is Kind.TASK else f"{self.level.label} output"

    @property
    def read_only(self) -> frozenset[str]:
        """Stored fields a create or update body may not name (the services maintain them)."""
        if self.kind is Kind.TASK and self.level is not None:
            # Id lists follow the children's parent ids; `is_finalized` only changes through finalize.
            return frozenset(f for f in (self.level.children_field, "is_finalized") if f)
        if self.kind is Kind.OUTPUT:
            return _SERVICE_WRITTEN_OUTPUT_FIELDS & self.spec.fields.keys()
        return frozenset()

    @property
    def children_field(self) -> str | None:
        return children_field(self.level) if self.kind is Kind.TASK and self.level is not None else None

    def location(self, entity_id: str) -> str:
        return f"/{self.path}/{quote(entity_id, safe='')}"


ENTITIES: tuple[Entity, ...] = (
    Entity("meta-tasks", "MetaTask", Kind.TASK, LEVELS[TaskKind.META_WORKFLOW]),
    Entity("sub-tasks", "SubTask", Kind.TASK, LEVELS[TaskKind.SUB_TASK]),
    Entity("behavior-tasks", "BehaviorTask", Kind.TASK, LEVELS[TaskKind.BEHAVIOR_TASK]),
    Entity("task-outputs", "TaskOutput", Kind.OUTPUT, LEVELS[TaskKind.META_WORKFLOW]),
    Entity("sub-task-outputs", "SubTaskOutput", Kind.OUTPUT, LEVELS[TaskKind.SUB_TASK]),
    Entity("behavior-task-outputs", "BehaviorTaskOutput", Kind.OUTPUT, LEVELS[TaskKind.BEHAVIOR_TASK]),
    Entity("agent-tasks", "AgentTask", Kind.AGENT_TASK),
)
BY_PATH: dict[str, Entity] = {e.path: e for e in ENTITIES}
