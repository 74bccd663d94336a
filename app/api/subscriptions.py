"""Root subscription fields: live events, task states and workflow progress, over the process's event hub.

The protocol (register with the hub, replay stored events after the client's cursor, tail live ones, each
event exactly once) is `app.live.feed`'s; these resolvers only turn its events into GraphQL values and its
refusals into errors. Subscriptions are async generators: leaving them (client gone, error, server
shutting down) closes the feed (`aclosing`), which unregisters it. On shutdown the hub ends them: they
return, so the client sees a completed stream, not an error.

Nested fields of a subscription result resolve through loaders made fresh for every event (never a cache
as old as the socket).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any, TypeVar

import strawberry

from app.api.errors import UserInputError
from app.api.loaders import Loaders
from app.api.types.convert import from_doc
from app.api.types.events import EventType, TaskEvent, event_from_doc
from app.api.types.progress import WorkflowProgress, workflow_progress
from app.api.types.tasks import AgentTaskState
from app.domain import ErrorCode
from app.live import feed
from app.live.hub import GAP, SlowConsumer
from app.store import collections as c
from app.store.cursors import CursorError
from app.store.events import decode_event_cursor

_T = TypeVar("_T")
#: Events that never change a task's state or a workflow's progress.
NOT_STATE_CHANGES = frozenset({EventType.TOOL_CALL, EventType.TOOL_RESULT, EventType.MEMORY_OPERATION})


def _slow(exc: SlowConsumer) -> UserInputError:
    return UserInputError(str(exc), ErrorCode.SLOW_CONSUMER)


def _too_long(info: strawberry.Info, exc: feed.ReplayTooLong) -> UserInputError:
    start = "the start of the history" if exc.from_start else "this cursor"
    return UserInputError(
        f"more than {exc.limit} stored events follow {start},"
        " the most a subscription replays"
        f" (SUBSCRIPTION_REPLAY_MAX={exc.limit}); read them with the `taskEvents` query (`first` up to"
        f" {info.context.settings.max_page_size}, `after` its `pageInfo.endCursor`), then subscribe with"
        " `after` set to the last cursor it returned",
        ErrorCode.REPLAY_LIMIT_EXCEEDED,
    )


async def _live(items: AsyncGenerator[_T, None]) -> AsyncGenerator[_T, None]:
    """The feed's items, with a subscriber cut off for falling behind told so as a GraphQL error; closing
    this closes the feed (which unregisters it) at once, not when the garbage collector gets to it."""
    async with aclosing(items):
        try:
            async for item in items:
                yield item
        except SlowConsumer as exc:
            raise _slow(exc) from exc


def _fresh_loaders(info: strawberry.Info) -> None:
    info.context.loaders = Loaders.create(info.context.store)


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
        selector = feed.Selector.of(
            task_id=task_id, workflow_id=workflow_id, agent_id=agent_id, actor_id=actor_id, types=types
        )
        try:
            start = feed.HEAD if after == "HEAD" else None if after is None else decode_event_cursor(after)
        except CursorError as exc:
            raise UserInputError(str(exc), ErrorCode.BAD_CURSOR) from exc
        db = info.context.store.db
        try:
            await feed.check_replay(db, selector, start, info.context.settings.subscription_replay_max)
        except feed.ReplayTooLong as exc:
            raise _too_long(info, exc) from exc
        async with aclosing(_live(feed.events(info.context.app.hub, db, selector, start))) as events:
            async for event in events:
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
        selector = feed.Selector.of(task_id=task_id, workflow_id=workflow_id)
        hub = info.context.app.hub
        async with aclosing(_live(feed.changes(hub, selector))) as changes:
            async for batch in changes:
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
        selector = feed.Selector.of(workflow_id=workflow_id)
        async with aclosing(_live(feed.changes(info.context.app.hub, selector))) as changes:
            async for batch in changes:
                if all(e is not GAP and e["type"] in NOT_STATE_CHANGES for e in batch):
                    continue
                _fresh_loaders(info)
                meta = await info.context.loaders.meta_task.load(workflow_id)
                if meta is None:  # deleted: nothing left to report
                    return
                yield await workflow_progress(
                    info.context.loaders, workflow_id, meta.get("sub_task_ids") or []
                )
