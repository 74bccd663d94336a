"""The root `taskEvents` field: the `task_events` outbox as a connection, oldest first, resumable.

A client reads a task's, a workflow's or an agent's events a page at a time and resumes exactly after
the last cursor it saw (an event's cursor is its number, in commit order), with no duplicate and no gap. The
nested `events` fields of the task types only give a task's first events; this is the field to page with.
"""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.connections import Connection, Edge, PageInfo
from app.api.errors import UserInputError, page_size
from app.api.types.events import EventType, TaskEvent, event_from_doc
from app.domain import ErrorCode
from app.store.collections import TASK_EVENTS
from app.store.cursors import CursorError
from app.store.events import decode_event_cursor, events_filter, find_events

TaskEventConnection = Connection[TaskEvent]  # edges: TaskEventEdge


@strawberry.type(description="Reading the events of tasks, workflows and agents, in commit order.")
class EventQuery:
    @strawberry.field(
        description=(
            "Events matching every criterion given, oldest first (by event id), a page at a time. "
            "Resume with `after: pageInfo.endCursor`."
        )
    )
    async def task_events(
        self,
        info: strawberry.Info,
        task_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only the events of this task.")
        ] = None,
        workflow_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only the events of the tasks of this workflow (meta task id)."),
        ] = None,
        agent_id: Annotated[
            str | None, strawberry.argument(description="Only the events of (or reported by) this agent.")
        ] = None,
        actor_id: Annotated[
            str | None,
            strawberry.argument(
                description="Only the events written by this caller: an API key's id, a JWT's subject or"
                " a server job's name (`actor.id`)."
            ),
        ] = None,
        types: Annotated[
            list[EventType] | None,
            strawberry.argument(description="Only events of these types (an empty list matches none)."),
        ] = None,
        after: Annotated[
            str | None,
            strawberry.argument(description="Return the events after this cursor (an event's `cursor`)."),
        ] = None,
        first: Annotated[
            int | None,
            strawberry.argument(
                description="Page size (default 20, at most the server's maximum page size)."
            ),
        ] = None,
    ) -> TaskEventConnection:
        settings = info.context.settings
        size = page_size(first, settings.default_page_size, settings.max_page_size)
        try:
            after_id = None if after is None else decode_event_cursor(after)
        except CursorError as exc:
            raise UserInputError(str(exc), ErrorCode.BAD_CURSOR) from exc
        query = events_filter(
            task_id=task_id, workflow_id=workflow_id, agent_id=agent_id, actor_id=actor_id, types=types
        )
        # One extra event tells whether a next page exists.
        docs = await find_events(info.context.store.db, query, after=after_id, limit=size + 1)
        events = [event_from_doc(doc) for doc in docs[:size]]
        return Connection(
            edges=[Edge(cursor=event.cursor, node=event) for event in events],
            page_info=PageInfo(
                has_next_page=len(docs) > size,
                has_previous_page=after is not None,
                start_cursor=events[0].cursor if events else None,
                end_cursor=events[-1].cursor if events else None,
            ),
            spec=TASK_EVENTS,
            query=query,
        )
