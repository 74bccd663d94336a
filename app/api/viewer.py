"""Who is calling: `viewer { kind scopes agents }`, the caller's own access, read from `info.context`.

A client (the monitor page, a script) asks this instead of probing with a refused operation. The field
needs no scope (as introspection does: `app.auth.scopes`), so an anonymous caller of a server that
requires keys learns that it may do nothing yet; it reveals only what the caller already holds, never
an id, a name or a secret, and reads nothing from the database.
"""

from __future__ import annotations

from enum import StrEnum

import strawberry

from app.domain import Scope
from app.principal import Principal


@strawberry.enum(name="CallerKind", description="How the caller of a request was identified.")
class CallerKind(StrEnum):
    KEY = "key"
    JWT = "jwt"
    ANONYMOUS = "anonymous"
    SYSTEM = "system"


@strawberry.type(description="The caller of this request and what it may do.")
class Viewer:
    kind: CallerKind = strawberry.field(
        description="An API key, a token (JWT), or anonymous (no credentials; on an open server it may do"
        " everything)."
    )
    scopes: list[Scope] = strawberry.field(
        description="What it may do: every root field needs one of these (docs/ACCESS.md, 'Scopes')."
    )
    agents: list[str] | None = strawberry.field(
        description="The agents whose tasks it may claim, transition, create and change; null: any agent."
    )


def viewer_of(principal: Principal) -> Viewer:
    order = list(Scope)
    return Viewer(
        kind=CallerKind(principal.kind),
        scopes=sorted(principal.scopes, key=order.index),
        agents=None if principal.agents is None else sorted(principal.agents),
    )


@strawberry.type
class ViewerQuery:
    @strawberry.field(description="The caller of this request and its scopes (needs no scope).")
    def viewer(self, info: strawberry.Info) -> Viewer:
        return viewer_of(info.context.principal)
