"""Who is calling: the `Principal` every request acts as, and the context variable that carries it.

The authentication layer (`app/auth`) turns a request's credentials (an API key, a JWT, or none) into a
`Principal` and puts it in two places: on the ASGI scope (`scope["state"]["principal"]`, Starlette's
`request.state.principal`) for the HTTP layers, and in `current_principal` for the code below them. The
services read `current_principal` to enforce agent-bound keys, and the outbox reads it to record the
actor on every event, so neither needs a principal threaded through every call. Background work (the
expiry sweeper, the demo seeder) runs as a `system` principal. Pure Python: importable from any layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from app.domain import ErrorCode, Scope

PrincipalKind = Literal["key", "jwt", "anonymous", "system"]


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: an API key (`id` the key id, `name` its name), a JWT subject (`id` the `sub` claim),
    anonymous (no credentials), or the server's own background work (`system`, `id` the job).

    `agents` is None when the caller may act for any agent; otherwise the agent names whose tasks it
    may claim, transition, create, change and delete (`app.lifecycle.levels`, "Agent-bound callers")."""

    kind: PrincipalKind
    id: str | None
    name: str | None
    scopes: frozenset[Scope]
    agents: frozenset[str] | None = None

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes

    def may_act_for(self, agent_name: str | None) -> bool:
        """Whether this caller may write a task of `agent_name` (a task with no agent name belongs to no
        bound agent, so an agent-bound caller may not)."""
        return self.agents is None or (agent_name is not None and agent_name in self.agents)

    @property
    def actor(self) -> dict[str, str | None]:
        """How events record this caller (`actor` on every event)."""
        return {"kind": self.kind, "id": self.id, "name": self.name}


#: Anonymous with every scope: the server runs open (`AUTH_MODE=open`, or loopback with `auto`).
OPEN = Principal(kind="anonymous", id=None, name=None, scopes=frozenset(Scope))
#: Anonymous with no scope: what a request without credentials is when the server requires keys.
ANONYMOUS = Principal(kind="anonymous", id=None, name=None, scopes=frozenset())


def system(job: str) -> Principal:
    """The server's own background work (`job` names it: `expiry-sweeper`, `demo`), with every scope."""
    return Principal(kind="system", id=job, name=job, scopes=frozenset(Scope))


#: Who writes when no caller is known: the server's own code called outside a request and a job.
SERVER = system("server")

#: The caller of the request (or background job) being served; None outside of one.
current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Run a block as `principal` (sets `current_principal`, restores it after)."""
    token = current_principal.set(principal)
    try:
        yield
    finally:
        current_principal.reset(token)


class AuthenticationError(Exception):
    """Credentials were presented but are not valid: unknown, malformed, expired or revoked key; a token
    with a bad signature, issuer, audience or expiry. `code` is machine-readable (`UNAUTHENTICATED`);
    the message says what was wrong and never echoes the secret."""

    code = ErrorCode.UNAUTHENTICATED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
