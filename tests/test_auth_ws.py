"""API keys on WebSockets (issue 13): credentials in `connection_init`, on both protocols, real server."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from app.auth.keys import KeyService
from app.domain import Scope
from app.settings import Settings
from tests.servers import serve
from tests.wsclient import GraphQLWebSocket


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_connection_init_credentials(settings: Settings, db: Any, protocol: str) -> None:
    _, secret = await KeyService(db).create("ws", [Scope.READ])
    env = {"MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db, "AUTH_MODE": "keys"}
    with serve(env) as server:
        for payload in ({"Authorization": f"Bearer {secret}"}, {"authorization": f"Bearer {secret}"}):
            ws = await GraphQLWebSocket.open(server.url, protocol=protocol, init=False)
            await ws.send({"type": "connection_init", "payload": payload})
            assert (await ws.receive())["type"] == "connection_ack"
            await ws.ws.close()
        ws = await GraphQLWebSocket.open(server.url, protocol=protocol, init=False)
        await ws.send({"type": "connection_init", "payload": {"apiKey": "atk_0123456789ab_wrong"}})
        if protocol == "graphql-ws":
            refused = await ws.receive()
            assert refused == {
                "type": "connection_error",
                "payload": {"message": "unknown API key", "code": "UNAUTHENTICATED"},
            }
        else:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.receive()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
