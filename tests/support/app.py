"""The app in-process, its lifespan running, behind an httpx client (no network): what the in-process
fixture of conftest.py (`client`) does, with a sweeper of a chosen pace or the demo loaded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from app.demo.workflow import load_into
from app.server import create_app
from app.settings import Settings
from tests.conftest import GraphQLClient


@asynccontextmanager
async def serving(settings: Settings, sweep_seconds: float | None) -> AsyncIterator[GraphQLClient]:
    """The app with its lifespan running (so its own sweeper), sweeping every `sweep_seconds`; with None,
    the sweeper is stopped before the first request (not just slowed: its first sweep runs at start-up as
    a background task, which could otherwise land after a test's insert)."""
    app = create_app(settings.model_copy(update={"expiry_sweep_seconds": sweep_seconds or 3600}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        if sweep_seconds is None:
            sweeper = app.state.agent_tasks.sweeper
            assert sweeper is not None
            await sweeper.stop()
        yield GraphQLClient(http)


@asynccontextmanager
async def demo_server(settings: Settings) -> AsyncIterator[GraphQLClient]:
    """The app, its lifespan running, with the demo loaded into its resources before the first request,
    as `serve --demo` (`make run`) loads it."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        await load_into(app.state.agent_tasks)
        yield GraphQLClient(http)
