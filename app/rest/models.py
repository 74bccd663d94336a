"""Pydantic models of every REST body and answer, derived from the `CollectionSpec`s, never per entity.

`MODELS[path]` holds an entity's document (answer), create and update models. Field names and types come
from the entity's spec (`FieldKind` → a strict JSON type), what a client may not write from
`Entity.read_only`, the state fields a client may set from the hierarchy's `STATE_INPUT_FIELDS`, and the
allowed statuses and priorities from the state machine. Request models refuse unknown fields
(`extra="forbid"`); answer models describe what `documents.to_seed_shape` writes. The OpenAPI document
is generated from these same classes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)
from pydantic import ValidationError as PydanticValidationError

from app import domain
from app.domain import ErrorCode, Status
from app.lifecycle.hierarchy import LEVELS, STATE_INPUT_FIELDS
from app.rest.entities import ENTITIES, Entity, Kind
from app.rest.errors import ERROR_CODES, ApiError
from app.store.collections import AGENT_TASK_STATES, CollectionSpec, FieldKind

Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]


def _timestamp_text(value: Any) -> Any:
    """Timestamps travel as ISO 8601 text: a number (`0`, seconds since 1970?) is refused, not guessed."""
    if not isinstance(value, str):
        raise ValueError(
            "a timestamp must be an ISO 8601 string with a timezone, such as 2030-01-01T00:00:00Z"
        )
    return value


#: ISO 8601 with a timezone (`Z` or `+02:00`); a time without one would be read in an unknown zone.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_text)]

#: Request types are strict: `"3"` is not an integer and `1` is not `true`.
_INPUT_TYPES: dict[FieldKind, Any] = {
    FieldKind.STRING: StrictStr,
    FieldKind.BOOL: StrictBool,
    FieldKind.INT: Int64,
    FieldKind.FLOAT: FiniteFloat,
    FieldKind.DATETIME: Timestamp,
    FieldKind.STRING_LIST: list[StrictStr],
    FieldKind.JSON: dict[str, Any],
}
_OUTPUT_TYPES: dict[FieldKind, Any] = {
    FieldKind.STRING: str,
    FieldKind.BOOL: bool,
    FieldKind.INT: int,
    FieldKind.FLOAT: float,
    FieldKind.DATETIME: dt.datetime,
    FieldKind.STRING_LIST: list[str],
    FieldKind.JSON: dict[str, Any],
}

#: The seeds' descriptions of their fields (002's tables, 000 and 001 for agent task states).
FIELD_DOCS: dict[str, str] = {
    "meta_workflow_id": "ID representing the high-level workflow.",
    "dsl_workflow_id": "Associated DSL workflow ID.",
    "sub_task_ids": "Sub-task IDs under this meta-task (maintained by the server).",
    "meta_workflow_graph": "Workflow graph topology.",
    "personality_workflow_id": "ID of the associated personality workflow.",
    "personality_type": "Category/type of the personality.",
    "is_finalized": "Whether the task has been finalized (set by `POST …/finalize`, one-way).",
    "behavior_workflow_id": "ID of the behavior workflow.",
    "behavior_task_ids": "IDs of the behavior tasks linked (maintained by the server).",
    "behavior_dag_data": "DAG representation of the internal behavior tasks.",
    "prev_sub_task_id": "Previous sub-task ID (for chaining).",
    "action_id": "ID of the action.",
    "action_type": "Main type of action.",
    "action_sub_type": "Detailed subtype of the action.",
    "output_framedb_ptr": "Pointer to the output in FrameDB.",
    "finalized_sub_task_ids": "Finalized sub-task IDs (recorded by finalizing a sub-task).",
    "task_data_ptr": "Additional task output data.",
    "processor_subject_ids": "Subject IDs involved in processing.",
    "processor_subjects_graph": "Graph of the processor subjects.",
    "processor_modules_graph": "Module-level execution graph.",
    "is_finalized_step": "Whether the step is finalized.",
    "sub_task_data_ptr": "Additional sub-task output data.",
    "behavior_data_ptr": "Additional behavior task output.",
    "agent_name": "Agent that processes the task.",
    "triggering_event_id": "Event that triggered the task.",
    "input_parameters": "Parameters for the agent.",
    "status": f"Execution status ({', '.join(domain.STATUSES)}).",
    "progress_percentage": "Progress, 0 to 100.",
    "current_step": "What the agent is doing now.",
    "attempts": "How many times the task was started.",
    "last_error": "The last error reported.",
    "output_references": "References to the task's outputs.",
    "dependencies": "Tasks that must reach a status before this one can start.",
    "created_at": "When the task was created.",
    "updated_at": "When the task last changed.",
    "expires_at": "After this, an unfinished task is failed as expired.",
    "name": "Human-readable name.",
    "description": "What the task is about.",
    "priority": "Urgency: low, medium (default), high or urgent.",
    "started_at": "When the task was last started.",
    "completed_at": "When the task completed.",
    "execution_time_seconds": "Seconds from start to completion.",
    "parent_task_id": "Parent task (seed 001).",
    "max_attempts": "Attempts allowed before a non-final failure becomes final (default 3; 0 = unlimited);"
    " alias of `retry_policy.maximum_attempts`.",
    "retry_policy": "How failed attempts are retried (docs/STEERING.md); fields left out come from the"
    " server's defaults. On a workflow, inherited by the tasks below that name none.",
    "not_before": "A delayed start: the task is not claimed before this.",
    "next_attempt_at": "A retrying task is not claimed before this (its retry policy's delay).",
    "schedule_to_start_timeout": "Seconds the task may wait for a start once schedulable, then it fails"
    " (0: none; default: the server's SCHEDULE_TO_START_TIMEOUT_SECONDS; docs/STEERING.md).",
    "start_to_close_timeout": "Seconds one attempt may run, then it fails and the retry policy applies"
    " (0: none; default: START_TO_CLOSE_TIMEOUT_SECONDS).",
    "schedule_to_close_timeout": "Seconds the whole task may take from its creation, retries included"
    " (0: none; default: SCHEDULE_TO_CLOSE_TIMEOUT_SECONDS).",
    "schedule_to_start_deadline": "When the schedule-to-start timeout runs out (null: not running).",
    "start_to_close_deadline": "When the running attempt's start-to-close timeout runs out (null: none).",
    "schedule_to_close_deadline": "When the schedule-to-close timeout runs out (null: not running).",
    "paused_from": "A paused task: the status a resume restores (pending, retrying or awaiting_dependency).",
    "paused_at": "A paused task: when it was paused.",
    "pause_requested": "A task in progress asked to pause: its attempt finishes; a retry it would go to is"
    " paused instead.",
    "concurrency_key": "The task's concurrency key (e.g. a model or a tenant): a limit on `key:<it>` caps"
    " its tasks in progress (docs/STEERING.md). On a workflow, inherited by the tasks below that name none.",
    "task_kind": "Kind of task the state belongs to: meta_workflow, sub_task, behavior_task or standalone.",
    "workflow_id": "The meta workflow task the task belongs to.",
    "version": "Bumped by every write; send it back as `If-Match` or `expected_version` for compare-and-set.",
    "lease_holder": "Who holds the lease of the task in progress (set by claims and starts; null: no lease).",
    "lease_expires_at": "When the lease runs out unless a heartbeat extends it (then the task is retried).",
    "last_heartbeat_at": "When the lease holder last sent a heartbeat in this attempt.",
}

_STRICT = ConfigDict(extra="forbid")
_OPEN = ConfigDict(extra="allow")  # answers: documents written by other programs may carry more fields


def _model(name: str, doc: str, config: ConfigDict, fields: dict[str, Any]) -> type[BaseModel]:
    return create_model(name, __config__=config, __doc__=doc, **fields)


def _doc(field: str, fallback: str = "") -> str:
    return FIELD_DOCS.get(field, fallback)


def _optional(annotation: Any, description: str) -> tuple[Any, Any]:
    return (annotation | None, Field(default=None, description=description))


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _optional_not_null(annotation: Any, description: str) -> tuple[Any, Any]:
    """A field a body may omit but never set to null. Its Python default (None, meaning "not given":
    bodies are read with `exclude_unset`) is no value of its type, so the JSON schema states no default;
    `default: null` on a non-nullable type is an invalid OpenAPI document."""
    return (annotation, Field(default=None, description=description, json_schema_extra=_no_default))


# --- agent task state inputs (nested `state` of a task, and the /agent-tasks bodies) ----------------------

DependencyInput = _model(
    "DependencyInput",
    "A task this one depends on, and the status it must reach first.",
    _STRICT,
    {
        "task_id": (StrictStr, Field(description="Id of the task depended on.")),
        "status_expected": (
            Literal[domain.STATUSES],
            Field(default=Status.COMPLETED, description="Status it must reach (default completed)."),
        ),
    },
)
RetryPolicyInput = _model(
    "RetryPolicyInput",
    "A retry policy (Temporal's RetryPolicy); fields left out come from the server's defaults.",
    _STRICT,
    {
        "initial_interval": _optional(float, "Seconds before the second attempt (0: at once)."),
        "backoff_coefficient": _optional(float, "Each delay is this times the one before (1 to 100)."),
        "maximum_interval": _optional(float, "The longest delay, in seconds (0: 100 x initial_interval)."),
        "maximum_attempts": _optional(int, "Attempts allowed (0 = unlimited); the same as `max_attempts`."),
        "non_retryable_error_types": _optional(list[str], "A failure of one of these types is final."),
        "jitter": _optional(float, "Spread each delay uniformly over delay x (1 +- jitter), 0 to 1."),
    },
)
_STATE_OVERRIDES: dict[str, Any] = {
    "priority": Literal[domain.PRIORITIES],
    "dependencies": list[DependencyInput],  # type: ignore[valid-type]
    "retry_policy": RetryPolicyInput,
}


#: Not nullable: `[]` clears the dependencies (the state service expects a list).
_NOT_NULLABLE_STATE_FIELDS = frozenset({"dependencies"})


def _state_fields(names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        annotation = _STATE_OVERRIDES.get(name) or _INPUT_TYPES[AGENT_TASK_STATES.fields[name]]
        if name in _NOT_NULLABLE_STATE_FIELDS:
            out[name] = _optional_not_null(annotation, _doc(name))
        else:
            out[name] = _optional(annotation, _doc(name))
    return out


TaskStateInput = _model(
    "TaskStateInput",
    "Execution-state fields a client sets (status and counters belong to the lifecycle).",
    _STRICT,
    _state_fields(tuple(f for f in STATE_INPUT_FIELDS if f != "parent_task_id")),
)


# --- documents (answers) -------------------------------------------------------------------------------


def _sub_document(spec: CollectionSpec, owner: str, field: str) -> type[BaseModel]:
    """The model of an OBJECT / OBJECT_LIST field from its dotted sub-fields in the spec."""
    prefix = f"{field}."
    sub = {
        path[len(prefix) :]: _optional(_OUTPUT_TYPES[kind], "")
        for path, kind in spec.fields.items()
        if path.startswith(prefix)
    }
    camel = "".join(part.title() for part in field.split("_"))
    return _model(f"{owner}{camel}", _doc(field), _OPEN, sub)


def _document_model(entity: Entity) -> type[BaseModel]:
    spec = entity.spec
    seed_entity = entity.kind is not Kind.AGENT_TASK  # seed 002 fields are always present in answers
    fields: dict[str, Any] = {
        spec.id_field: (str, Field(description=f"Unique ID of the {entity.label} (the `_id`)."))
    }
    for name, kind in spec.fields.items():
        if "." in name:
            continue
        if kind is FieldKind.OBJECT:
            annotation: Any = _sub_document(spec, entity.name, name)
        elif kind is FieldKind.OBJECT_LIST:
            annotation = list[_sub_document(spec, entity.name, name)]  # type: ignore[misc]
        else:
            annotation = _OUTPUT_TYPES[kind]
        # Seed 002 answers always carry every field (`to_seed_shape` fills the seed's defaults).
        fields[name] = (
            annotation | None,
            Field(default=... if seed_entity else None, description=_doc(name)),
        )
    return _model(entity.name, f"A stored {entity.label}, in the seed's shape.", _OPEN, fields)


# --- create and update bodies --------------------------------------------------------------------------


def _seed_fields(entity: Entity) -> dict[str, Any]:
    """Every writable seed field of the entity, optional and nullable (null clears a field, as in GraphQL)."""
    return {
        name: _optional(_INPUT_TYPES[kind], _doc(name))
        for name, kind in entity.spec.fields.items()
        if "." not in name and name not in entity.read_only
    }


def _id_field(entity: Entity, *, required: bool) -> dict[str, Any]:
    field = entity.spec.id_field
    if required:
        return {field: (StrictStr, Field(description=f"Id of the {entity.level.label} it belongs to."))}  # type: ignore[union-attr]
    return {field: _optional(StrictStr, f"Id of the {entity.label}; generated (uuid4) if omitted.")}


@dataclass(frozen=True)
class EntityModels:
    document: type[BaseModel]
    create: type[BaseModel]
    update: type[BaseModel]
    page: type[BaseModel]


def _build() -> dict[str, EntityModels]:
    out: dict[str, EntityModels] = {}
    by_kind = {(e.kind, e.level.kind if e.level else None): e for e in ENTITIES}
    # Outputs first (a task's create body nests its output), then tasks from the leaves up (children nest).
    for entity in ENTITIES:
        if entity.kind is Kind.OUTPUT:
            document = _document_model(entity)
            out[entity.path] = EntityModels(
                document=document,
                create=_model(
                    f"{entity.name}Create",
                    f"A new {entity.label}.",
                    _STRICT,
                    {**_id_field(entity, required=True), **_seed_fields(entity)},
                ),
                update=_model(
                    f"{entity.name}Update",
                    f"Fields of a {entity.label} to change; omitted fields are left as they are.",
                    _STRICT,
                    _seed_fields(entity),
                ),
                page=_page_model(entity, document),
            )
    for entity in reversed([e for e in ENTITIES if e.kind is Kind.TASK]):
        level = entity.level
        assert level is not None
        parent = level.parent_field
        output = out[by_kind[(Kind.OUTPUT, level.kind)].path].update
        create_fields: dict[str, Any] = {
            **_id_field(entity, required=False),
            **_seed_fields(entity),
            "state": _optional(TaskStateInput, "Its execution state."),
            "output": _optional(output, "Its output, if known."),
        }
        if parent:
            create_fields[parent] = _optional(
                StrictStr, f"Id of the parent {_parent_label(level.parent_kind)} (implied when nested)."
            )
        children = entity.children_field
        if children:
            child = next(e for e in ENTITIES if e.kind is Kind.TASK and e.level.kind == level.child_kind)  # type: ignore[union-attr]
            create_fields[children] = _optional(
                list[out[child.path].create],  # type: ignore[misc]  # a model built at run time
                "Children to create under it, in order, in the same transaction.",
            )
        update_fields = _seed_fields(entity)
        if parent:
            # Not nullable: a task always has a parent; a new one moves it (both id lists change).
            update_fields[parent] = _optional_not_null(
                StrictStr, f"New parent {_parent_label(level.parent_kind)}: a move."
            )
        document = _document_model(entity)
        out[entity.path] = EntityModels(
            document=document,
            create=_model(
                f"{entity.name}Create",
                f"A new {entity.label}, with its state, output and children if given.",
                _STRICT,
                create_fields,
            ),
            update=_model(
                f"{entity.name}Update",
                f"Fields of a {entity.label} to change; omitted fields are left as they are.",
                _STRICT,
                update_fields,
            ),
            page=_page_model(entity, document),
        )
    agent = next(e for e in ENTITIES if e.kind is Kind.AGENT_TASK)
    document = _document_model(agent)
    out[agent.path] = EntityModels(
        document=document,
        create=_model(
            "AgentTaskCreate",
            "A standalone task (seed 000/001): a state with no hierarchy task.",
            _STRICT,
            {**_id_field(agent, required=False), **_state_fields(STATE_INPUT_FIELDS)},
        ),
        update=_model(
            "AgentTaskUpdate",
            "State fields of any task to change (status belongs to the lifecycle).",
            _STRICT,
            {
                **_state_fields(STATE_INPUT_FIELDS),
                "expected_version": _optional(
                    Int64, "Apply only at this version (like `If-Match`); 409 if it changed."
                ),
            },
        ),
        page=_page_model(agent, document),
    )
    return {e.path: out[e.path] for e in ENTITIES}


def _parent_label(kind: str | None) -> str:
    return LEVELS[kind].label if kind else "task"


def _page_model(entity: Entity, document: type[BaseModel]) -> type[BaseModel]:
    return _model(
        f"{entity.name}Page",
        f"One page of {entity.label}s matching a filter.",
        _STRICT,
        {
            "items": (list[document], Field(description="The page, in order.")),  # type: ignore[valid-type]  # built at run time
            "next_cursor": (
                str | None,
                Field(description="Pass as `after` for the next page; null on the last page."),
            ),
            "total": (int, Field(description="How many items match the filter (all pages).")),
        },
    )


ErrorDetail = _model(
    "ErrorDetail",
    "What was wrong. `field` names the offending input where there is one.",
    _OPEN,
    {
        "code": (
            Literal[tuple(code.rest for code in ERROR_CODES)],
            Field(description="Machine-readable error code."),
        ),
        "message": (str, Field(description="One sentence saying what was wrong.")),
        "field": _optional(str, "The offending body field, parameter or filter path."),
        "id": _optional(str, "The id that was not found."),
        "current_version": _optional(int, "The stored version, when a compare-and-set failed."),
        "current_status": _optional(str, "The current status, when a transition was refused."),
        "details": _optional(list[dict[str, str]], "Every problem found in the body."),
        "limit_ms": _optional(int, "The time limit a filter ran out of (`filter_too_slow`)."),
        "retry_after": _optional(int, "Seconds until the rate limit's window ends (`rate_limited`)."),
        "limit": _optional(str, "The rate limit that applied, e.g. `600 per 1 minute` (`rate_limited`)."),
        "required_scope": _optional(str, "The scope the route needs (`unauthenticated`, `forbidden`)."),
        "agent_name": _optional(str, "The agent the task belongs to (`forbidden` for agent-bound keys)."),
    },
)
ErrorResponse = _model(
    "ErrorResponse", "Every REST error.", _STRICT, {"error": (ErrorDetail, Field(description="The error."))}
)
Deleted = _model(
    "Deleted",
    "What a delete removed.",
    _STRICT,
    {"deleted_ids": (list[str], Field(description="Ids of everything deleted (the subtree on cascade)."))},
)

#: The body of a bulk action (`POST /agent-tasks/retry|cancel|pause|resume`).
BulkRequest = _model(
    "BulkRequest",
    "Which tasks a bulk action acts on: the same filter as `POST /agent-tasks/query` (non-empty).",
    _STRICT,
    {
        "filter": (
            dict[str, Any],
            Field(
                description="A MongoDB-style filter over the stored field names, as in /agent-tasks/query."
            ),
        ),
        "limit": _optional(int, "Most tasks to act on (default and maximum: BULK_ACTION_MAX_TASKS, 1,000)."),
        "reason": _optional(str, "Why; kept in each task's event (not for retry)."),
    },
)
BulkSkippedCount = _model(
    "BulkSkipped",
    "How many tasks a bulk action skipped for one reason.",
    _STRICT,
    {
        "reason": (str, Field(description="FINISHED, ACTIVE, ALREADY_PAUSED, NOT_PAUSED, EXPIRED, …")),
        "count": (int, Field(description="How many tasks.")),
    },
)
BulkAnswer = _model(
    "BulkAnswer",
    "What a bulk action did; each task changed in its own compare-and-set with its own events.",
    _STRICT,
    {
        "matched": (int, Field(description="Tasks matched and looked at (at most `limit`, first by id).")),
        "changed": (int, Field(description="Tasks changed.")),
        "changed_ids": (list[str], Field(description="Their ids.")),
        "skipped": (list[BulkSkippedCount], Field(description="Tasks left as they were, by reason.")),  # type: ignore[valid-type]  # built at run time
        "has_more": (bool, Field(description="The filter matches more than `limit`: send it again.")),
        "limit": (int, Field(description="The limit applied.")),
    },
)

MODELS: dict[str, EntityModels] = _build()


def validated(model: type[BaseModel], body: Any) -> dict[str, Any]:
    """The body's fields as given (nested too), or a 422 naming the first problem and listing them all."""
    if body is None:
        raise ApiError(ErrorCode.BAD_JSON, "this request needs a JSON object body")
    if not isinstance(body, dict):
        raise ApiError(ErrorCode.INVALID, "the body must be a JSON object", field="body")
    try:
        return model.model_validate(body).model_dump(exclude_unset=True)
    except PydanticValidationError as exc:
        problems = [(_location(err["loc"]), err["type"], err["msg"]) for err in exc.errors()]
        details = [
            {"field": where, "message": "unknown field" if kind == "extra_forbidden" else msg}
            for where, kind, msg in problems
        ]
        where, kind, msg = problems[0]
        if kind == "extra_forbidden":
            allowed = ", ".join(model.model_fields) if "." not in where and "[" not in where else ""
            hint = f" (allowed: {allowed})" if allowed else ""
            raise ApiError(
                ErrorCode.UNKNOWN_FIELD, f"unknown field '{where}'{hint}", field=where, details=details
            ) from None
        raise ApiError(ErrorCode.INVALID, f"{msg} at '{where}'", field=where, details=details) from None


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"
