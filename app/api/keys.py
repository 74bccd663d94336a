"""API key management over GraphQL (admin scope: app/auth/scopes.py): `apiKeys`, `createApiKey`,
`revokeApiKey`. Thin over `app.auth.keys.KeyService`, as the `agent-tasks keys` commands are.

The secret is in `createApiKey`'s answer only; no field ever returns it or its hash again.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import strawberry

from app.api.results import NotFoundError, ValidationError
from app.auth.keys import ApiKey, KeyService
from app.auth.middleware import authenticator
from app.domain import MAX_ID_LENGTH, SCOPE_DESCRIPTIONS, Scope, as_utc, utcnow

strawberry.enum(
    Scope,
    name="AccessScope",
    description="What a caller may do: "
    + "; ".join(f"{s.value}: {d}" for s, d in SCOPE_DESCRIPTIONS.items()),
)


@strawberry.type(name="ApiKey", description="An API key as stored (never its secret or its hash).")
class ApiKeyType:
    id: strawberry.ID = strawberry.field(
        description="The key's public id (in its secret, and in `actor.id`)."
    )
    name: str = strawberry.field(description="What the key is for.")
    scopes: list[Scope] = strawberry.field(description="What it may do.")
    agents: list[str] | None = strawberry.field(
        description="The agents it may claim and transition tasks for; null: any agent."
    )
    created_at: dt.datetime = strawberry.field(description="When it was created.")
    expires_at: dt.datetime | None = strawberry.field(description="When it stops working; null: never.")
    revoked_at: dt.datetime | None = strawberry.field(description="When it was revoked; null: it was not.")
    last_used_at: dt.datetime | None = strawberry.field(
        description="When it last authenticated a request (updated at most once a minute)."
    )
    active: bool = strawberry.field(description="Neither revoked nor expired.")


def key_type(key: ApiKey) -> ApiKeyType:
    now = utcnow()
    return ApiKeyType(
        id=strawberry.ID(key.id),
        name=key.name,
        scopes=list(key.scopes),
        agents=None if key.agents is None else list(key.agents),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
        active=key.revoked_at is None and (key.expires_at is None or key.expires_at > now),
    )


@strawberry.input(description="A new API key.")
class CreateApiKeyInput:
    name: str = strawberry.field(description="What the key is for (1–200 characters).")
    scopes: list[Scope] = strawberry.field(description="What it may do (at least one).")
    agents: list[str] | None = strawberry.field(
        default=None, description="Bind it to these agents (claims and transitions); null: any agent."
    )
    expires_at: dt.datetime | None = strawberry.field(
        default=None, description="When it stops working (in the future); null: never."
    )


@strawberry.type(description="The key was created. Its `secret` is shown here once and never again.")
class CreateApiKeySuccess:
    key: ApiKeyType = strawberry.field(description="The stored key.")
    secret: str = strawberry.field(description="Send it as `Authorization: Bearer <secret>`. Keep it safe.")


@strawberry.type(description="The key was revoked (or had been): it authenticates nothing any more.")
class RevokeApiKeySuccess:
    key: ApiKeyType = strawberry.field(description="The revoked key.")


CreateApiKeyResult = Annotated[
    CreateApiKeySuccess | ValidationError,
    strawberry.union("CreateApiKeyResult", description="Outcome of createApiKey."),
]
RevokeApiKeyResult = Annotated[
    RevokeApiKeySuccess | NotFoundError,
    strawberry.union("RevokeApiKeyResult", description="Outcome of revokeApiKey."),
]


def _keys(info: strawberry.Info) -> KeyService:
    """The process's key service: a key revoked through it is refused at once on this process's open
    WebSockets too (`KeyService.active`)."""
    return authenticator(info.context.app).keys


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(message=message, field=field)


@strawberry.type
class KeyQuery:
    @strawberry.field(description="Every API key, newest first (admin).")
    async def api_keys(self, info: strawberry.Info) -> list[ApiKeyType]:
        return [key_type(key) for key in await _keys(info).list()]


@strawberry.type
class KeyMutation:
    @strawberry.mutation(description="Create an API key (admin); the answer holds its secret, once.")
    async def create_api_key(self, info: strawberry.Info, input: CreateApiKeyInput) -> CreateApiKeyResult:
        name = input.name.strip()
        if not 1 <= len(name) <= MAX_ID_LENGTH:
            return _invalid("input.name", f"name must be 1 to {MAX_ID_LENGTH} characters")
        if not input.scopes:
            return _invalid("input.scopes", "a key needs at least one scope")
        agents = input.agents
        if agents is not None and (not agents or any(not a.strip() for a in agents)):
            return _invalid("input.agents", "agents must be non-empty names (null: any agent)")
        expires_at = as_utc(input.expires_at) if input.expires_at is not None else None
        if expires_at is not None and expires_at <= utcnow():
            return _invalid("input.expiresAt", "expiresAt must be in the future")
        key, secret = await _keys(info).create(name, input.scopes, agents, expires_at)
        return CreateApiKeySuccess(key=key_type(key), secret=secret)

    @strawberry.mutation(description="Revoke an API key (admin); open subscriptions made with it end.")
    async def revoke_api_key(
        self, info: strawberry.Info, id: Annotated[strawberry.ID, strawberry.argument(description="Key id.")]
    ) -> RevokeApiKeyResult:
        key = await _keys(info).revoke(str(id))
        if key is None:
            return NotFoundError(message=f"no API key with id '{id}'", id=id)
        return RevokeApiKeySuccess(key=key_type(key))
