"""Recording what agents report about a task: tool calls, tool results and memory operations (seed 003).

Each report appends one `task_events` document (TOOL_CALL, TOOL_RESULT or MEMORY_OPERATION) whose
`payload` holds seed 003's fields under their own names. The task's state must exist; the event carries
the task id, the workflow it belongs to and the agent (by default the task's agent). Arguments are
checked before anything is written, and an idempotency key makes a retried report return the first
event instead of appending a second one. The state itself is not changed: reporting a tool call is not
a lifecycle transition.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app.domain import MAX_ID_LENGTH
from app.lifecycle import idempotency
from app.lifecycle.errors import Invalid, NotFound, check_agent
from app.lifecycle.events import EventType, event_doc
from app.lifecycle.transitions import Lifecycle
from app.store import states as state_store
from app.store.events import append_events
from app.store.storable import Unstorable, check_storable

Doc = dict[str, Any]

MAX_NAME_LENGTH = MAX_ID_LENGTH  # tool_name, operation, agent_id, correlation_id
MAX_KEY_OR_QUERY_LENGTH = 2_000
MAX_MESSAGE_LENGTH = 10_000  # error_message, message
MAX_PAYLOAD_BYTES = 64 * 1024  # tool_args, result, JSON-encoded
#: Deeper JSON is refused before BSON's own nesting limit (100) turns it into an unexpected error.
MAX_PAYLOAD_DEPTH = 32
TOOL_RESULT_STATUSES = ("SUCCESS", "FAILURE", "ERROR")
MEMORY_STATUSES = ("SUCCESS", "FAILURE")


def _text(field: str, value: Any, limit: int, *, required: bool) -> str | None:
    """A string argument: present and non-blank when required, at most `limit` characters."""
    if value is None:
        if required:
            raise Invalid(field, f"{field} is required")
        return None
    if not isinstance(value, str):
        raise Invalid(field, f"{field} must be a string")
    _check_unicode(field, value)
    if required and not value.strip():
        raise Invalid(field, f"{field} cannot be empty")
    if len(value) > limit:
        raise Invalid(field, f"{field} must be at most {limit} characters, got {len(value)}")
    return value


def _optional_id(field: str, value: Any) -> str | None:
    """An optional identifier: absent, or 1 to MAX_NAME_LENGTH characters."""
    return None if value is None else _text(field, value, MAX_NAME_LENGTH, required=True)


def _status(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    """A status in any case, stored upper-case."""
    text = _text(field, value, MAX_NAME_LENGTH, required=True)
    assert text is not None
    status = text.strip().upper()
    if status not in allowed:
        raise Invalid(field, f"{field} must be one of {', '.join(allowed)}, got '{text}'")
    return status


def _check_unicode(field: str, text: str) -> None:
    _check_json(field, text)


def _check_json(field: str, value: Any) -> None:
    """A value MongoDB can store exactly as the client sent it, and JSON can show again."""
    try:
        check_storable(value, field, MAX_PAYLOAD_DEPTH)
    except Unstorable as exc:
        raise Invalid(field, f"{field} holds {exc}") from None


def _payload(field: str, value: Any, *, must_be_object: bool) -> Any:
    """A free-form JSON argument: an object when the seed says Dict, at most MAX_PAYLOAD_BYTES encoded."""
    if must_be_object and not isinstance(value, Mapping):
        raise Invalid(field, f"{field} must be an object, got {type(value).__name__}")
    _check_json(field, value)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise Invalid(field, f"payload too large: {size} bytes (limit {MAX_PAYLOAD_BYTES})")
    return dict(value) if isinstance(value, Mapping) else value


class Recorder:
    """Appends reported events to the outbox of one database."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        # The lifecycle's database and clock, and its workflow lookup, so recorded events name their
        # workflow exactly as lifecycle events do (stored on our states, looked up for foreign ones).
        self._lifecycle = lifecycle
        self.db = lifecycle.db
        self.clock = lifecycle.clock

    async def tool_call(
        self,
        task_id: str,
        tool_name: str,
        tool_args: Any = None,
        *,
        agent_id: str | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Doc:
        """Record that an agent invoked a tool (TOOL_CALL); returns the event document."""
        payload = {
            "tool_name": _text("tool_name", tool_name, MAX_NAME_LENGTH, required=True),
            "tool_args": _payload("tool_args", {} if tool_args is None else tool_args, must_be_object=True),
            "agent_id": _optional_id("agent_id", agent_id),
            "correlation_id": _optional_id("correlation_id", correlation_id),
        }
        return await self._record("record_tool_call", EventType.TOOL_CALL, task_id, payload, idempotency_key)

    async def tool_result(
        self,
        task_id: str,
        tool_name: str,
        status: str,
        result: Any = None,
        *,
        error_message: str | None = None,
        agent_id: str | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Doc:
        """Record the outcome of a tool execution (TOOL_RESULT); returns the event document."""
        payload = {
            "tool_name": _text("tool_name", tool_name, MAX_NAME_LENGTH, required=True),
            "status": _status("status", status, TOOL_RESULT_STATUSES),
            "result": _payload("result", result, must_be_object=False),
            "error_message": _text("error_message", error_message, MAX_MESSAGE_LENGTH, required=False),
            "agent_id": _optional_id("agent_id", agent_id),
            "correlation_id": _optional_id("correlation_id", correlation_id),
        }
        return await self._record(
            "record_tool_result", EventType.TOOL_RESULT, task_id, payload, idempotency_key
        )

    async def memory_operation(
        self,
        task_id: str,
        operation: str,
        key_or_query: str,
        status: str,
        *,
        message: str | None = None,
        agent_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Doc:
        """Record an operation on agent or system memory (MEMORY_OPERATION); returns the event document."""
        payload = {
            "agent_id": _optional_id("agent_id", agent_id),
            "operation": _text("operation", operation, MAX_NAME_LENGTH, required=True),
            "key_or_query": _text("key_or_query", key_or_query, MAX_KEY_OR_QUERY_LENGTH, required=True),
            "status": _status("status", status, MEMORY_STATUSES),
            "message": _text("message", message, MAX_MESSAGE_LENGTH, required=False),
        }
        return await self._record(
            "record_memory_operation", EventType.MEMORY_OPERATION, task_id, payload, idempotency_key
        )

    async def _record(
        self, operation: str, kind: EventType, task_id: str, payload: Doc, idempotency_key: str | None
    ) -> Doc:
        """Append the event in a transaction that also checks the task and keeps the idempotent answer."""

        async def work(session: AsyncClientSession) -> Doc:
            state = await state_store.get(self.db, task_id, session)
            if state is None:
                raise NotFound(f"no task with id '{task_id}'", id=task_id)
            check_agent(_agent_of(state), f"task '{task_id}'")
            agent_id = payload["agent_id"] or _agent_of(state)
            # Seed 003's payload names its agent; the default is filled in, so the stored payload is whole.
            event = event_doc(
                kind,
                task_id,
                await self._lifecycle.workflow_id(session, state),
                agent_id,
                {**payload, "agent_id": agent_id},
                self.clock(),
            )
            await append_events(self.db, session, [event])
            return event

        return await self._once(idempotency_key, operation, work, {"task_id": task_id, "payload": payload})

    async def _once(
        self,
        key: str | None,
        operation: str,
        work: Callable[[AsyncClientSession], Awaitable[Doc]],
        payload: Any = None,
    ) -> Doc:
        """Run `work` in a transaction, once per idempotency key; a replay answers the same event."""

        def decode(answer: Mapping[str, Any], events: list[Doc]) -> Doc:
            if not events:  # removed by hand since: say so rather than record the report a second time
                event_id = answer["event_ids"][0]
                raise NotFound(f"the event recorded under this idempotency key ({event_id}) no longer exists")
            return events[0]

        with self._lifecycle.writing():
            event = await idempotency.run_once(
                self.db,
                key,
                operation,
                work,
                encode=lambda event: {"event_ids": [event["_id"]]},
                decode=decode,
                clock=self.clock,
                payload=payload,
            )
            await self._lifecycle.settle([event])
        return event


def _agent_of(state: Mapping[str, Any]) -> str | None:
    agent = state.get("agent_name")
    return agent if isinstance(agent, str) and agent else None
