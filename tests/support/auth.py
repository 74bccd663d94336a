"""API keys for tests that call the app as a key holder would."""

from __future__ import annotations

from typing import Any

from app.auth.keys import KeyService
from app.domain import Scope


async def bearer(db: Any, *scopes: Scope, agents: list[str] | None = None) -> dict[str, str]:
    _, secret = await KeyService(db).create("-".join(s.value for s in scopes) or "none", list(scopes), agents)
    return {"Authorization": f"Bearer {secret}"}
