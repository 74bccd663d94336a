"""What the lifespan opens once and every request shares (`AppState`), and `open_resources`, which opens
it in order and closes it in reverse: the embedded mongod (when no `MONGODB_URI` is set), the client, the
collections and indexes, the process's registration (`Presence`), the event hub, the expiry sweeper and
the retention sweeper (when RETENTION_DAYS or RETENTION_SECONDS is set).

The GraphQL and REST layers both reach the services through `AppState`; neither imports the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandListener

from app import instruments
from app.lifecycle.expiry import ExpirySweeper
from app.lifecycle.hierarchy import Hierarchy
from app.lifecycle.retention import Retention, RetentionSweeper
from app.lifecycle.steering import Steering
from app.lifecycle.transitions import Lifecycle
from app.live.hub import EventHub
from app.live.presence import Presence
from app.mongo.client import app_name, check_deployment, make_client
from app.mongo.embedded import EmbeddedMongod
from app.mongo.monitoring import CommandMetrics
from app.settings import Settings
from app.store.config import shared_secret
from app.store.cursors import CursorCodec
from app.store.indexes import ensure_indexes
from app.store.repository import Store
from app.store.types import Db

logger = logging.getLogger(__name__)

#: WebSocket close code "going away": the server is shutting down (RFC 6455, 7.4.1).
GOING_AWAY = 1001


class ClosableSocket(Protocol):
    """An open WebSocket connection, as far as shutdown needs it (Starlette's `WebSocket`)."""

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass
class AppState:
    """What the lifespan creates once and every request shares."""

    settings: Settings
    store: Store
    lifecycle: Lifecycle
    hierarchy: Hierarchy
    hub: EventHub
    #: The background sweeper (expired tasks), owned by the lifespan; tests may stop it to hold time still.
    sweeper: ExpirySweeper | None = None
    #: Removing finished work (`purgeTasks`, `storage`), and its sweeper when RETENTION_* is set.
    retention: Retention | None = None
    retention_sweeper: RetentionSweeper | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: Open GraphQL WebSocket connections (registered when they open, gone when they are), for shutdown.
    websockets: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    #: Tasks watching live connections (a WebSocket's API key), cancelled when the resources close.
    background: set[asyncio.Task[None]] = field(default_factory=set)

    async def end_live_connections(self, grace_seconds: float) -> None:
        """Shutdown, before the HTTP server waits for its connections: end every subscription and close
        every WebSocket, within `grace_seconds`.

        Subscriptions end as finished streams (an SSE stream sends `complete` and ends its response, a
        WebSocket operation sends `complete`); then each WebSocket is closed with 1001 "going away", so
        its client reconnects elsewhere instead of holding this process up."""
        self.hub.end_subscriptions()
        if not await self.hub.wait_idle(grace_seconds):
            logger.warning(
                "%d subscriptions still running after %.1f s", self.hub.subscriber_count, grace_seconds
            )
        await asyncio.sleep(0.05)  # let the handlers send the `complete` messages of what just ended
        sockets: list[ClosableSocket] = list(self.websockets)
        for websocket in sockets:
            # Already closed by either side: Starlette refuses a second close, which is fine here.
            with contextlib.suppress(Exception):
                await websocket.close(GOING_AWAY, "server shutting down")


@asynccontextmanager
async def _database(
    settings: Settings, listeners: Sequence[CommandListener] = (), process_id: str | None = None
) -> AsyncIterator[tuple[str, Db]]:
    """The database's URI and handle, ready (mongod if embedded, a client, a bounded check, the indexes);
    closed in reverse. The client is named after `process_id` (default: a new one)."""
    embedded: EmbeddedMongod | None = None
    uri = settings.mongodb_uri
    if uri is None:
        embedded = EmbeddedMongod(settings.data_dir, settings.embedded_mongo_port)
        uri = await asyncio.to_thread(embedded.start)
    client = make_client(
        uri,
        # Command latency by command and collection (`/metrics`); the event hub's client is left out.
        [*listeners, CommandMetrics()],
        timeout_seconds=settings.mongodb_timeout_seconds,
        server_selection_timeout_seconds=settings.mongodb_server_selection_timeout_seconds,
        appname=app_name(process_id or uuid.uuid4().hex),
    )
    try:
        # A bounded wait, and one sentence if MongoDB is unreachable or cannot run this server.
        await check_deployment(client, settings.mongodb_startup_timeout_seconds)
        db = client[settings.mongodb_db]
        await ensure_indexes(db)
        yield uri, db
    finally:
        await client.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Db]:
    """Only the database: for command-line tools such as `agent-tasks keys`, which need no event hub and
    no sweeper running in the background."""
    async with _database(settings) as (_, db):
        yield db


@asynccontextmanager
async def open_resources(
    settings: Settings, listeners: Sequence[CommandListener] = ()
) -> AsyncIterator[AppState]:
    """Everything the app needs, opened in order and closed in reverse (mongod if embedded, client…)."""
    # Who this process is to MongoDB (both clients' appName) and to the other processes (its registration,
    # the event hub's lease): how a survivor finds the transactions this process leaves open if it dies.
    process_id = uuid.uuid4().hex
    instruments.configure(settings.metrics_label_values_max)
    async with _database(settings, listeners, process_id) as (uri, db):
        # The event hub has a client of its own, without the operation timeout: its change stream waits
        # for events indefinitely by design, and its loops retry on failure by themselves; server selection
        # is still bounded. (Cancelling its loops at shutdown once hung `stop()`: a cancellation lost in
        # the driver's `asyncio.wait_for` on Python 3.11; `app.cancellation` now cancels until it takes.)
        hub_client = make_client(
            uri,
            listeners,
            server_selection_timeout_seconds=settings.mongodb_server_selection_timeout_seconds,
            appname=app_name(process_id),
        )
        try:
            async with _services(settings, db, hub_client, process_id) as state:
                yield state
        finally:
            await hub_client.close()


@asynccontextmanager
async def _services(
    settings: Settings, db: Db, hub_client: AsyncMongoClient[dict[str, Any]], process_id: str
) -> AsyncIterator[AppState]:
    """The registration, the event hub, the services and the sweeper over a ready database; stopped in
    reverse."""
    sweeper: ExpirySweeper | None = None
    retention_sweeper: RetentionSweeper | None = None
    hub: EventHub | None = None
    state: AppState | None = None
    presence = Presence(
        db,
        process_id,
        app_name(process_id),
        heartbeat_seconds=settings.process_heartbeat_seconds,
        lapse_seconds=settings.process_lapse_seconds,
    )
    try:
        await presence.start()  # registered before this process's first transaction
        secret = (
            settings.cursor_secret.encode() if settings.cursor_secret else await shared_secret(db, "cursor")
        )
        hub = EventHub(
            hub_client[settings.mongodb_db],
            owner=process_id,
            queue_size=settings.subscription_queue_size,
            queue_bytes=settings.subscription_queue_bytes,
        )
        await hub.start()
        lifecycle = Lifecycle(
            db,
            settle=hub.settle,
            writing=hub.writing,
            max_claim_batch=settings.max_claim_batch,
            partition=presence.partition,
            lease_seconds=settings.lease_seconds,
            lease_bounds=(settings.lease_seconds_min, settings.lease_seconds_max),
            max_payload_bytes=settings.max_payload_bytes,
            max_workflow_tasks=settings.max_workflow_tasks,
            retry_policy=settings.retry_policy(),
            require_lease_holder=settings.require_lease_holder,
            timeouts=settings.timeouts(),
            steering=Steering(
                db,
                refresh_seconds=settings.concurrency_limits_refresh_seconds,
                max_groups=settings.claim_fair_max_groups,
                max_limits=settings.max_concurrency_limits,
            ),
        )
        state = AppState(
            settings=settings,
            store=Store(db, CursorCodec(secret)),
            lifecycle=lifecycle,
            hierarchy=Hierarchy(db, lifecycle),
            hub=hub,
        )
        sweeper = ExpirySweeper(state.lifecycle, settings.expiry_sweep_seconds)
        sweeper.start()
        state.sweeper = sweeper
        state.retention = Retention(db, lifecycle.clock, settings.retention_batch)
        window = settings.retention_window_seconds
        if window is not None:
            retention_sweeper = RetentionSweeper(
                state.retention, window, settings.retention_sweep_seconds, owner=process_id
            )
            retention_sweeper.start()
            state.retention_sweeper = retention_sweeper
        yield state
    finally:
        if state is not None:
            for task in list(state.background):
                task.cancel()
        if sweeper is not None:  # stopped before the client closes: it may be mid-transaction
            await sweeper.stop()
        if retention_sweeper is not None:
            await retention_sweeper.stop()
        if hub is not None:
            await hub.stop()
        await presence.stop()
