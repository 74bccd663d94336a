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
  maxAttempts inputParameters leaseHolder leaseExpiresAt lastError { message }
"""

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
  ... on LeaseExpiredEvent { holder attempt leaseExpiresAt toStatus: status }
  ... on OtherEvent { rawType payload }
"""

#: The refusals of a result union (`errors.raise_for_member`). `currentStatus` is aliased on
#: LeaseLostError: it is non-null there and nullable on TransitionError, and one response name must
#: have one type.
ERROR_FIELDS = """
  __typename
  ... on Error { message }
  ... on NotFoundError { id }
  ... on TransitionError { currentStatus }
  ... on ConflictError { currentVersion }
  ... on ValidationError { field }
"""
LEASE_ERROR_FIELDS = "... on LeaseLostError { currentAttempt currentHolder leaseStatus: currentStatus }"

#: What a `TaskTransitionResult` (or `ClaimTaskResult`) is asked for.
TRANSITION_FIELDS = f"""
  {ERROR_FIELDS}
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
