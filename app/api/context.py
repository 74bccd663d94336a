"""The per-request GraphQL context: the request, the shared application state and fresh loaders."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from app.api.loaders import Loaders
from app.resources import AppState
from app.settings import Settings
from app.store.repository import Store


@dataclass
class Context:
    """Strawberry's `info.context`: one per HTTP request (or per subscription event, for loaders)."""

    app: AppState
    request: Request | WebSocket | None = None
    response: Response | WebSocket | None = None
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders.create(self.app.store)

    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def settings(self) -> Settings:
        return self.app.settings
