"""The GraphQL documents the client sends, built from the arguments a call actually passes.

An argument left at None is left out of the document (the server then applies its default), so a
call only names the arguments it uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The state fields every lifecycle answer carries (`TaskState`).
STATE_FIELDS = """
  id agentName status attempts version progressPercentage currentStep name workflowId taskKind
  maxAttempts inputParameters leaseHolder leaseExpiresAt nextAttemptAt notBefore
  scheduleToStartTimeout startToCloseTimeout scheduleToCloseTimeout
  scheduleToStartDeadline startToCloseDeadline scheduleToCloseDeadline traceparent
  pausedFrom pausedAt pauseRequested
  lastError { message }
"""
#: State fields of a server with retry policies and delayed starts (left out for an older one).
STEERING_FIELDS = "nextAttemptAt notBefore"
#: State fields of a server with timeouts (left out for an older one).
TIMEOUT_FIELDS = """scheduleToStartTimeout startToCloseTimeout scheduleToCloseTimeout
  scheduleToStartDeadline startToCloseDeadline scheduleToCloseDeadline"""
#: The state field of a server that keeps trace contexts (left out for an older one).
TRACING_FIELDS = "traceparent"
#: State fields of a server with pause and resume (left out for an older one).
PAUSE_FIELDS = "pausedFrom pausedAt pauseRequested"

#: Every event with its payload (`Event.data`).
EVENT_FIELDS = """
  __typename cursor type taskId workflowId agentId timestamp
  ... on TaskCreatedEvent { taskKind status }
  ... on TaskUpdatedEvent { fields }
  ... on TaskDeletedEvent { deletedIds }
  ... on TaskFinalizedEvent { taskKind }
  ... on StatusChangedEvent { fromStatus toStatus }
  ... on TaskProgressEvent { progress details }
  ... on TaskCompletedEvent { result }
  ... on TaskFailedEvent { error isFinal details }
  ... on ToolCallEvent { toolName toolArgs correlationId }
  ... on ToolResultEvent { toolName toolStatus: status toolResult: result errorMessage correlationId }
  ... on MemoryOperationEvent { operation keyOrQuery memoryStatus: status message }
  ... on LeaseExpiredEvent { holder attempt leaseExpiresAt leaseStatus: status }
  ... on TaskRescheduledEvent { notBefore previousNotBefore }
  ... on TaskCancelledEvent { reason rootTaskId cancelFromStatus: fromStatus }
  ... on TaskTimedOutEvent { kind timeoutSeconds deadline attempt timedOutStatus: status nextAttemptAt }
  ... on TaskPausedEvent { reason rootTaskId pauseFrom: fromStatus pauseTo: toStatus pauseRequested }
  ... on TaskResumedEvent { reason rootTaskId resumeFrom: fromStatus resumeTo: toStatus }
  ... on OtherEvent { rawType payload }
"""

#: What is asked of each refusal (`errors.raise_for_member`). `currentStatus` is aliased on LeaseLostError:
#: it is non-null there and nullable on TransitionError, and one response name must have one type.
_ERROR_DETAILS = {
    "NotFoundError": "id",
    "TransitionError": "currentStatus",
    "ConflictError": "currentVersion",
    "ValidationError": "field code",
    "LeaseLostError": "currentAttempt currentHolder leaseStatus: currentStatus",
    # (cancelRequested is not asked: a cancelled task's LeaseLostError has currentStatus CANCELLED.)
}


def error_fields(*members: str) -> str:
    """The selection of a result union's refusals: only its own members may be spread in it."""
    spreads = " ".join(f"... on {m} {{ {_ERROR_DETAILS[m]} }}" for m in members)
    return f"__typename ... on Error {{ message }} {spreads}"


#: The refusals of most results (createWorkflow, createAgentTask, TaskTransitionResult before leases).
ERROR_FIELDS = error_fields("NotFoundError", "TransitionError", "ConflictError", "ValidationError")
#: The refusals of a recording (recordToolCall…).
RECORD_ERROR_FIELDS = error_fields("NotFoundError", "ValidationError")
#: The refusals of `ClaimTaskResult`, and what else it may be.
CLAIM_FIELDS = f"""
  {error_fields("ConflictError", "ValidationError")}
  ... on NothingToClaim {{ message }}
  ... on TaskTransitionSuccess {{ state {{ {STATE_FIELDS} }} }}
"""

#: The refusals of `ClaimTasksResult`, and the tasks it started.
CLAIM_MANY_FIELDS = f"""
  {error_fields("ConflictError", "ValidationError")}
  ... on ClaimTasksSuccess {{ reason claimed {{ state {{ {STATE_FIELDS} }} }} }}
"""

#: What a bulk action (`retryTasks`…) is asked for.
BULK_FIELDS = f"""
  {error_fields("ConflictError", "ValidationError")} ... on ForbiddenError {{ agentName }}
  ... on BulkActionSuccess {{ matched changed changedIds skipped {{ reason count }} hasMore limit }}
"""


def transition_fields(lease: bool) -> str:
    """What a `TaskTransitionResult` is asked for; `LeaseLostError` only from a server that has it."""
    refusals = ["NotFoundError", "TransitionError", "ConflictError", "ValidationError"]
    return f"""
  {error_fields(*refusals, *(["LeaseLostError"] if lease else []))}
  ... on TaskTransitionSuccess {{ state {{ {STATE_FIELDS} }} }}
"""


def operation(
    kind: str,
    field: str,
    arguments: Mapping[str, tuple[str, Any]],
    selection: str,
) -> tuple[str, dict[str, Any]]:
    """`kind field(args) { selection }` and its variables, for the arguments whose value is not None.

    `arguments` maps each GraphQL argument name to its (type, value)."""
    used = {name: (kind_, value) for name, (kind_, value) in arguments.items() if value is not None}
    declared = ", ".join(f"${name}: {type_}" for name, (type_, _) in used.items())
    passed = ", ".join(f"{name}: ${name}" for name in used)
    name = field[:1].upper() + field[1:]
    head = f"{kind} {name}({declared})" if declared else f"{kind} {name}"
    call = f"{field}({passed})" if passed else field
    return f"{head} {{ {call} {{ {selection} }} }}", {k: v for k, (_, v) in used.items()}


#: The whole workflow tree in one request (the repository's queries/WorkflowTree.graphql).
WORKFLOW_TREE = """
query WorkflowTree($id: ID!) {
  metaWorkflowTask(id: $id) {
    id metaWorkflowId dslWorkflowId personalityType isFinalized metaWorkflowGraph
    progress { total percentage completed failed inProgress counts { status count } }
    state { ...StateFields }
    output { taskId outputFramedbPtr finalizedSubTaskIds taskDataPtr }
    subTasks {
      id personalityType behaviorWorkflowId behaviorDagData prevSubTaskId isFinalized
      state { ...StateFields }
      output { subTaskId outputFramedbPtr processorSubjectIds isFinalizedStep }
      behaviorTasks {
        id actionId actionType actionSubType isFinalized
        state { ...StateFields }
        output { behaviorTaskId outputFramedbPtr processorSubjectIds processorModulesGraph isFinalizedStep }
      }
    }
  }
}

fragment StateFields on AgentTaskState {
  id agentName status priority progressPercentage currentStep attempts startedAt completedAt
  executionTimeSeconds updatedAt lastError { timestamp message details }
  dependencies { taskId statusExpected satisfied }
}
"""
