"""What the lifespan opens once and every request shares (`AppState`), and `open_resources`, which opens
it in order and closes it in reverse: the embedded mongod (when no `MONGODB_URI` is set), the client, the
collections and indexes, the event hub and the expiry sweeper.

The GraphQL and REST layers both reach the services through `AppState`; neither imports the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pymongo.monitoring import CommandListener

from app.lifecycle.expiry import ExpirySweeper
from app.lifecycle.hierarchy import Hierarchy
from app.lifecycle.transitions import Lifecycle
from app.live.hub import EventHub
from app.mongo.client import make_client
from app.mongo.embedded import EmbeddedMongod
from app.settings import Settings
from app.store.config import shared_secret
from app.store.cursors import CursorCodec
from app.store.indexes import ensure_indexes
from app.store.repository import Store


@dataclass
class AppState:
    """What the lifespan creates once and every request shares."""

    settings: Settings
    store: Store
    lifecycle: Lifecycle
    hierarchy: Hierarchy
    hub: EventHub
    extras: dict[str, Any] = field(default_factory=dict)


@asynccontextmanager
async def open_resources(
    settings: Settings, listeners: Sequence[CommandListener] = ()
) -> AsyncIterator[AppState]:
    """Everything the app needs, opened in order and closed in reverse (mongod if embedded, client…)."""
    embedded: EmbeddedMongod | None = None
    uri = settings.mongodb_uri
    if uri is None:
        embedded = EmbeddedMongod(settings.data_dir, settings.embedded_mongo_port)
        uri = await asyncio.to_thread(embedded.start)
    client = make_client(uri, listeners)
    sweeper: ExpirySweeper | None = None
    hub: EventHub | None = None
    try:
        db = client[settings.mongodb_db]
        await ensure_indexes(db)
        secret = (
            settings.cursor_secret.encode() if settings.cursor_secret else await shared_secret(db, "cursor")
        )
        hub = EventHub(
            db,
            queue_size=settings.subscription_queue_size,
            orphan_grace_seconds=settings.event_orphan_grace_seconds,
            settle_seconds=settings.event_settle_seconds,
        )
        await hub.start()
        lifecycle = Lifecycle(db, settle=hub.settle, claim_spread=settings.claim_spread)
        state = AppState(
            settings=settings,
            store=Store(db, CursorCodec(secret)),
            lifecycle=lifecycle,
            hierarchy=Hierarchy(db, lifecycle),
            hub=hub,
        )
        sweeper = ExpirySweeper(state.lifecycle, settings.expiry_sweep_seconds)
        sweeper.start()
        if settings.load_demo:
            from app.demo import load_demo

            await load_demo(db, events=True, settle=hub.settle)
        yield state
    finally:
        if sweeper is not None:  # stopped before the client closes: it may be mid-transaction
            await sweeper.stop()
        if hub is not None:
            await hub.stop()
        await client.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
