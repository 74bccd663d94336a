"""Root subscription fields: live events, task states and workflow progress, fed by the process's event hub.

Each subscription registers with the hub *before* reading history, then replays stored events after
the client's cursor, then tails live ones; events carry commit-order positions (the hub dispatches an
event only once its position is stored), so anything seen twice at the hand-over is dropped by position
and nothing falls in between. Subscriptions are async generators:
leaving them (client gone, error, server shutting down) unregisters them in `finally`. On shutdown the hub
ends them (`HubClosing`): they return, so the client sees a completed stream, not an error.

Nested fields of a subscription result resolve through loaders made fresh for every event (never a cache
as old as the socket).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Annotated, Any

import strawberry

from app.api.errors import UserInputError
from app.api.loaders import Loaders
from app.api.types.convert import from_doc
from app.api.types.events import EventType, TaskEvent, event_from_doc
from app.api.types.progress import WorkflowProgress, workflow_progress
from app.api.types.tasks import AgentTaskState
from app.domain import ErrorCode
from app.live.hub import ALL, GAP, HubClosing, Key, SlowConsumer, Subscriber
from app.store import collections as c
from app.store.cursors import CursorError
from app.store.events import (
    ORIGIN,
    count_events,
    decode_event_cursor,
    events_filter,
    find_events,
    latest_position,
)

#: Events replayed per read when a subscriber catches up from a cursor.
REPLAY_BATCH = 500
#: Events that never change a task's state or a workflow's progress.
NOT_STATE_CHANGES = frozenset({EventType.TOOL_CALL, EventType.TOOL_RESULT, EventType.MEMORY_OPERATION})


def _key(task_id: str | None, workflow_id: str | None, agent_id: str | None) -> Key:
    """The most selective routing key, so the hub only asks the subscribers that may want an event."""
    if task_id is not None:
        return ("task", task_id)
    if workflow_id is not None:
        return ("workflow", workflow_id)
    if agent_id is not None:
        return ("agent", agent_id)
    return ALL


def _predicate(query: Mapping[str, Any]) -> Any:
    """The hub-side test equivalent to `events_filter(...)` for one event document."""
    wanted = {k: v for k, v in query.items() if k != "type"}
    types = set(query["type"]["$in"]) if "type" in query else None

    def accepts(event: Mapping[str, Any]) -> bool:
        return all(_value(event, k) == v for k, v in wanted.items()) and (
            types is None or event["type"] in types
        )

    return accepts


def _value(event: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of an event document (`actor.id`), None where it is absent."""
    value: Any = event
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _slow(exc: SlowConsumer) -> UserInputError:
    return UserInputError(str(exc), ErrorCode.SLOW_CONSUMER)


async def _check_replay(
    info: strawberry.Info, query: Mapping[str, Any], after: Any, cursor: str | None
) -> None:
    """Refuse a replay longer than `SUBSCRIPTION_REPLAY_MAX` events, before anything is sent: each replayed
    event costs a GraphQL execution and a message, so a few replays of a long history from one socket would
    hold the CPU for minutes. The `taskEvents` query pages the same history far more cheaply."""
    settings = info.context.settings
    limit = settings.subscription_replay_max
    count = await count_events(info.context.store.db, query, after=after, limit=limit + 1)
    if count > limit:
        start = "this cursor" if cursor else "the start of the history"
        raise UserInputError(
            f"more than {limit} stored events follow {start},"
            " the most a subscription replays"
            f" (SUBSCRIPTION_REPLAY_MAX={limit}); read them with the `taskEvents` query (`first` up to"
            f" {settings.max_page_size}, `after` its `pageInfo.endCursor`), then subscribe with `after` set"
            " to the last cursor it returned",
            ErrorCode.REPLAY_LIMIT_EXCEEDED,
        )


def _fresh_loaders(info: strawberry.Info) -> None:
    info.context.loaders = Loaders.create(info.context.store)


async def _changes(subscriber: Subscriber) -> AsyncGenerator[list[dict[str, Any]], None]:
    """Batches of live events: everything buffered at once, so a burst is handled as one change."""
    while True:
        try:
            first = await subscriber.next()
        except SlowConsumer as exc:
            raise _slow(exc) from exc
        except HubClosing:  # the server is shutting down: the stream ends
            return
        yield [first, *subscriber.drain()]


async def _states_after_gap(
    info: strawberry.Info, task_id: str | None, workflow_id: str | None
) -> list[dict[str, Any] | None]:
    """After the hub lost track (GAP), any watched task may have changed: send them all as they are now."""
    if task_id is not None:
        return [await info.context.loaders.state.load(task_id)]
    return await info.context.store.find_by_field(c.AGENT_TASK_STATES, "workflow_id", [workflow_id])


@strawberry.type(description="Watching tasks live (WebSocket: graphql-transport-ws or graphql-ws; or SSE).")
class Subscription:
    @strawberry.subscription(
        description=(
            "Task events in commit order: first every stored event after `after` (all of them when omitted,"
            ' none with `after: "HEAD"`), then live ones, with no gap and no duplicate at the hand-over.'
            " Reconnect with the last cursor you received to get exactly what you missed."
        )
    )
    async def task_events(
        self,
        info: strawberry.Info,
        task_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only this task's events.")
        ] = None,
        workflow_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only the events of this workflow's tasks.")
        ] = None,
        agent_id: Annotated[str | None, strawberry.argument(description="Only this agent's events.")] = None,
        actor_id: Annotated[
            str | None,
            strawberry.argument(
                description="Only the events written by this caller (`actor.id`: an API key's id, a JWT's"
                " subject or a server job's name)."
            ),
        ] = None,
        types: Annotated[
            list[EventType] | None, strawberry.argument(description="Only events of these types.")
        ] = None,
        after: Annotated[
            str | None,
            strawberry.argument(description='Resume after this event cursor; "HEAD" for live events only.'),
        ] = None,
    ) -> AsyncGenerator[TaskEvent, None]:
        db = info.context.store.db
        query = events_filter(
            task_id=task_id, workflow_id=workflow_id, agent_id=agent_id, actor_id=actor_id, types=types
        )
        try:
            last = ORIGIN if after in (None, "HEAD") else decode_event_cursor(after)
        except CursorError as exc:
            raise UserInputError(str(exc), ErrorCode.BAD_CURSOR) from exc
        if after != "HEAD":
            await _check_replay(info, query, last, after)
        hub = info.context.app.hub
        async with hub.subscribe(_key(task_id, workflow_id, agent_id), _predicate(query)) as subscriber:
            # Registered first: whatever commits from now on is buffered, so the replay below can't miss it.
            replay = after != "HEAD"
            if not replay:
                last = await latest_position(db)
            while True:
                while replay:  # catch up from the collection, a batch at a time
                    docs = await find_events(db, query, after=last, limit=REPLAY_BATCH)
                    for doc in docs:
                        last = doc["seq"]
                        # Back to the event loop before each event: sending one rarely waits, so a replay
                        # would otherwise hold the loop for a whole batch and starve every other client.
                        await asyncio.sleep(0)
                        yield event_from_doc(doc)
                    replay = len(docs) == REPLAY_BATCH
                try:
                    event = await subscriber.next()
                except SlowConsumer as exc:
                    raise _slow(exc) from exc
                except HubClosing:  # the server is shutting down: the stream ends
                    return
                if event is GAP:  # the hub may have missed events: read them from the collection
                    replay = True
                elif event["seq"] > last:  # seen already during the replay otherwise
                    last = event["seq"]
                    yield event_from_doc(event)

    @strawberry.subscription(
        description="A task's execution state after each change to it (or to any task of a workflow)."
    )
    async def task_state_changed(
        self,
        info: strawberry.Info,
        task_id: Annotated[strawberry.ID | None, strawberry.argument(description="Watch this task.")] = None,
        workflow_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Watch every task of this workflow.")
        ] = None,
    ) -> AsyncGenerator[AgentTaskState, None]:
        if task_id is None and workflow_id is None:
            raise UserInputError("give `taskId` or `workflowId`", ErrorCode.BAD_USER_INPUT)
        query = events_filter(task_id=task_id, workflow_id=workflow_id)
        accepts = _predicate(query)
        hub = info.context.app.hub
        async with hub.subscribe(_key(task_id, workflow_id, None), accepts) as subscriber:
            async for batch in _changes(subscriber):
                # Tasks changed in this burst, in commit order; a gap means "any may have changed".
                changed = list(
                    dict.fromkeys(
                        e["task_id"] for e in batch if e is not GAP and e["type"] not in NOT_STATE_CHANGES
                    )
                )
                _fresh_loaders(info)
                if any(e is GAP for e in batch):
                    docs = await _states_after_gap(info, task_id, workflow_id)
                else:
                    docs = await info.context.loaders.state.load_many(changed)  # one find per burst
                for doc in docs:
                    if doc is not None:
                        yield from_doc(AgentTaskState, c.AGENT_TASK_STATES, doc)

    @strawberry.subscription(description="A workflow's progress roll-up after each change in its tree.")
    async def workflow_progress(
        self,
        info: strawberry.Info,
        workflow_id: Annotated[
            strawberry.ID, strawberry.argument(description="Id of the meta workflow task.")
        ],
    ) -> AsyncGenerator[WorkflowProgress, None]:
        query = events_filter(workflow_id=workflow_id)
        hub = info.context.app.hub
        async with hub.subscribe(("workflow", workflow_id), _predicate(query)) as subscriber:
            async for batch in _changes(subscriber):
                if all(e is not GAP and e["type"] in NOT_STATE_CHANGES for e in batch):
                    continue
                _fresh_loaders(info)
                meta = await info.context.loaders.meta_task.load(workflow_id)
                if meta is None:  # deleted: nothing left to report
                    return
                yield await workflow_progress(
                    info.context.loaders, workflow_id, meta.get("sub_task_ids") or []
                )
