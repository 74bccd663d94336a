"""The per-request GraphQL context: the request, the shared application state and fresh loaders."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from graphql import ExecutionResult, GraphQLError
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.api.loaders import Loaders
from app.principal import OPEN, Principal, current_principal
from app.resources import AppState
from app.settings import Settings
from app.store.failures import require_database
from app.store.repository import Store


@dataclass
class Context:
    """Strawberry's `info.context`: one per HTTP request or WebSocket operation (`ContextPerOperation`);
    subscriptions also renew its loaders for every event."""

    app: AppState
    request: Request | WebSocket | None = None
    response: Response | WebSocket | None = None
    loaders: Loaders = field(init=False)
    #: The caller (app/auth): from the request's state over HTTP, from `connection_init` on a WebSocket.
    principal: Principal = OPEN
    #: A WebSocket's `connection_init` payload (Strawberry sets it; credentials are read from it).
    connection_params: dict[str, object] | None = None

    def __post_init__(self) -> None:
        self.loaders = Loaders.create(self.app.store)

    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def settings(self) -> Settings:
        return self.app.settings


class ContextPerOperation(SchemaExtension):
    """A fresh context for every operation sent over a WebSocket.

    Strawberry builds a WebSocket connection's context once, when the socket opens, and hands it to every
    operation sent over it (queries and mutations as well as subscriptions, on both protocols): its
    loaders would be a cache as old as the socket, so a query after a mutation on the same socket read
    what the first query had loaded. Each operation gets a copy of it with new loaders instead (the
    request and the application state are shared). An HTTP request's context is its own already."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context) and isinstance(context.request, WebSocket):
            self.execution_context.context = dataclasses.replace(context)  # `__post_init__`: new loaders
        if isinstance(context, Context):
            # The services and the outbox read the caller from here (HTTP: AuthMiddleware set it already).
            token = current_principal.set(context.principal)
            try:
                yield
            finally:
                with contextlib.suppress(ValueError):  # reset from another context: nothing to undo
                    current_principal.reset(token)
            return
        yield


class DatabaseGate(SchemaExtension):
    """Before a query or mutation runs, make sure MongoDB is reachable (`require_database`): while it is
    down the operation answers DATABASE_UNAVAILABLE within the server selection timeout instead of each
    of its resolvers waiting out MONGODB_TIMEOUT_SECONDS. Subscriptions are left alone: they wait for the
    event hub, which reconnects on its own."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if (
            isinstance(context, Context)
            and self.execution_context.operation_type is not OperationType.SUBSCRIPTION
            and self.execution_context.result is None  # not refused already (scopes)
        ):
            app = context.app
            try:
                await require_database(app.store.db, app.settings.mongodb_server_selection_timeout_seconds)
            except PyMongoError as exc:
                # Set before execution: Strawberry then skips it and answers this (masked into its code).
                error = GraphQLError(str(exc), original_error=exc)
                self.execution_context.result = ExecutionResult(data=None, errors=[error])
        yield
