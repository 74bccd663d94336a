"""JWTs from an OIDC provider, so a browser app with its own login can call the API directly.

`JwtVerifier` checks a bearer token that is not an API key: its signature (a key from the issuer's JWKS,
`JWT_JWKS_URL`, or one static public key, `JWT_PUBLIC_KEY`), issuer, audience, expiry and not-before
(with `JWT_LEEWAY_SECONDS` of clock skew), and only the asymmetric algorithms of `JWT_ALGORITHMS` (never
`none`, never an HMAC keyed with a public key). The caller is `Principal(kind="jwt", id=<sub>)`, named by
its `name`, `preferred_username` or `email` claim, with the scopes found in `JWT_SCOPES_CLAIM` (a
space-separated string or a list; a dotted path reaches nested claims such as `realm_access.roles`;
values other than `read`, `write`, `admin`, after `JWT_SCOPE_PREFIX`, are ignored) and, when
`JWT_AGENTS_CLAIM` is set, bound to the agents it lists.

The JWKS is fetched with httpx (PyJWT's own client is synchronous), kept `JWT_JWKS_CACHE_SECONDS`, and
fetched again for an unknown `kid` at most once per `JWT_JWKS_REFETCH_SECONDS`, so tokens with made-up
key ids cannot make the server hammer the provider. A JWKS that cannot be fetched refuses the token (401,
saying so) and logs a WARNING: the caller cannot be verified, whatever the cause.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt.algorithms import get_default_algorithms

from app.domain import Scope
from app.principal import AuthenticationError, Principal
from app.settings import Settings

logger = logging.getLogger("agent_tasks.auth")


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


class JwtVerifier:
    """Token → Principal (see the module docstring); made once per application from its settings."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.algorithms = list(settings.jwt_algorithms)
        self.http = http
        self._keys: dict[str | None, Any] = {}
        self._fetched_at = -1e9
        self._static: Any = None
        if settings.jwt_public_key:
            pem = settings.jwt_public_key
            if not pem.lstrip().startswith("-----BEGIN"):
                pem = Path(pem).read_text(encoding="utf-8")
            algorithm = get_default_algorithms()[self.algorithms[0]]
            self._static = algorithm.prepare_key(pem)

    async def __call__(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("malformed token: not an API key (`atk_…`) nor a JWT") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthenticationError(
                f"token algorithm {alg!r} is not accepted (JWT_ALGORITHMS: {', '.join(self.algorithms)})"
            )
        key = await self._key(header.get("kid"))
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway=settings.jwt_leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError(f"token expired at {self._exp(token)}") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("token is not valid yet (nbf / iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(f"token audience is not {settings.jwt_audience!r}") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(f"token issuer is not {settings.jwt_issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("token signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"token has no `{exc.claim}` claim") from None
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid token: {exc}") from None
        prefix = settings.jwt_scope_prefix
        values = _strings(_claim(claims, settings.jwt_scopes_claim))
        wanted = {v.removeprefix(prefix) for v in values if v.startswith(prefix)}
        scopes = frozenset(s for s in Scope if s.value in wanted)
        agents = None
        if settings.jwt_agents_claim:
            agents = frozenset(_strings(_claim(claims, settings.jwt_agents_claim)))
        name = claims.get("name") or claims.get("preferred_username") or claims.get("email")
        return Principal(
            kind="jwt",
            id=str(claims["sub"]),
            name=None if name is None else str(name),
            scopes=scopes,
            agents=agents,
        )

    @staticmethod
    def _exp(token: str) -> str:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        return dt.datetime.fromtimestamp(float(exp), dt.UTC).isoformat() if exp is not None else "?"

    async def _key(self, kid: str | None) -> Any:
        if self._static is not None:
            return self._static
        now = time.monotonic()
        stale = now - self._fetched_at > self.settings.jwt_jwks_cache_seconds
        unknown = kid not in self._keys and now - self._fetched_at > self.settings.jwt_jwks_refetch_seconds
        if stale or unknown:
            await self._fetch()
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise AuthenticationError(f"token key id {kid!r} is not in the issuer's keys (JWT_JWKS_URL)")

    async def _fetch(self) -> None:
        url = self.settings.jwt_jwks_url
        assert url is not None  # the settings require a JWKS URL or a public key
        self._fetched_at = time.monotonic()
        try:
            if self.http is None:
                self.http = httpx.AsyncClient(timeout=self.settings.jwt_jwks_timeout_seconds)
            response = await self.http.get(url)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            logger.warning("JWKS %s could not be fetched: %s", url, exc)
            raise AuthenticationError(
                "the issuer's keys (JWT_JWKS_URL) could not be fetched, so the token cannot be verified:"
                f" {exc}"
            ) from None
        self._keys = {k.key_id: k.key for k in keys.keys}
