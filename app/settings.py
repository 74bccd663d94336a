"""The one typed settings object, read from the environment (and an optional `.env` file).

Every setting, its environment variable and its default is listed in docs/CONFIGURATION.md, generated
from this class (`app/settings_doc.py`). Nothing here does
I/O at import time: `Settings()` is built by the CLI or by a test and passed down explicitly.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The JWT signature algorithms a server may accept: asymmetric only (an HMAC secret would have to be shared).
JwtAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


def _default_jwt_algorithms() -> list[JwtAlgorithm]:
    return ["RS256", "ES256"]


class Settings(BaseSettings):
    """Server configuration. Environment variables use the field name in upper case."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    mongodb_uri: str | None = Field(
        default=None,
        description="MongoDB connection string (a replica set or Atlas). Unset or empty: start the embedded"
        " mongod.",
    )
    mongodb_startup_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="How long start-up waits for MongoDB (a writable primary) to answer before giving up.",
    )
    mongodb_db: str = Field(default="agent_tasks", description="Database name.")
    mongodb_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Longest one MongoDB operation may take (PyMongo's `timeoutMS`), a transaction with its"
        " retries included; past it the request fails with DATABASE_TIMEOUT (REST 504).",
    )
    mongodb_server_selection_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="How long an operation waits for a usable MongoDB server (`serverSelectionTimeoutMS`);"
        " past it the request fails with DATABASE_UNAVAILABLE (REST 503).",
    )
    readiness_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How long `/readyz` waits for MongoDB to answer a ping before answering 503.",
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Server processes sharing the HTTP port (`serve --workers`); one per core in production"
        " (docs/DEPLOYMENT.md). Each has its own event hub, sweeper and MongoDB clients.",
    )
    data_dir: Path = Field(default=Path(".data"), description="Where the embedded mongod keeps its data.")
    embedded_mongo_port: int = Field(
        default=27117, ge=0, le=65535, description="Port of the embedded mongod (0: pick a free one)."
    )
    shutdown_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="On SIGTERM or Ctrl-C, how long requests still running may take to finish; subscriptions"
        " are ended at once (WebSockets closed with 1001), whatever is left after this is cancelled.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Log level of the server and of uvicorn."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="`json`: one JSON object per line (docs/OBSERVABILITY.md); `text`: `LEVEL logger"
        " [request id]: message`; `auto`: text when standard error is a terminal, JSON otherwise.",
    )
    max_page_size: int = Field(default=100, ge=1, le=10_000, description="Largest `first` a list accepts.")
    default_page_size: int = Field(default=20, ge=1, description="Page size when `first` is not given.")
    max_filter_depth: int = Field(default=6, ge=1, description="Deepest nesting a `filter` may have.")
    max_filter_nodes: int = Field(default=200, ge=1, description="Most keys and values a `filter` may hold.")
    filter_max_time_ms: int = Field(
        default=2000,
        ge=1,
        le=600_000,
        description="MongoDB time (`maxTimeMS`) a query with a client's `filter` may take, page and count"
        " each; past it the request fails with FILTER_TOO_SLOW (REST 400 `filter_too_slow`).",
    )
    cursor_secret: str | None = Field(
        default=None,
        description="Key that signs pagination cursors. Unset: one is generated once and kept in the"
        " database, so every server process on that database shares it.",
    )
    load_demo: bool = Field(
        default=False,
        description="`agent-tasks serve` loads the demo workflow before it listens (`--demo`; `make run`"
        " does).",
    )
    max_query_depth: int = Field(default=12, ge=1, description="Deepest GraphQL selection a query may have.")
    max_query_aliases: int = Field(default=50, ge=1, description="Most aliases one GraphQL document may use.")
    max_query_tokens: int = Field(default=20_000, ge=100, description="Longest GraphQL document, in tokens.")
    graphql_validation_work_max: int = Field(
        default=5_000,
        ge=100,
        description="Most work validating one GraphQL document may take, estimated before validation from its"
        " nodes and the pairs of same-named fields in one selection (a unit is ~100 of graphql-core's"
        " function calls; app/api/document_shape.py); past it the document is refused (QUERY_TOO_COMPLEX).",
    )
    graphql_inline_document_bytes: int = Field(
        default=2048,
        ge=0,
        description="GraphQL documents longer than this (characters) are parsed and validated in a worker"
        " process, one at a time and at most one per client, so the event loop keeps serving others.",
    )
    graphql_prepare_cpu_ms: int = Field(
        default=1000,
        ge=1,
        description="Milliseconds of CPU one client's new GraphQL documents (parsing and validation; a"
        " document seen before costs nothing) may take per GRAPHQL_PREPARE_CPU_WINDOW_SECONDS; past it the"
        " client's new documents are refused with RATE_LIMITED until the window ends.",
    )
    graphql_prepare_cpu_window_seconds: float = Field(
        default=10.0, gt=0, description="The window of GRAPHQL_PREPARE_CPU_MS."
    )
    query_cost_max: int = Field(
        default=100_000,
        ge=1,
        description="Largest estimated GraphQL result (fields × list sizes) an operation may ask for.",
    )
    query_cost_list_size: int = Field(
        default=20, ge=1, description="Items a list with no `first` (e.g. `subTasks`) is assumed to hold."
    )
    query_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a GraphQL query may run before it is cancelled."
    )
    max_list_items: int = Field(
        default=1000, ge=1, description="Most items a list in a GraphQL argument or variable may hold."
    )
    subscription_queue_size: int = Field(
        default=1000,
        ge=1,
        description="Events a subscriber may fall behind before it is disconnected as too slow.",
    )
    subscription_queue_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Bytes (BSON size) of unread events a subscriber may hold before it is disconnected as"
        " too slow; one event is always let in, however large.",
    )
    subscription_replay_max: int = Field(
        default=5000,
        ge=1,
        description="Most stored events a `taskEvents` subscription replays after its `after` cursor (or from"
        " the start); beyond it the subscription is refused, and the history is paged with the"
        " `taskEvents` query instead.",
    )
    max_subscriptions_per_connection: int = Field(
        default=100,
        ge=1,
        description="Operations (subscriptions, and queries and mutations in flight) one WebSocket"
        " connection may hold at once.",
    )
    ws_per_message_deflate: bool = Field(
        default=False,
        description="Compress WebSocket messages (permessage-deflate). Off: its zlib state is about half of"
        " what an idle subscriber costs in memory (~50 KB of ~100 KB), to compress events of a few hundred"
        " bytes.",
    )
    ws_max_connections: int = Field(
        default=5000,
        ge=1,
        description="WebSocket connections and server-sent-event streams one server process holds at once;"
        " one more is refused (WebSocket close code 1013, SSE 503).",
    )
    connection_init_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a WebSocket client has to send `connection_init`."
    )
    process_heartbeat_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often a server process renews its registration (`server_processes`) and looks for"
        " transactions left open by a server process that died; a crashed process's transactions (which hold"
        " the writes its clients retry elsewhere) are aborted within one to two of these.",
    )
    process_lapse_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A server process that has not renewed its registration for this long (its host went"
        " down, or it is cut off from MongoDB) is taken for dead and the transactions it left open are"
        " aborted; at least 3 x PROCESS_HEARTBEAT_SECONDS.",
    )
    max_claim_batch: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Most tasks one claimTasks call may ask for (its `max`); a larger `max` is refused.",
    )
    concurrency_limits_refresh_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="How long a process trusts its copy of which concurrency limits and claim policies"
        " exist: a limit set through another process binds claims here at most this long after (0: every"
        " claim under a limit or a fair policy reads them again). A changed `max` binds the next claim.",
    )
    claim_fair_max_groups: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Most groups (workflows or concurrency keys) with ready work one claim under a limit or"
        " a fair policy looks at, per priority: one index probe each.",
    )
    max_concurrency_limits: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Most concurrency limits (and claim policies, and start rate limits) that may be set;"
        " each process keeps them in memory.",
    )
    expiry_sweep_seconds: float = Field(
        default=5.0,
        ge=0.05,
        description="Seconds between two sweeps that fail the active tasks past their `expires_at` and return"
        " the tasks whose lease ran out to retrying.",
    )
    trace_mongodb_commands: bool = Field(
        default=True,
        description="With tracing on (the OTEL_* variables, docs/TRACING.md), a span per MongoDB command of a"
        " traced request; false keeps the request and GraphQL-operation spans only (cheaper: a write sends"
        " four or five commands).",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        le=36500,
        description="Remove finished workflows and standalone tasks (with their outputs, states and events)"
        " this many days after they last finished; unset: keep them forever. Or RETENTION_SECONDS, not both."
        " docs/RETENTION.md.",
    )
    retention_seconds: float | None = Field(
        default=None,
        gt=0,
        le=36500 * 86400,
        description="RETENTION_DAYS in seconds (for short windows); unset: keep finished work forever.",
    )
    retention_sweep_seconds: float = Field(
        default=60.0,
        ge=0.05,
        le=86400,
        description="Seconds between two retention sweeps (only with RETENTION_DAYS or RETENTION_SECONDS);"
        " one process at a time sweeps, under a lease in `server_config`.",
    )
    retention_batch: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Finished workflows or standalone tasks a retention sweep reads per page; each is removed"
        " in a transaction of its own, and the sweeper renews its lease between pages.",
    )
    purge_max_tasks: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Most workflows and standalone tasks one `purgeTasks` call looks at (removes or counts);"
        " the answer's `more` says whether the filter matched more.",
    )
    lease_seconds: int = Field(
        default=60,
        ge=1,
        description="Lease a claimTask or startTask takes when it names no `leaseSeconds`: unless a"
        " heartbeatTask extends it, the task returns to retrying this long after it started.",
    )
    lease_seconds_min: int = Field(default=1, ge=1, description="Shortest lease a client may ask for.")
    lease_seconds_max: int = Field(default=3600, ge=1, description="Longest lease a client may ask for.")
    require_lease_holder: bool = Field(
        default=True,
        description="Fencing by default: a heartbeat, progress report, completion or failure of a leased task"
        " that carries no `attempt` token must come from the lease holder (`workerId`, else the agent's"
        " name), or it is refused with LeaseLostError. `false` restores the old rule (only a given token is"
        " checked), for clients that claim with a `workerId` and then write without one.",
    )
    retry_initial_interval_seconds: float = Field(
        default=0.0,
        ge=0,
        le=365 * 24 * 3600,
        description="Default retry policy (a task's `retryPolicy` overrides each field): the delay before the"
        " second attempt. 0 (the default): a failed attempt is claimable again at once, as before retry"
        " policies (docs/STEERING.md).",
    )
    retry_backoff_coefficient: float = Field(
        default=2.0,
        ge=1,
        le=100,
        description="Default retry policy: each delay is this times the one before.",
    )
    retry_maximum_interval_seconds: float = Field(
        default=0.0,
        ge=0,
        le=365 * 24 * 3600,
        description="Default retry policy: the longest delay between two attempts; 0: 100 times the initial"
        " interval.",
    )
    retry_jitter: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Default retry policy: each delay is spread uniformly over delay × (1 ± jitter).",
    )
    schedule_to_start_timeout_seconds: float = Field(
        default=0.0,
        ge=0,
        le=365 * 24 * 3600,
        description="Default schedule-to-start timeout of a new task that names none: a task not started"
        " this long after it became schedulable (created, released, retrying) fails (TASK_TIMED_OUT"
        " SCHEDULE_TO_START). 0 (the default): none (docs/STEERING.md, Timeouts).",
    )
    start_to_close_timeout_seconds: float = Field(
        default=0.0,
        ge=0,
        le=365 * 24 * 3600,
        description="Default start-to-close timeout of a new task that names none: an attempt running longer"
        " fails, and the retry policy applies (START_TO_CLOSE). 0 (the default): none.",
    )
    schedule_to_close_timeout_seconds: float = Field(
        default=0.0,
        ge=0,
        le=365 * 24 * 3600,
        description="Default schedule-to-close timeout of a new task that names none: a task not finished"
        " this long after its creation, retries included, fails for good (SCHEDULE_TO_CLOSE). 0 (the"
        " default): none.",
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins whose pages may call the API from a browser (CORS), comma-separated or a JSON"
        " list, such as `http://localhost:5173`; `*` for any. Empty (the default): no CORS headers at all.",
    )
    cors_allow_credentials: bool = Field(
        default=False,
        description="Let pages on those origins send cookies and HTTP authentication"
        " (`credentials: 'include'`); refused with the `*` origin.",
    )
    # --- the HTTP edge: sizes and hosts (docs/LIMITS.md) ---
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body (GraphQL and REST), in bytes; larger is refused with 413 before it"
        " is read whole.",
    )
    max_url_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        le=60_000,
        description="Longest request URL (path and query string), in bytes; longer is refused with 414 as"
        " soon as the request line is read (a GraphQL GET's query string too). At most 60,000: uvicorn's"
        " HTTP parser cannot take a URL past 64 KiB.",
    )
    max_json_depth: int = Field(
        default=64,
        ge=2,
        le=90,
        description="Deepest nesting of a JSON body (GraphQL variables included), refused 400 before parsing"
        " into GraphQL; free-form values are held to 32 levels by the services, MongoDB to 100.",
    )
    max_payload_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=8 * 1024 * 1024,
        description="Largest free-form value (result, output references, input parameters, tool arguments,"
        " event payloads), measured as BSON.",
    )
    bulk_action_max_tasks: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Most tasks one bulk action (retryTasks, cancelTasks, pauseTasks, resumeTasks and their"
        " REST routes) acts on per call: the default `limit` and its bound (docs/STEERING.md).",
    )
    bulk_action_batch_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Tasks a bulk action changes per transaction; a concurrent write to one of them re-reads"
        " and re-decides that batch.",
    )
    max_workflow_tasks: int = Field(
        default=1000,
        ge=1,
        le=20_000,
        description="Most tasks (sub-tasks plus behavior tasks) one workflow creation may hold.",
    )
    trusted_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"],
        description="Host names the server answers to (the `Host` header), comma-separated or a JSON list;"
        " `*.example.com` matches subdomains, `*` any host. HOST is added when it is a specific address.",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses of the reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are"
        " believed (IPs or networks such as `10.0.0.0/8`, comma-separated; `*` any, only when nothing but"
        " the proxy can reach the server). Empty (the default): those headers are ignored, so the client"
        " address (rate limits, logs) is the connection's peer. uvicorn's own default (loopback) does not"
        " apply.",
    )

    auth_mode: Literal["auto", "open", "keys"] = Field(
        default="auto",
        description="`open`: a request without credentials may do anything; `keys`: it acts with"
        " AUTH_ANONYMOUS_SCOPES only; `auto`: open when HOST is a loopback address, keys otherwise.",
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve `/metrics` without credentials on a server that requires keys (for a scraper on a"
        " private network). Off: it needs a key or token with the `metrics` scope. An open server"
        " (AUTH_MODE) serves it to anyone either way.",
    )
    metrics_label_values_max: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Most distinct client-chosen label values (GraphQL operation names, agent names) each"
        " metric keeps per process; further values are counted as `other`. Also how many concurrency limits,"
        " and how many start rate limits, have series of their own (the first by scope, then key).",
    )
    metrics_sample_seconds: float = Field(
        default=15.0,
        ge=1,
        le=3600,
        description="How often at most `/metrics` re-counts tasks by status and agent and the claimable"
        " queue per agent (one aggregation, when scraped), and the concurrency and start rate limits'"
        " running, ready and started counts (at most three commands): older samples are refreshed, newer"
        " ones served.",
    )
    metrics_sample_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Longest the task-count sample (and, apart, the limits' sample) may run in MongoDB"
        " (`maxTimeMS`); past it the previous sample is kept and the scrape answers at once.",
    )
    auth_anonymous_scopes: Annotated[list[Literal["read", "write", "admin"]], NoDecode] = Field(
        default_factory=list,
        description="Scopes of a request without credentials when keys are required (comma-separated).",
    )
    rate_limits: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Rate limits per caller (shared by every process through MongoDB); auto: on when the"
        " server requires credentials (not open).",
    )
    rate_limit_read: str = Field(
        default="1200/minute", description="Budget of an API key or token for `read` requests."
    )
    rate_limit_write: str = Field(
        default="600/minute", description="Budget of an API key or token for `write` requests."
    )
    rate_limit_admin: str = Field(
        default="60/minute", description="Budget of an API key or token for `admin` requests."
    )
    rate_limit_anonymous: str = Field(
        default="120/minute", description="Budget of each client address without credentials (any scope)."
    )

    @field_validator("rate_limit_read", "rate_limit_write", "rate_limit_admin", "rate_limit_anonymous")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate limit such as `600/minute`, `10/second` or `1000 per hour`"
            ) from None
        return value

    @property
    def rate_limits_active(self) -> bool:
        """Whether requests are rate limited (RATE_LIMITS resolved)."""
        return self.rate_limits == "on" or (self.rate_limits == "auto" and not self.auth_open)

    jwt_issuer: str | None = Field(
        default=None,
        description="Accept JWTs from this issuer (`iss`); unset: no JWTs. Needs JWT_AUDIENCE and"
        " JWT_JWKS_URL or JWT_PUBLIC_KEY.",
    )
    jwt_audience: str | None = Field(default=None, description="The audience (`aud`) tokens must name.")
    jwt_jwks_url: str | None = Field(default=None, description="The issuer's JWKS (its public keys).")
    jwt_public_key: str | None = Field(
        default=None, description="One PEM public key (or a path to one) instead of a JWKS."
    )
    jwt_algorithms: Annotated[list[JwtAlgorithm], NoDecode] = Field(
        default_factory=_default_jwt_algorithms,
        description="Signature algorithms accepted (asymmetric only, comma-separated).",
    )
    jwt_scopes_claim: str = Field(
        default="scope", description="Claim holding the scopes (a dotted path reaches nested claims)."
    )
    jwt_scope_prefix: str = Field(default="", description="Prefix of this API's scopes in that claim.")
    jwt_agents_claim: str | None = Field(
        default=None, description="Claim listing the agents a token may act for; unset: any agent."
    )
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600, description="Clock skew allowed on exp/nbf.")
    jwt_jwks_cache_seconds: float = Field(default=300.0, gt=0, description="How long the JWKS is kept.")
    jwt_jwks_refetch_seconds: float = Field(
        default=30.0, ge=0, description="Least time between fetches of the JWKS for an unknown key id."
    )
    jwt_jwks_timeout_seconds: float = Field(default=3.0, gt=0, le=60, description="JWKS fetch timeout.")

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @model_validator(mode="after")
    def _jwt_complete(self) -> Settings:
        if self.jwt_issuer is None:
            return self
        if not self.jwt_audience:
            raise ValueError("JWT_ISSUER is set: set JWT_AUDIENCE too (the `aud` tokens must name)")
        if bool(self.jwt_jwks_url) == bool(self.jwt_public_key):
            raise ValueError("JWT_ISSUER is set: set exactly one of JWT_JWKS_URL and JWT_PUBLIC_KEY")
        return self

    auth_recheck_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often an open WebSocket or SSE stream made with an API key checks that the key is"
        " still valid; a revoked or expired key ends it within this time.",
    )
    auth_key_cache_seconds: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="How long a process trusts what it read of an API key for the operations sent over a"
        " WebSocket opened with it (each is checked): a key revoked by another process or the CLI is refused"
        " within this time, one revoked through this process at once. 0: read the key for every operation.",
    )

    @field_validator("auth_anonymous_scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @property
    def auth_open(self) -> bool:
        """Whether a request without credentials acts with every scope (AUTH_MODE resolved)."""
        if self.auth_mode != "auto":
            return self.auth_mode == "open"
        return self.host.strip().strip("[]").lower() in ("localhost", "::1") or self.host.startswith("127.")

    @field_validator("cors_allow_origins", "trusted_hosts", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        """`a,b` or `["a", "b"]` from the environment; a list when built in code."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [origin.strip() for origin in text.split(",") if origin.strip()]

    @field_validator("cors_allow_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        """Origins as browsers send them in `Origin` (lower case, no default port, no path), so they match."""
        checked = []
        for origin in origins:
            if origin == "*":
                checked.append(origin)
                continue
            parts = urlsplit(origin.strip().rstrip("/"))
            try:
                port = parts.port
            except ValueError:
                port = -1
            if (
                parts.scheme.lower() not in ("http", "https")
                or not parts.hostname
                or port == -1
                or parts.path
                or parts.query
                or parts.fragment
                or parts.username
            ):
                raise ValueError(
                    f"CORS_ALLOW_ORIGINS holds origins such as http://localhost:5173 (a scheme, a host and"
                    f" an optional port, no path), not {origin!r}."
                )
            scheme = parts.scheme.lower()
            default_port = {"http": 80, "https": 443}[scheme]
            host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            checked.append(f"{scheme}://{host}" + (f":{port}" if port not in (None, default_port) else ""))
        return checked

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_proxies(cls, proxies: list[str]) -> list[str]:
        """Addresses and networks as uvicorn's ProxyHeadersMiddleware matches them (or `*`)."""
        if "*" in proxies:
            return ["*"]
        checked = []
        for proxy in (p.strip().strip("[]") for p in proxies):
            try:
                checked.append(
                    str(
                        ipaddress.ip_network(proxy, strict=False)
                        if "/" in proxy
                        else ipaddress.ip_address(proxy)
                    )
                )
            except ValueError:
                raise ValueError(
                    f"FORWARDED_ALLOW_IPS holds proxy addresses or networks such as 127.0.0.1 or"
                    f" 10.0.0.0/8 (or `*`), not {proxy!r}."
                ) from None
        return checked

    @field_validator("trusted_hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        """Host names as the `Host` header carries them: lower case, IPv6 addresses in brackets."""
        checked = []
        for host in (h.strip().lower() for h in hosts):
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            if (
                not host
                or "*" in host[1:]
                or (host.startswith("*") and host != "*" and not host.startswith("*."))
            ):
                raise ValueError(
                    f"TRUSTED_HOSTS holds host names such as localhost or *.example.com, not {host!r}."
                )
            checked.append(host)
        return checked

    def retry_policy(self) -> dict[str, Any]:
        """The default retry policy (`app/lifecycle/retry_policy.py` field names)."""
        return {
            "initial_interval": self.retry_initial_interval_seconds,
            "backoff_coefficient": self.retry_backoff_coefficient,
            "maximum_interval": self.retry_maximum_interval_seconds,
            "jitter": self.retry_jitter,
        }

    def timeouts(self) -> dict[str, float]:
        """The default timeouts (`app/lifecycle/timeouts.py` field names; 0: none)."""
        return {
            "schedule_to_start_timeout": self.schedule_to_start_timeout_seconds,
            "start_to_close_timeout": self.start_to_close_timeout_seconds,
            "schedule_to_close_timeout": self.schedule_to_close_timeout_seconds,
        }

    @model_validator(mode="after")
    def _lease_within_bounds(self) -> Settings:
        if not self.lease_seconds_min <= self.lease_seconds <= self.lease_seconds_max:
            raise ValueError(
                f"LEASE_SECONDS ({self.lease_seconds}) must lie between LEASE_SECONDS_MIN"
                f" ({self.lease_seconds_min}) and LEASE_SECONDS_MAX ({self.lease_seconds_max})."
            )
        return self

    @model_validator(mode="after")
    def _one_retention_window(self) -> Settings:
        if self.retention_days is not None and self.retention_seconds is not None:
            raise ValueError("Set RETENTION_DAYS or RETENTION_SECONDS, not both.")
        return self

    @property
    def retention_window_seconds(self) -> float | None:
        """How long finished work is kept, in seconds; None: forever (retention off)."""
        if self.retention_days is not None:
            return self.retention_days * 86400
        return self.retention_seconds

    @model_validator(mode="after")
    def _lapse_after_heartbeats(self) -> Settings:
        if self.process_lapse_seconds < 3 * self.process_heartbeat_seconds:
            raise ValueError(
                f"PROCESS_LAPSE_SECONDS ({self.process_lapse_seconds:g}) must be at least three"
                f" PROCESS_HEARTBEAT_SECONDS ({self.process_heartbeat_seconds:g}): a live process would lapse"
                " between its heartbeats."
            )
        return self

    @model_validator(mode="after")
    def _no_credentials_for_any_origin(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_allow_origins:
            raise ValueError(
                "CORS_ALLOW_CREDENTIALS=true cannot be combined with CORS_ALLOW_ORIGINS=*: list the"
                " origins that may send credentials instead."
            )
        return self

    @field_validator("mongodb_uri", mode="before")
    @classmethod
    def _empty_uri_means_embedded(cls, value: object) -> object:
        """`MONGODB_URI=` (set but empty, as compose files and `.env` templates leave it) means unset."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def allowed_hosts(self) -> list[str]:
        """TRUSTED_HOSTS, plus HOST when it names one address (not a wildcard such as 0.0.0.0)."""
        hosts = list(self.trusted_hosts)
        host = self.host.strip().lower()
        host = f"[{host}]" if ":" in host else host
        if host not in ("0.0.0.0", "[::]", "") and host not in hosts:
            hosts.append(host)
        return hosts
