"""What each MongoDB collection holds: its name, its seed id field (stored as `_id`), its fields and indexes.

One `CollectionSpec` per seed entity drives everything generic in the store: the filter allow-list,
the sortable fields, index creation and the id mapping. The field names are the seeds' own (snake_case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.domain import TERMINAL, Status


class FieldKind(StrEnum):
    """The type of a stored field, as far as filters and sorting need to know it."""

    STRING = "string"
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    DATETIME = "datetime"
    STRING_LIST = "string_list"
    #: A free-form dict: any dotted sub-path below it may be filtered on.
    JSON = "json"
    #: A sub-document or list of sub-documents whose known sub-fields are listed separately.
    OBJECT = "object"
    OBJECT_LIST = "object_list"


@dataclass(frozen=True)
class IndexSpec:
    """One secondary index: its keys in order, and whether it is unique."""

    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    #: For a TTL index: documents are removed this many seconds after the indexed date.
    expire_after_seconds: int | None = None
    #: For a partial index: only the documents matching this filter are indexed.
    partial_filter: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def name(self) -> str:
        return "_".join(f"{k}_{d}" for k, d in self.keys)


@dataclass(frozen=True)
class CollectionSpec:
    """A collection: `fields` maps every filterable path (dotted for known sub-fields) to its kind."""

    name: str
    id_field: str
    fields: dict[str, FieldKind]
    indexes: tuple[IndexSpec, ...] = ()
    sort_fields: tuple[str, ...] = ()
    id_kind: FieldKind = FieldKind.STRING
    #: Fields the server adds for itself; documents written by other programs may lack them.
    server_fields: frozenset[str] = field(default_factory=frozenset)
    #: Names of indexes earlier versions created that nothing uses any more: dropped at start-up, since
    #: every write would keep paying for them.
    retired_indexes: tuple[str, ...] = ()

    def kind_of(self, path: str) -> FieldKind | None:
        """The kind of a filter path, or None when the path is not allowed on this collection.

        The seed id field and `_id` are the same thing. Any dotted path below a JSON field is allowed
        (its kind is then unknown, so JSON is returned).
        """
        if path in (self.id_field, "_id"):
            return self.id_kind
        if path in self.fields:
            return self.fields[path]
        head, _, rest = path.partition(".")
        if rest and self.fields.get(head) is FieldKind.JSON:
            return FieldKind.JSON
        return None

    def storage_path(self, path: str) -> str:
        """The path as stored in MongoDB: the seed id field lives in `_id`."""
        return "_id" if path == self.id_field else path


def _idx(
    *keys: str | tuple[str, int],
    unique: bool = False,
    ttl: int | None = None,
    partial: dict[str, Any] | None = None,
) -> IndexSpec:
    return IndexSpec(
        tuple((k, 1) if isinstance(k, str) else k for k in keys),
        unique=unique,
        expire_after_seconds=ttl,
        partial_filter=partial,
    )


def _deadline_idx(deadline_field: str) -> IndexSpec:
    """A timeout sweep's index: status, then the deadline, over the states with the deadline armed only
    (most tasks have none, and a cleared one is null)."""
    return _idx("status", deadline_field, partial={deadline_field: {"$type": "date"}})


S, B, INT, F, DT = FieldKind.STRING, FieldKind.BOOL, FieldKind.INT, FieldKind.FLOAT, FieldKind.DATETIME
SL, J, OBJ, OL = FieldKind.STRING_LIST, FieldKind.JSON, FieldKind.OBJECT, FieldKind.OBJECT_LIST

META_WORKFLOW_TASKS = CollectionSpec(
    name="meta_workflow_tasks",
    id_field="task_id",
    fields={
        "meta_workflow_id": S,
        "dsl_workflow_id": S,
        "sub_task_ids": SL,
        "meta_workflow_graph": J,
        "personality_workflow_id": S,
        "personality_type": S,
        "is_finalized": B,
    },
    indexes=(_idx("meta_workflow_id"), _idx("dsl_workflow_id")),
    sort_fields=("task_id", "meta_workflow_id", "dsl_workflow_id", "personality_type"),
)

SUB_TASKS = CollectionSpec(
    name="sub_tasks",
    id_field="sub_task_id",
    fields={
        "personality_workflow_id": S,
        "personality_type": S,
        "behavior_workflow_id": S,
        "behavior_task_ids": SL,
        "behavior_dag_data": J,
        "task_id": S,
        "prev_sub_task_id": S,
        "is_finalized": B,
    },
    indexes=(_idx("task_id"), _idx("prev_sub_task_id")),
    sort_fields=("sub_task_id", "task_id", "behavior_workflow_id", "personality_type"),
)

BEHAVIOR_TASKS = CollectionSpec(
    name="behavior_tasks",
    id_field="behavior_task_id",
    fields={
        "sub_task_id": S,
        "action_id": S,
        "action_type": S,
        "action_sub_type": S,
        "is_finalized": B,
    },
    indexes=(_idx("sub_task_id"), _idx("action_type")),
    sort_fields=("behavior_task_id", "sub_task_id", "action_id", "action_type", "action_sub_type"),
)

TASK_OUTPUTS = CollectionSpec(
    name="task_outputs",
    id_field="task_id",
    fields={
        "output_framedb_ptr": J,
        "finalized_sub_task_ids": SL,
        "task_data_ptr": J,
    },
    sort_fields=("task_id",),
)

SUB_TASK_OUTPUTS = CollectionSpec(
    name="sub_task_outputs",
    id_field="sub_task_id",
    fields={
        "output_framedb_ptr": J,
        "processor_subject_ids": SL,
        "processor_subjects_graph": J,
        "is_finalized_step": B,
        "sub_task_data_ptr": J,
        "prev_sub_task_id": S,
    },
    sort_fields=("sub_task_id",),
)

BEHAVIOR_TASK_OUTPUTS = CollectionSpec(
    name="behavior_task_outputs",
    id_field="behavior_task_id",
    fields={
        "output_framedb_ptr": J,
        "processor_subject_ids": SL,
        "processor_subjects_graph": J,
        "processor_modules_graph": J,
        "is_finalized_step": B,
        "behavior_data_ptr": J,
    },
    indexes=(_idx("processor_subject_ids"),),
    sort_fields=("behavior_task_id",),
)

#: claimTask: the most urgent, oldest ready task of an agent. `_id` completes the claim order, so the
#: index yields candidates already sorted (two scans merged, one per claimable status) and a claim reads
#: only the few it needs. The claim query names it (`hint`): left to itself the planner may pick
#: `expires_at_1` for the query's expiry condition and sort every pending task of the agent, per claim.
#: The two trailing keys are the claim gate (`not_before`, `next_attempt_at`, issue 21): a task waiting for
#: its delay or its retry's backoff is passed over on its index key, without reading its document.
CLAIM_INDEX = _idx(
    "agent_name", "status", ("priority_rank", -1), "created_at", "_id", "not_before", "next_attempt_at"
)

#: The timeout sweeps' indexes, by deadline field (the sweep names its index: `states.timed_out`).
DEADLINE_INDEXES = {
    name: _deadline_idx(name)
    for name in ("schedule_to_start_deadline", "start_to_close_deadline", "schedule_to_close_deadline")
}

#: Retention (app/store/retention.py): finished workflows and standalone tasks by when they last changed.
#: Partial (terminal states only), so progress writes to running tasks never update it; named by the
#: sweep's query (`hint`), which the planner might otherwise answer from `status_1`.
RETENTION_INDEX = _idx("task_kind", "updated_at", "_id", partial={"status": {"$in": sorted(TERMINAL)}})

#: Concurrency limits and fairness (app/lifecycle/steering.py). Running counts and the slots taken are
#: read from index keys: these three hold tasks in progress only (a task enters them when claimed and
#: leaves them when it ends), each with the slot its claim took under that scope's limit.
RUNNING = {"status": Status.IN_PROGRESS}
RUNNING_BY_AGENT = _idx("agent_name", "slot_agent", partial=RUNNING)
RUNNING_BY_WORKFLOW = _idx("workflow_id", "slot_workflow", partial=RUNNING)
RUNNING_BY_KEY = _idx(
    "concurrency_key", "slot_key", partial={**RUNNING, "concurrency_key": {"$type": "string"}}
)
#: The claimable tasks of an agent by priority, then group (workflow or concurrency key), then age: a fair
#: claim finds the groups with ready work of a priority one index probe per group (`workflow_id > last`),
#: and each probe answers that group's oldest task. Only claimable tasks have keys here.
CLAIMABLE: dict[str, Any] = {"status": {"$in": [Status.PENDING, Status.RETRYING]}}
FAIR_BY_WORKFLOW_INDEX = _idx(
    "agent_name", ("priority_rank", -1), "workflow_id", "created_at", "_id", partial=CLAIMABLE
)
FAIR_BY_KEY_INDEX = _idx(
    "agent_name", ("priority_rank", -1), "concurrency_key", "created_at", "_id", partial=CLAIMABLE
)

AGENT_TASK_STATES = CollectionSpec(
    name="agent_task_states",
    id_field="task_id",
    fields={
        # seed 000
        "agent_name": S,
        "triggering_event_id": S,
        "input_parameters": J,
        "status": S,
        "progress_percentage": INT,
        "current_step": S,
        "attempts": INT,
        "last_error": OBJ,
        "last_error.timestamp": DT,
        "last_error.message": S,
        "last_error.details": S,
        "last_error.error_type": S,
        "output_references": J,
        "dependencies": OL,
        "dependencies.task_id": S,
        "dependencies.status_expected": S,
        "created_at": DT,
        "updated_at": DT,
        "expires_at": DT,
        # seed 001 extras
        "name": S,
        "description": S,
        "priority": S,
        "started_at": DT,
        "completed_at": DT,
        "execution_time_seconds": F,
        "parent_task_id": S,
        # added by the server
        "max_attempts": INT,
        "task_kind": S,
        "workflow_id": S,
        "version": INT,
        # leases (claimTask / startTask / heartbeatTask), null when no lease
        "lease_holder": S,
        "lease_expires_at": DT,
        "last_heartbeat_at": DT,
        # steering (issue 21): the retry policy, and the times before which a claim does not hand it out
        "retry_policy": OBJ,
        "not_before": DT,
        "next_attempt_at": DT,
        # timeouts (issue 21, app/lifecycle/timeouts.py): seconds (0: none), and each armed deadline
        "schedule_to_start_timeout": F,
        "start_to_close_timeout": F,
        "schedule_to_close_timeout": F,
        "schedule_to_start_deadline": DT,
        "start_to_close_deadline": DT,
        "schedule_to_close_deadline": DT,
        # tracing: the W3C trace context the task's attempts continue (docs/TRACING.md)
        "traceparent": S,
        # pause (issue 21 part 5): the status a resume restores, since when, and a running task's request
        "paused_from": S,
        "paused_at": DT,
        "pause_requested": B,
        # concurrency limits and fairness (issue 22): the task's key (e.g. a model or a tenant)
        "concurrency_key": S,
        # the slot a claim under a limit took, per scope (null: none); meaningful while in progress
        "slot_agent": INT,
        "slot_workflow": INT,
        "slot_key": INT,
    },
    indexes=(
        _idx("agent_name"),
        _idx("status"),
        _idx("created_at"),
        _idx("triggering_event_id"),
        _idx("parent_task_id"),
        _idx("dependencies.task_id"),
        # the expiry sweeper: active tasks whose expires_at has passed.
        _idx("expires_at"),
        # the same sweeper: leases that ran out, and timeouts whose deadline passed.
        _idx("lease_expires_at"),
        *DEADLINE_INDEXES.values(),
        CLAIM_INDEX,
        # agentStats: one agent's states created since a date (app/store/analytics.py).
        _idx("agent_name", "created_at"),
        # Retention (app/store/retention.py): a workflow's states, to tell whether all of them finished.
        _idx("workflow_id"),
        # Retention: finished workflows and standalone tasks by when they last changed. Partial (terminal
        # states only), so progress writes to running tasks never update it.
        RETENTION_INDEX,
        RUNNING_BY_AGENT,
        RUNNING_BY_WORKFLOW,
        RUNNING_BY_KEY,
        FAIR_BY_WORKFLOW_INDEX,
        FAIR_BY_KEY_INDEX,
    ),
    sort_fields=(
        "task_id",
        "created_at",
        "updated_at",
        "status",
        "agent_name",
        "priority",
        "progress_percentage",
        "expires_at",
    ),
    server_fields=frozenset({"version", "task_kind", "workflow_id", "max_attempts", "priority_rank"}),
    # The claim index before it ended with `_id`, and before it ended with the claim gate.
    retired_indexes=(
        "agent_name_1_status_1_priority_rank_-1_created_at_1",
        "agent_name_1_status_1_priority_rank_-1_created_at_1__id_1",
    ),
)

TASK_EVENTS = CollectionSpec(
    name="task_events",
    id_field="_id",
    fields={
        "type": S,
        "task_id": S,
        "workflow_id": S,
        "agent_id": S,
        "timestamp": DT,
        "payload": J,
        # Who wrote it (app.principal: kind key/jwt/anonymous/system, id, name) and the request's id.
        "actor": OBJ,
        "actor.kind": S,
        "actor.id": S,
        "actor.name": S,
        "request_id": S,
    },
    # `seq` is the commit-order position stamped after commit (app/store/events.py); unstamped events
    # (seq null) sort first in each index and are never read.
    indexes=(
        _idx("seq", "_id"),
        _idx("task_id", "seq"),
        _idx("workflow_id", "seq"),
        _idx("agent_id", "seq"),
        _idx("actor.id", "seq"),
    ),
)

#: Answers of mutations sent with an idempotency key, kept a day so a retried request gets the first answer.
IDEMPOTENCY_KEYS = CollectionSpec(
    name="idempotency_keys",
    id_field="_id",
    fields={"operation": S, "created_at": DT},
    indexes=(_idx("created_at", ttl=24 * 3600),),
)

#: API keys (app/store/keys.py): only the SHA-256 of each secret is kept; `_id` is the public key id.
API_KEYS = CollectionSpec(
    name="api_keys",
    id_field="_id",
    fields={"name": S, "hash": S, "scopes": FieldKind.STRING_LIST, "created_at": DT, "revoked_at": DT},
    indexes=(_idx("hash", unique=True), _idx("created_at")),
)

#: Small server-wide settings shared by every process, e.g. the cursor-signing secret (app/store/config.py).
SERVER_CONFIG = CollectionSpec(name="server_config", id_field="_id", fields={"value": S})

#: The running server processes, each renewing its registration (app/store/processes.py, app/live/presence).
SERVER_PROCESSES = CollectionSpec(
    name="server_processes", id_field="_id", fields={"app_name": S, "until": DT, "host": S, "pid": INT}
)

#: Fixed-window rate-limit counters, one per caller, scope and window (app/store/rate_windows.py): a
#: window's document is removed by MongoDB once the window is over. `expireAt_1` was the index of the
#: `limits` library's storage, which earlier versions used.
RATE_LIMIT_COUNTERS = CollectionSpec(
    name="rate_limit_counters",
    id_field="_id",
    fields={"count": INT, "expire_at": DT},
    indexes=(_idx("expire_at", ttl=0),),
    retired_indexes=("expireAt_1",),
)

#: Concurrency limits (app/store/steering.py): `_id` is the limit's key ("agent:<name>", "workflow:<id>",
#: "key:<k>"), `max` the most tasks in progress under it.
CONCURRENCY_LIMITS = CollectionSpec(
    name="concurrency_limits",
    id_field="_id",
    fields={"scope": S, "key": S, "max": INT, "updated_at": DT},
)

#: One guard document per slot of a limit ("<limit id>#<slot>"): a claim taking slot n writes it
#: (`touches`), so two claims taking the same slot write-conflict and one of them chooses again.
CONCURRENCY_SLOTS = CollectionSpec(name="concurrency_slots", id_field="_id", fields={"touches": INT})

#: Start rate limits (app/store/steering.py): `_id` is the limit's key as for concurrency limits, `max`
#: the most starts per window of `per_seconds` (1, 60 or 3600).
START_RATE_LIMITS = CollectionSpec(
    name="start_rate_limits",
    id_field="_id",
    fields={"scope": S, "key": S, "max": INT, "per_seconds": INT, "updated_at": DT},
)

#: One document per start a rate limit allowed: "<limit>@<window>#<n>", the window's n-th start, inserted by
#: the claim that took it (two claims taking the same one conflict); removed by MongoDB after the window.
START_WINDOWS = CollectionSpec(
    name="start_windows", id_field="_id", fields={"expire_at": DT}, indexes=(_idx("expire_at", ttl=0),)
)

#: Each agent's claim policy (FIFO, FAIR_BY_WORKFLOW, FAIR_BY_KEY); no document: FIFO.
CLAIM_POLICIES = CollectionSpec(name="claim_policies", id_field="_id", fields={"policy": S, "updated_at": DT})

#: When a fair claim last served each (agent, group): `_id` is "<agent>\x1f<group>".
CLAIM_SERVED = CollectionSpec(
    name="claim_served", id_field="_id", fields={"agent_name": S, "group": S, "served_at": DT, "served": INT}
)

#: Every collection, in the order the hierarchy reads.
ALL: tuple[CollectionSpec, ...] = (
    META_WORKFLOW_TASKS,
    SUB_TASKS,
    BEHAVIOR_TASKS,
    TASK_OUTPUTS,
    SUB_TASK_OUTPUTS,
    BEHAVIOR_TASK_OUTPUTS,
    AGENT_TASK_STATES,
    TASK_EVENTS,
    IDEMPOTENCY_KEYS,
    API_KEYS,
    SERVER_CONFIG,
    SERVER_PROCESSES,
    RATE_LIMIT_COUNTERS,
    CONCURRENCY_LIMITS,
    CONCURRENCY_SLOTS,
    START_RATE_LIMITS,
    START_WINDOWS,
    CLAIM_POLICIES,
    CLAIM_SERVED,
)
