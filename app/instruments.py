"""The Prometheus instruments every layer records into: GraphQL operations, MongoDB commands, task
lifecycle counts, the event hub's lag, and the sampled task gauges (docs/OBSERVABILITY.md lists them).

They live in prometheus_client's default registry, created once per process on first use (`get()`), so
nothing is registered at import time and several apps in one process (the tests) share them. Each is
written so it also works in prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, several
server processes behind one port): counters and histograms add up across processes; the sampled task
gauges use `mostrecent` (every process samples the same database: the newest sample is the answer).

Label values that come from clients (GraphQL operation names, agent names) are bounded: the first
`label_values_max` distinct values seen by this process keep their own series, the rest are counted
under `other` (`BoundedLabel`), so a client cannot grow the number of series without bound.

Concurrency: the instruments are thread-safe (prometheus_client's own locks); `BoundedLabel` is called
from the event loop and from PyMongo's listener (the same thread here), and its worst race is one value
more than the bound, never a lost count.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

#: What an over-the-bound label value is counted as.
OTHER = "other"

#: Buckets for GraphQL operations and MongoDB commands: 1 ms to 10 s (most commands take 1-20 ms here).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The event hub's lag: from the event's write to its release to subscribers (10 ms to a minute).
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BoundedLabel:
    """A label's values, bounded: the first `limit` distinct values keep their own series; others are
    `other`. Values longer than `max_length` are cut (a label value is stored with every sample)."""

    def __init__(self, limit: int = 100, max_length: int = 100) -> None:
        self.limit = limit
        self.max_length = max_length
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        value = value[: self.max_length]
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


@dataclass(frozen=True)
class Instruments:
    graphql_duration: Histogram
    graphql_errors: Counter
    mongo_duration: Histogram
    mongo_failures: Counter
    claims: Counter
    lease_lapses: Counter
    retries: Counter
    expiries: Counter
    timeouts: Counter
    hub_lag: Histogram
    tasks: Gauge
    claimable: Gauge
    tasks_sampled_at: Gauge
    #: GraphQL operation names, agent names (bounded: `configure`).
    operations: BoundedLabel
    agents: BoundedLabel
    collections: BoundedLabel


_INSTRUMENTS: Instruments | None = None


def get() -> Instruments:
    """The process's instruments (created on first use)."""
    global _INSTRUMENTS
    if _INSTRUMENTS is None:
        _INSTRUMENTS = Instruments(
            graphql_duration=Histogram(
                "agent_tasks_graphql_operation_duration_seconds",
                "GraphQL queries and mutations (HTTP and WebSocket) from parse to result, by operation name"
                " (bounded: METRICS_LABEL_VALUES_MAX, then `other`) and type.",
                ("operation", "type"),
                buckets=LATENCY_BUCKETS,
            ),
            graphql_errors=Counter(
                "agent_tasks_graphql_operation_errors_total",
                "Errors in GraphQL responses (`errors`, not errors as data), by operation, type and code.",
                ("operation", "type", "code"),
            ),
            mongo_duration=Histogram(
                "agent_tasks_mongodb_command_duration_seconds",
                "MongoDB commands of the app's client (not the event hub's change stream), by command and"
                " collection, as PyMongo's command monitoring measures them.",
                ("command", "collection"),
                buckets=LATENCY_BUCKETS,
            ),
            mongo_failures=Counter(
                "agent_tasks_mongodb_command_failures_total",
                "MongoDB commands that failed (an error reply or a network error), by command and"
                " collection.",
                ("command", "collection"),
            ),
            claims=Counter(
                "agent_tasks_claims_total", "Tasks claimed (started under a lease by `claim`).", ("agent",)
            ),
            lease_lapses=Counter(
                "agent_tasks_lease_lapses_total",
                "Leases that ran out (the task returned to retrying, or failed with its attempts used up).",
                ("agent",),
            ),
            retries=Counter(
                "agent_tasks_retries_total",
                "Tasks that went to retrying (a failure or a lapsed lease with attempts left).",
                ("agent",),
            ),
            expiries=Counter(
                "agent_tasks_expiries_total", "Tasks failed because their `expires_at` passed.", ("agent",)
            ),
            timeouts=Counter(
                "agent_tasks_timeouts_total",
                "Tasks whose stored timeout fired (SCHEDULE_TO_START, START_TO_CLOSE, SCHEDULE_TO_CLOSE; a"
                " lapsed lease is a lease lapse).",
                ("agent", "kind"),
            ),
            hub_lag=Histogram(
                "agent_tasks_event_hub_lag_seconds",
                "From an event's write (its timestamp) to its release here, for events a subscriber or a"
                " request of this process waits for.",
                buckets=LAG_BUCKETS,
            ),
            tasks=Gauge(
                "agent_tasks_tasks",
                "Tasks by status and agent (sampled every METRICS_SAMPLE_SECONDS at most, when scraped).",
                ("status", "agent"),
                multiprocess_mode="mostrecent",
            ),
            claimable=Gauge(
                "agent_tasks_claimable_tasks",
                "Tasks a claim for the agent could start now (pending or retrying, due), sampled as above.",
                ("agent",),
                multiprocess_mode="mostrecent",
            ),
            tasks_sampled_at=Gauge(
                "agent_tasks_tasks_sampled_timestamp_seconds",
                "When the task gauges were last sampled (Unix time).",
                multiprocess_mode="max",
            ),
            operations=BoundedLabel(),
            agents=BoundedLabel(),
            collections=BoundedLabel(),
        )
    return _INSTRUMENTS


def configure(label_values_max: int) -> None:
    """Bound the client-chosen label values (METRICS_LABEL_VALUES_MAX); the values seen so far stay."""
    instruments = get()
    for bounded in (instruments.operations, instruments.agents):
        bounded.limit = label_values_max
