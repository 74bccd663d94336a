"""The app in-process behind an httpx client: its lifespan running, no network, JSON by default.

One place for what several modules' fixtures did line for line: build the app from the test's settings
with a few overridden, run its lifespan, and talk to it over `httpx.ASGITransport`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pymongo.monitoring import CommandListener

from app.server import create_app
from app.settings import Settings


@asynccontextmanager
async def in_process(
    settings: Settings, *, listeners: Sequence[CommandListener] = (), sweeping: bool = True, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on `settings` with `overrides` (field names) applied, MongoDB command `listeners` attached;
    without `sweeping`, its expiry sweeper is stopped before the first request (nothing writes by itself).

    REST takes POST, PUT and PATCH only as JSON, with a body or without (CSRF): requests are sent as JSON
    unless a test says otherwise."""
    app = create_app(settings.model_copy(update=overrides), mongo_listeners=list(listeners))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://localhost",
            headers={"Content-Type": "application/json"},
        ) as http,
    ):
        if not sweeping:
            sweeper = app.state.agent_tasks.sweeper
            assert sweeper is not None
            await sweeper.stop()
        yield http
