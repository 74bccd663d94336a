"""Test fixtures: one real mongod per session (a one-node replica set), a fresh database per test, and
the app running with its lifespan behind an httpx client. No mocks of the database or the driver."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from app.mongo.embedded import EmbeddedMongod, EmbeddedMongoError
from app.settings import Settings
from app.store.types import BACKGROUND
from tests.support.inprocess import in_process
from tests.support.servers import ServerGroup, ServerProcess

ROOT = Path(__file__).resolve().parent.parent


class CommandLog(CommandListener):
    """Records the MongoDB commands sent to one database (command monitoring, not a fake).

    The app's own change stream (the event hub's `aggregate` with `$changeStream` and its getMores) and
    the commands it sends on its own (marked with the BACKGROUND comment: sweeps, stamps, leases) are
    left out: they run on their own schedule, whatever request is being measured.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.commands: list[tuple[str, str]] = []
        self.active = True
        self._stream_requests: set[int] = set()
        self._stream_cursors: set[int] = set()

    def started(self, event: CommandStartedEvent) -> None:
        if not self.active or event.database_name != self.database:
            return
        name = event.command_name
        if event.command.get("comment") == BACKGROUND:  # the server's own sweeps, stamps and leases
            return
        if name == "aggregate" and any(
            "$changeStream" in stage for stage in event.command.get("pipeline", [])
        ):
            self._stream_requests.add(event.request_id)
            return
        if name == "getMore" and event.command.get("getMore") in self._stream_cursors:
            return
        # getMore names its cursor id first; its collection is what tells where it went.
        target = event.command.get("collection") if name == "getMore" else event.command.get(name, "")
        self.commands.append((name, str(target)))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        if event.request_id in self._stream_requests:
            self._stream_cursors.add(event.reply.get("cursor", {}).get("id"))

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def clear(self) -> None:
        self.commands.clear()

    def reads(self) -> list[tuple[str, str]]:
        """(command, collection) of every read, in the order sent."""
        return [c for c in self.commands if c[0] in ("find", "aggregate", "count", "getMore")]


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real mongod for the whole session, started by the same code the server uses.

    Under pytest-xdist each worker is its own session, so each worker has its own mongod.
    """
    # In memory where the machine has a tmpfs: every test creates and drops a database, and each of
    # those writes waits for mongod's journal to reach the disk (the suite ran ~20 % faster this way).
    shm = Path("/dev/shm")
    in_memory = shm.is_dir() and os.access(shm, os.W_OK)
    if in_memory:
        data_dir = Path(tempfile.mkdtemp(prefix="agent-tasks-test-mongod-", dir=shm))
    else:
        data_dir = tmp_path_factory.mktemp("mongod")
    try:
        for attempt in range(3):
            mongod = EmbeddedMongod(data_dir, port=0)
            try:
                uri = mongod.start()
                break
            except EmbeddedMongoError as exc:
                # The free port picked can be taken (by another worker) before mongod binds it: again.
                if "already in use" not in str(exc) or attempt == 2:
                    raise
        yield uri
        mongod.stop()
    finally:
        if in_memory:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def module_servers(mongo_uri: str) -> Iterator[ServerGroup]:
    """Real server processes shared by the tests of one module (`module_servers.start(prefix, env)` in a
    module-scoped fixture), stopped and their databases dropped after the module's last test."""
    group = ServerGroup(mongo_uri)
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="module")
def plain_server(module_servers: ServerGroup) -> ServerProcess:
    """A server process with the default settings, on a database of its own."""
    return module_servers.start("http")


@pytest.fixture
def settings(mongo_uri: str) -> Settings:
    """Settings for a fresh database; the environment and any .env file are ignored."""
    return Settings(_env_file=None, mongodb_uri=mongo_uri, mongodb_db=f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Any]:
    """A direct handle on the test's database, to check what was stored; dropped afterwards."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    yield client[settings.mongodb_db]
    await client.drop_database(settings.mongodb_db)
    await client.close()


@pytest.fixture
def command_log(settings: Settings) -> CommandLog:
    return CommandLog(settings.mongodb_db)


@pytest.fixture
async def client(settings: Settings, command_log: CommandLog, db: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app, with the app's lifespan running (indexes created, client open)."""
    async with in_process(settings, listeners=[command_log]) as http:
        yield http


class GraphQLClient:
    """Posts GraphQL over HTTP and returns the decoded answer."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        response = await self.http.post("/graphql", json={"query": query, "variables": variables or {}, **kw})
        assert response.status_code == 200, response.text
        return response.json()

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of an answer that must have no errors."""
        body = await self(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def error(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The single error of an answer that must fail."""
        body = await self(query, variables)
        assert body.get("errors"), body
        return body["errors"][0]


@pytest.fixture
def gql(client: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(client)


def read_query(name: str) -> str:
    return (ROOT / "queries" / name).read_text(encoding="utf-8")
