"""The one table of what needs which scope, and the one check (`require`) every way in uses.

- `read`: every query and subscription, REST `GET` and `POST …/query`.
- `write`: creating tasks and outputs, editing them, the lifecycle (claim, start, heartbeat, progress,
  complete, fail, retry, cancel, pause, resume, and their bulk forms), finalizing, recording events.
- `admin`: deletes (a cascade removes whole subtrees, and their history stays without them), API key
  management, `purgeTasks` and `storage` (docs/RETENTION.md), and setting concurrency limits, start rate
  limits and claim policies (docs/STEERING.md).
- none: `viewer`, the caller's own kind and scopes (so a page can tell which controls to show).

GraphQL checks each operation's root fields against `GRAPHQL` before anything runs (`app.api.access`),
REST checks each route's operation against `REST` before its body is read (`app.rest.errors`), so a
refusal writes nothing. A test asserts that the tables name every root field of the schema and every
REST operation: a new field cannot be served without a scope.

A caller without the scope is refused with `Forbidden` (GraphQL `FORBIDDEN`, REST 403); an anonymous
caller of a server that requires keys is told to authenticate instead (`Unauthenticated`: GraphQL
`UNAUTHENTICATED`, REST 401), since any key may carry the scope.
"""

from __future__ import annotations

from app.domain import ErrorCode, Scope
from app.principal import Principal

R, W, A = Scope.READ, Scope.WRITE, Scope.ADMIN

#: Every root field of the GraphQL schema, by root type, and the scope it needs (None: none, as for
#: introspection; `viewer` tells any caller, anonymous too, only its own scopes).
GRAPHQL: dict[str, dict[str, Scope | None]] = {
    "Query": {
        "metaWorkflowTask": R,
        "subTask": R,
        "behaviorTask": R,
        "agentTask": R,
        "taskOutput": R,
        "subTaskOutput": R,
        "behaviorTaskOutput": R,
        "metaWorkflowTasks": R,
        "subTasks": R,
        "behaviorTasks": R,
        "agentTasks": R,
        "taskOutputs": R,
        "subTaskOutputs": R,
        "behaviorTaskOutputs": R,
        "taskEvents": R,
        "agentStats": R,
        "agentsStats": R,
        "apiKeys": A,
        # Sizes of every collection: operational figures about all agents' work, not one caller's data.
        "storage": A,
        "concurrencyLimits": R,
        "claimQueue": R,
        "startRateLimits": R,
        "viewer": None,
    },
    "Mutation": {
        # The lifecycle of one task.
        "claimTask": W,
        "claimTasks": W,
        "startTask": W,
        "heartbeatTask": W,
        "reportProgress": W,
        "completeTask": W,
        "failTask": W,
        "retryTask": W,
        "cancelTask": W,
        "rescheduleTask": W,
        "pauseTask": W,
        "resumeTask": W,
        # Bulk actions by filter (as many single ones; an agent-bound key reaches only its agents' tasks).
        "retryTasks": W,
        "cancelTasks": W,
        "pauseTasks": W,
        "resumeTasks": W,
        # Events recorded by agents.
        "recordToolCall": W,
        "recordToolResult": W,
        "recordMemoryOperation": W,
        # The hierarchy: creating, editing and finalizing are writes; deleting is admin.
        "createMetaWorkflowTask": W,
        "updateMetaWorkflowTask": W,
        "deleteMetaWorkflowTask": A,
        "finalizeMetaWorkflowTask": W,
        "createTaskOutput": W,
        "updateTaskOutput": W,
        "deleteTaskOutput": A,
        "createSubTask": W,
        "updateSubTask": W,
        "deleteSubTask": A,
        "finalizeSubTask": W,
        "createSubTaskOutput": W,
        "updateSubTaskOutput": W,
        "deleteSubTaskOutput": A,
        "createBehaviorTask": W,
        "updateBehaviorTask": W,
        "deleteBehaviorTask": A,
        "finalizeBehaviorTask": W,
        "createBehaviorTaskOutput": W,
        "updateBehaviorTaskOutput": W,
        "deleteBehaviorTaskOutput": A,
        "createWorkflow": W,
        "createAgentTask": W,
        "addSubtask": W,
        "updateAgentTask": W,
        "deleteAgentTask": A,
        # Key management.
        "createApiKey": A,
        "revokeApiKey": A,
        # Retention: removing finished workflows in bulk.
        "purgeTasks": A,
        # Concurrency limits and claim policies (docs/STEERING.md).
        "setConcurrencyLimit": A,
        "clearConcurrencyLimit": A,
        "setClaimPolicy": A,
        "setStartRateLimit": A,
        "clearStartRateLimit": A,
    },
    "Subscription": {
        "taskEvents": R,
        "taskStateChanged": R,
        "workflowProgress": R,
    },
}

#: Every REST operation (`app.rest.routes.OPERATIONS`) and the scope it needs, whatever the entity.
REST: dict[str, Scope] = {
    "get": R,
    "query": R,  # a POST, but it only reads
    "create": W,
    "update": W,
    "finalize": W,
    "cancel": W,
    "pause": W,
    "resume": W,
    "retry_many": W,
    "cancel_many": W,
    "pause_many": W,
    "resume_many": W,
    "delete": A,
    # Concurrency limits, start rate limits and claim policies (docs/STEERING.md), as their GraphQL fields.
    "list_concurrency_limits": R,
    "list_start_rate_limits": R,
    "get_claim_policy": R,
    "get_claim_queue": R,
    "set_concurrency_limit": A,
    "clear_concurrency_limit": A,
    "set_start_rate_limit": A,
    "clear_start_rate_limit": A,
    "set_claim_policy": A,
}


class ScopeRefusal(Exception):
    """A caller lacks `scope`; nothing was done. `code` is machine-readable."""

    code = ErrorCode.FORBIDDEN

    def __init__(self, message: str, scope: Scope) -> None:
        super().__init__(message)
        self.message = message
        self.scope = scope


class Unauthenticated(ScopeRefusal):
    """An anonymous caller lacks the scope: it must present credentials (401)."""

    code = ErrorCode.UNAUTHENTICATED


class Forbidden(ScopeRefusal):
    """An authenticated caller lacks the scope (403)."""


def describe(principal: Principal) -> str:
    """The caller in a refusal: `API key 3f2a… (ci)`, `token subject ada`, `anonymous callers`."""
    if principal.kind == "key":
        return f"API key {principal.id} ({principal.name})"
    if principal.kind == "jwt":
        return f"token subject {principal.id}"
    return f"{principal.kind} callers"


def require(principal: Principal, scope: Scope, what: str) -> None:
    """Refuse unless `principal` has `scope`; `what` names the field or route for the message."""
    if principal.has(scope):
        return
    held = ", ".join(sorted(s.value for s in principal.scopes)) or "none"
    if principal.kind == "anonymous":
        raise Unauthenticated(
            f"{what} needs the `{scope.value}` scope and this server requires credentials for it: send"
            " `Authorization: Bearer <API key or token>`",
            scope,
        )
    raise Forbidden(
        f"{what} needs the `{scope.value}` scope; {describe(principal)} has: {held}",
        scope,
    )
