"""JWTs (issue 13 part 4): tokens signed here with keys made here, the issuer's JWKS served from a local
HTTP server, checked by the verifier and through the whole app."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.auth.jwt import JwtVerifier
from app.domain import Scope
from app.principal import AuthenticationError
from app.server import create_app
from app.settings import Settings

ISSUER = "https://login.example.test/"
AUDIENCE = "agent-tasks"


class Issuer:
    """An OIDC provider's signing side: RSA and EC keys, a JWKS served on 127.0.0.1, tokens."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }

    def token(self, key: Any = None, kid: str = "rsa-1", alg: str = "RS256", **claims: Any) -> str:
        now = dt.datetime.now(dt.UTC)
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-7",
            "iat": now,
            "exp": now + dt.timedelta(minutes=5),
        }
        body.update(claims)
        return jwt.encode(
            {k: v for k, v in body.items() if v is not None}, key or self.rsa, alg, headers={"kid": kid}
        )


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    made = Issuer()
    yield made
    made.server.shutdown()


def jwt_settings(settings: Settings, issuer: Issuer, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "jwt_jwks_url": issuer.url,
            "jwt_jwks_refetch_seconds": 3600,
            **extra,
        }
    )


async def test_a_valid_token_is_a_principal_with_its_scopes(settings: Settings, issuer: Issuer) -> None:
    verify = JwtVerifier(jwt_settings(settings, issuer, jwt_agents_claim="agents"))
    principal = await verify(issuer.token(scope="read write openid", name="Ada", agents=["A"]))
    assert (principal.kind, principal.id, principal.name) == ("jwt", "user-7", "Ada")
    assert principal.scopes == {Scope.READ, Scope.WRITE} and principal.agents == {"A"}
    ec_token = issuer.token(key=issuer.ec, kid="ec-1", alg="ES256", scope=["admin"])
    assert (await verify(ec_token)).scopes == {Scope.ADMIN}
    # A nested claim and a prefix, as Keycloak-style roles would have them.
    nested = JwtVerifier(
        jwt_settings(settings, issuer, jwt_scopes_claim="realm_access.roles", jwt_scope_prefix="tasks:")
    )
    roles = {"roles": ["tasks:read", "read", "tasks:admin", "offline"]}
    assert (await nested(issuer.token(realm_access=roles))).scopes == {Scope.READ, Scope.ADMIN}


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "token expired at 2020-01-01T00:00:00+00:00"),
        ({"nbf": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}, "token is not valid yet"),
        ({"aud": "someone-else"}, "token audience is not 'agent-tasks'"),
        ({"iss": "https://evil.example/"}, "token issuer is not 'https://login.example.test/'"),
        ({"sub": None}, "token has no `sub` claim"),
    ],
)
async def test_claims_that_do_not_hold_are_refused(
    settings: Settings, issuer: Issuer, claims: dict[str, Any], message: str
) -> None:
    verify = JwtVerifier(jwt_settings(settings, issuer))
    with pytest.raises(AuthenticationError) as refused:
        await verify(issuer.token(**claims))
    assert refused.value.message.startswith(message)


async def test_wrong_keys_and_algorithms_are_refused(settings: Settings, issuer: Issuer) -> None:
    verify = JwtVerifier(jwt_settings(settings, issuer))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthenticationError, match="token signature does not verify"):
        await verify(issuer.token(key=stranger))  # same kid, another key
    with pytest.raises(AuthenticationError, match="algorithm 'HS256' is not accepted"):
        await verify(
            jwt.encode(
                {"sub": "x"}, "a-secret-shared-with-nobody-at-all-32b", "HS256", headers={"kid": "rsa-1"}
            )
        )
    unsigned = jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE}, None, "none")
    with pytest.raises(AuthenticationError, match="algorithm 'none' is not accepted"):
        await verify(unsigned)
    with pytest.raises(AuthenticationError, match="malformed token"):
        await verify("not-a-token")


async def test_an_unknown_key_id_fetches_the_jwks_at_most_once_per_period(
    settings: Settings, issuer: Issuer
) -> None:
    verify = JwtVerifier(jwt_settings(settings, issuer))
    await verify(issuer.token())
    before = issuer.fetches
    for _ in range(20):
        with pytest.raises(AuthenticationError, match="key id 'made-up' is not in the issuer's keys"):
            await verify(issuer.token(kid="made-up"))
    assert issuer.fetches == before  # fetched a moment ago: no new fetch within JWT_JWKS_REFETCH_SECONDS
    eager = JwtVerifier(jwt_settings(settings, issuer, jwt_jwks_refetch_seconds=0))
    await eager(issuer.token())
    with pytest.raises(AuthenticationError):
        await eager(issuer.token(kid="made-up"))
    assert issuer.fetches == before + 2  # its first fetch, and one more for the unknown kid


async def test_an_unreachable_jwks_refuses_with_a_reason(settings: Settings, issuer: Issuer) -> None:
    verify = JwtVerifier(jwt_settings(settings, issuer, jwt_jwks_url="http://127.0.0.1:9/jwks.json"))
    with pytest.raises(AuthenticationError, match=r"issuer's keys .* could not be fetched"):
        await verify(issuer.token())


def test_settings_need_an_audience_and_one_key_source() -> None:
    with pytest.raises(ValueError, match="set JWT_AUDIENCE too"):
        Settings(_env_file=None, jwt_issuer=ISSUER, jwt_jwks_url="http://x")
    with pytest.raises(ValueError, match="exactly one of JWT_JWKS_URL and JWT_PUBLIC_KEY"):
        Settings(_env_file=None, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)


@pytest.fixture
async def app_http(settings: Settings, issuer: Issuer, db: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(jwt_settings(settings, issuer, auth_mode="keys"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        yield http


async def test_tokens_through_the_app(app_http: httpx.AsyncClient, issuer: Issuer, db: Any) -> None:
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    create = {"query": 'mutation { r: createAgentTask(input: {id: "j1"}) { __typename } }'}
    reader = bearer(issuer.token(scope="read"))
    read = await app_http.post(
        "/graphql", json={"query": '{ agentTask(id: "j1") { taskId } }'}, headers=reader
    )
    assert read.json() == {"data": {"agentTask": None}}
    refused = (await app_http.post("/graphql", json=create, headers=reader)).json()
    assert refused["errors"][0]["extensions"] == {"code": "FORBIDDEN", "requiredScope": "write"}
    assert "token subject user-7 has: read" in refused["errors"][0]["message"]

    writer = bearer(issuer.token(scope="write", sub="svc-9", preferred_username="ingest"))
    made = (await app_http.post("/graphql", json=create, headers=writer)).json()
    assert made == {"data": {"r": {"__typename": "AgentTaskSuccess"}}}
    event = await db.task_events.find_one({"task_id": "j1"})
    assert event["actor"] == {"kind": "jwt", "id": "svc-9", "name": "ingest"}

    expired = bearer(issuer.token(exp=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
    answer = await app_http.get("/agent-tasks/j1", headers=expired)
    assert answer.status_code == 401 and answer.json()["error"]["message"].startswith("token expired at")
