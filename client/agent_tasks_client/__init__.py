"""A Python client for the agent-tasks server, for agent runtimes: typed, async, on httpx and websockets.

    async with AgentTasksClient("http://127.0.0.1:8000") as client:
        task = await client.claim("VoiceForgeAgent", lease_seconds=30)
        if task is not None:
            await task.progress(50, "synthesising")
            await task.complete({"audio": "s3://…"})

It imports nothing from the server's code (`app`): its own distribution (`agent-tasks-client`, client/ in
the repository: `pip install ./client`, `./client[tracing]` for OpenTelemetry spans) installs anywhere the
server is reachable. Layers, imports pointing down: client -> worker -> claimed | watch -> transport ->
documents | errors | models | tracing -> enums (an import-linter contract, pyproject.toml).
"""

from agent_tasks_client.claimed import ClaimedTask
from agent_tasks_client.client import AgentTasksClient
from agent_tasks_client.enums import ErrorCode, EventType, TaskKind, TaskPriority, TaskStatus
from agent_tasks_client.errors import (
    AgentTasksError,
    Conflict,
    FatalError,
    Forbidden,
    LeaseLost,
    NotFound,
    RetryableError,
    TransitionRefused,
    TransportError,
    Unauthorized,
    ValidationFailed,
)
from agent_tasks_client.models import BulkResult, Event, EventPage, RetryPolicy, TaskState, Timeouts
from agent_tasks_client.worker import Handler, Worker, WorkerStats

__all__ = [
    "AgentTasksClient",
    "AgentTasksError",
    "BulkResult",
    "ClaimedTask",
    "Conflict",
    "ErrorCode",
    "Event",
    "EventPage",
    "EventType",
    "FatalError",
    "Forbidden",
    "Handler",
    "LeaseLost",
    "NotFound",
    "RetryPolicy",
    "RetryableError",
    "TaskKind",
    "TaskPriority",
    "TaskState",
    "TaskStatus",
    "Timeouts",
    "TransitionRefused",
    "TransportError",
    "Unauthorized",
    "ValidationFailed",
    "Worker",
    "WorkerStats",
]
