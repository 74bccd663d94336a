"""A small real WebSocket client for the graphql-transport-ws and legacy graphql-ws protocols (tests only)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class GraphQLWebSocket:
    """One WebSocket connection; `subscribe` starts an operation, `next` reads its results."""

    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.counter = 0

    @classmethod
    async def open(
        cls, base_url: str, protocol: str = "graphql-transport-ws", init: bool = True, **kwargs: Any
    ) -> GraphQLWebSocket:
        ws = await connect(
            base_url.replace("http", "ws", 1) + "/graphql", subprotocols=[protocol], proxy=None, **kwargs
        )
        client = cls(ws, protocol)
        if init:
            await client.send({"type": "connection_init", "payload": {}})
            ack = await client.receive()
            assert ack["type"] == "connection_ack", ack
        return client

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def receive(self, wait: float = 10) -> dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
            if message["type"] not in ("ka", "ping", "pong"):
                return message
            if message["type"] == "ping":
                await self.send({"type": "pong"})

    async def subscribe(
        self, query: str, variables: dict[str, Any] | None = None, operation_name: str | None = None
    ) -> str:
        self.counter += 1
        op_id = str(self.counter)
        kind = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
        payload: dict[str, Any] = {"query": query, "variables": variables or {}}
        if operation_name is not None:
            payload["operationName"] = operation_name
        await self.send({"id": op_id, "type": kind, "payload": payload})
        return op_id

    async def next(self, wait: float = 10) -> dict[str, Any]:
        """The next `data` payload; raises on an error or completion message."""
        message = await self.receive(wait)
        if message["type"] in ("next", "data"):
            payload = message["payload"]
            assert "errors" not in payload, payload
            return payload["data"]
        raise AssertionError(f"expected data, got {message}")

    async def take(self, count: int, wait: float = 10) -> list[dict[str, Any]]:
        return [await self.next(wait) for _ in range(count)]

    async def nothing_within(self, seconds: float) -> bool:
        try:
            message = await self.receive(wait=seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"expected nothing, got {message}")

    async def close(self) -> None:
        await self.ws.close()
