"""The Python client with API keys (issue 13) against a real server that requires them: `api_key=` is
sent, and refusals arrive as typed exceptions (`Unauthorized`, `Forbidden`) with nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from agent_tasks_client import AgentTasksClient, Forbidden, Unauthorized
from app.auth.keys import KeyService
from app.domain import Scope
from app.settings import Settings
from tests.support.servers import serve


async def test_api_keys_scopes_and_agent_binding_through_the_client(settings: Settings, db: Any) -> None:
    keys = KeyService(db)
    _, full = await keys.create("full", [Scope.READ, Scope.WRITE])
    _, reader = await keys.create("reader", [Scope.READ])
    _, bound = await keys.create("bound", [Scope.READ, Scope.WRITE], agents=["A"])
    env = {"MONGODB_URI": settings.mongodb_uri or "", "MONGODB_DB": settings.mongodb_db, "AUTH_MODE": "keys"}
    with serve(env) as server:
        async with AgentTasksClient(server.url, timeout=30) as anonymous:
            with pytest.raises(Unauthorized) as missing:
                await anonymous.get_task("x")
            assert missing.value.status_code == 200 and "requires credentials" in missing.value.message
        async with AgentTasksClient(server.url, api_key="atk_000000000000_nope", timeout=30) as wrong:
            with pytest.raises(Unauthorized) as unknown:
                await wrong.get_task("x")
            assert unknown.value.status_code == 401 and unknown.value.message == "unknown API key"
        async with AgentTasksClient(server.url, api_key=full, timeout=30) as client:
            theirs = await client.create_agent_task("B", id="theirs")
            assert theirs.agent_name == "B"
        async with AgentTasksClient(server.url, api_key=reader, timeout=30) as client:
            assert (await client.get_task("theirs")) is not None
            with pytest.raises(Forbidden) as scope:
                await client.create_agent_task("B", id="new")
            assert scope.value.required_scope == "write"
        async with AgentTasksClient(server.url, api_key=bound, timeout=30) as client:
            with pytest.raises(Forbidden) as agent:
                await client.start("theirs")
            # The client selects only `message` of it (so it still works with servers from before it).
            assert "belongs to agent 'B'" in agent.value.message and agent.value.required_scope is None
    assert await db.agent_task_states.count_documents({}) == 1
    assert (await db.agent_task_states.find_one({"_id": "theirs"}))["status"] == "pending"
