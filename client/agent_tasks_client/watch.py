"""Watching events over WebSocket (graphql-transport-ws), resuming from the last cursor after a disconnect.

The server's `taskEvents(after:)` subscription replays every stored event after a cursor and then tails
live ones, with no gap and no duplicate at the hand-over; so resuming is only a matter of remembering the
last cursor yielded and subscribing again with it. What ends a connection and is resumed: the socket
closing (network, server restart), the server completing the stream (it is shutting down), and a
`SLOW_CONSUMER` error (this reader fell behind). An invalid subscription is raised, not retried.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from agent_tasks_client.documents import operation
from agent_tasks_client.enums import ErrorCode
from agent_tasks_client.errors import TransportError
from agent_tasks_client.models import Event
from agent_tasks_client.transport import Transport

logger = logging.getLogger("agent_tasks_client.watch")

#: Seconds before the first reconnection; doubled after each failed one, up to `max_backoff`.
FIRST_BACKOFF = 0.1
#: The subscription's error codes that mean "resume from your cursor" rather than "your request is wrong".
RESUMABLE_CODES = frozenset({ErrorCode.SLOW_CONSUMER})

OnReconnect = Callable[[int, BaseException | None], Awaitable[None] | None]


class _Resume(Exception):
    """The stream ended in a way that a new subscription from the last cursor repairs."""


async def watch(
    client: Transport,
    filters: Mapping[str, Any],
    *,
    after: str | None,
    max_backoff: float,
    on_reconnect: OnReconnect | None,
) -> AsyncIterator[Event]:
    """The generator behind `AgentTasksClient.watch_events`."""
    url = client.endpoint.replace("http", "ws", 1)
    cursor = after
    tries = 0
    while True:
        error: BaseException | None = None
        try:
            async with connect(
                url,
                subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                additional_headers=client.headers,
                open_timeout=client.timeout,
                proxy=None,
            ) as ws:
                await _init(ws, client.timeout)
                tries = 0  # connected: the next failure starts the backoff afresh
                async for event in _subscribe(ws, client, filters, cursor):
                    # The server never repeats a position; this guards the promise on our side too.
                    if cursor is not None and cursor != "HEAD" and event.cursor <= cursor:
                        continue
                    cursor = event.cursor
                    yield event
            error = None
        except (_Resume, ConnectionClosed, OSError, InvalidHandshake, TimeoutError) as exc:
            error = exc
        tries += 1
        delay = min(max_backoff, FIRST_BACKOFF * 2 ** (tries - 1)) * (0.5 + random.random() / 2)
        logger.info("event stream ended (%r); resuming after %s in %.2f s", error, cursor, delay)
        if on_reconnect is not None:
            outcome = on_reconnect(tries, error)
            if inspect.isawaitable(outcome):
                await outcome
        await asyncio.sleep(delay)


async def _init(ws: ClientConnection, wait: float) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    while True:
        # `asyncio.timeout`, not `wait_for`: on Python 3.11 the latter can lose a cancellation that lands
        # as the message arrives (CPython gh-86296), and the caller's `stop()` would then wait forever.
        async with asyncio.timeout(wait):
            message = json.loads(await ws.recv())
        if message.get("type") == "connection_ack":
            return
        if message.get("type") == "ping":
            await ws.send(json.dumps({"type": "pong"}))


def subscription(filters: Mapping[str, Any], after: str | None, selection: str) -> tuple[str, dict[str, Any]]:
    """The `taskEvents` subscription's document and variables, each event asked for `selection`."""
    types = filters.get("types")
    return operation(
        "subscription",
        "taskEvents",
        {
            "taskId": ("ID", filters.get("taskId")),
            "workflowId": ("ID", filters.get("workflowId")),
            "agentId": ("String", filters.get("agentId")),
            "types": ("[EventType!]", list(types) if types is not None else None),
            "after": ("String", after),
        },
        selection,
    )


async def _subscribe(
    ws: ClientConnection, client: Transport, filters: Mapping[str, Any], after: str | None
) -> AsyncIterator[Event]:
    document, variables = subscription(filters, after, await client.event_fields())
    await ws.send(
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": document, "variables": variables}})
    )
    async for raw in ws:
        message = json.loads(raw)
        kind = message.get("type")
        if kind == "ping":
            await ws.send(json.dumps({"type": "pong"}))
        elif kind == "next":
            payload = message.get("payload") or {}
            errors = payload.get("errors")
            if errors:
                codes = {(e.get("extensions") or {}).get("code") for e in errors}
                text = "; ".join(str(e.get("message")) for e in errors)
                if codes & RESUMABLE_CODES:
                    raise _Resume(text)
                raise TransportError(f"subscription error: {text}", errors=list(errors))
            yield Event.from_graphql(payload["data"]["taskEvents"])
        elif kind == "error":
            errors = message.get("payload") or []
            text = "; ".join(str(e.get("message")) for e in errors)
            raise TransportError(f"subscription refused: {text}", errors=list(errors))
        elif kind == "complete":  # the server ended the stream (it is shutting down)
            raise _Resume("the server completed the stream")
    raise _Resume("the connection closed")
