"""Prometheus metrics at `/metrics`: HTTP requests by route (`RequestMetrics`), what
this process's event hub and live connections are doing (read from `AppState` at scrape time), the
instruments the other layers record into (`app/instruments.py`: GraphQL operations, MongoDB commands,
claims, lapses, retries, expiries, the hub's lag), the task gauges `TaskSampler` refreshes at most every
METRICS_SAMPLE_SECONDS when scraped, and the concurrency and start rate limits' state (`SteeringSampler`,
on the same cadence; docs/OBSERVABILITY.md lists every series).

One server process answers for itself; the processes of `serve --workers N` answer together, their
metrics added up from files (`shared_registry`); nothing is shared through MongoDB. Several replicas
(hosts, containers) are scraped one by one, as Prometheus does.

The request metrics use the route's template (`/meta-tasks/{id}`), not the path, so ids never become label
values, and unknown paths are not recorded at all: a client cannot grow the label space.

Access follows the server's (`docs/SECURITY.md`): on an open server anyone may scrape; on a server that
requires keys the scraper needs a key or token with the `metrics` scope (401 without credentials, 403
without the scope, in the REST error shape), unless `METRICS_PUBLIC=true` opens `/metrics` alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pymongo.errors import PyMongoError
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from app import instruments
from app.auth.scopes import ScopeRefusal, Unauthenticated, require
from app.domain import ErrorCode, Scope
from app.lifecycle.steering import SteeringSample
from app.principal import OPEN, Principal
from app.resources import AppState
from app.store import states as state_store
from app.store.failures import describe

logger = logging.getLogger("agent_tasks.metrics")

METRICS_PATH = "/metrics"
#: The Prometheus text format, version 0.0.4 (what `generate_latest` writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_middleware() -> Middleware:
    """Count and time every request by method, route template and status (`agent_tasks_http_*`)."""
    return Middleware(RequestMetrics, app_name="agent_tasks")


#: Paths whose requests are not recorded: the scrapes themselves and the pages' static files.
SKIPPED_PREFIXES = (METRICS_PATH, "/assets/")

#: The request metrics (created once per process, in prometheus_client's default registry): the series
#: starlette-exporter's middleware wrote before (`agent_tasks_http_requests_total`,
#: `..._request_duration_seconds`, `..._requests_in_progress`), with the same labels.
_REQUEST_METRICS: tuple[Counter, Histogram, Gauge] | None = None


def request_metrics() -> tuple[Counter, Histogram, Gauge]:
    # One set per process, however many apps it builds (the tests build many).
    global _REQUEST_METRICS
    if _REQUEST_METRICS is None:
        labels = ("method", "path", "status_code", "app_name")
        _REQUEST_METRICS = (
            Counter("agent_tasks_http_requests_total", "Total HTTP requests", labels),
            Histogram(
                "agent_tasks_http_request_duration_seconds", "HTTP request duration, in seconds", labels
            ),
            Gauge(
                "agent_tasks_http_requests_in_progress",
                "Total HTTP requests currently in progress",
                ("method", "app_name"),
                multiprocess_mode="livesum",
            ),
        )
    return _REQUEST_METRICS


#: Requests answered by this process, one series per live process with several workers (label `pid`): which
#: processes serve, and how evenly the kernel spreads connections among them.
_PROCESS_REQUESTS: Gauge | None = None


def process_requests() -> Gauge:
    global _PROCESS_REQUESTS
    if _PROCESS_REQUESTS is None:
        _PROCESS_REQUESTS = Gauge(
            "agent_tasks_process_requests",
            "HTTP requests this server process answered (with several workers: one series per process,"
            " label pid).",
            multiprocess_mode="liveall",
        )
    return _PROCESS_REQUESTS


def shared_registry() -> CollectorRegistry:
    """The registry `/metrics` writes the request metrics and the instruments (`app/instruments.py`) from.

    One process (`--workers 1`, and the tests' in-process apps): prometheus_client's default registry.
    Several (`--workers N`, app/supervisor.py): a scrape reaches one process, picked by the kernel, so
    each process's own registry would answer for one Nth of the traffic, a different Nth each scrape, and
    counters would seem to go backwards. Prometheus' multiprocess mode was chosen over one scrape target
    per process because the processes share one port and are replaced when one dies: a scraper cannot
    address them one by one. Each worker keeps its values in memory-mapped files in
    `PROMETHEUS_MULTIPROC_DIR` (a directory the parent owns, emptied at start), and this collector adds
    them up at scrape time: counters and histograms summed over every process that ever ran (a dead one's
    counts stay), in-progress gauges summed over live processes, the sampled task gauges as the newest
    sample (`mostrecent`), `agent_tasks_process_requests` per live process. The default registry's process
    and platform collectors (CPU, memory of one process) are left out there: they cannot be added across
    processes. The live series (`LiveCollector`) stay the answering process's own."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class RequestMetrics:
    """Pure ASGI: counts and times each HTTP request under its route's template (`scope["route"]`, which
    Starlette's router sets), never its raw path; a request no route matched (a made-up path's 404) is not
    recorded, so a client cannot grow the label space. It replaced starlette-exporter's middleware, which
    built a `Request`, matched every route a second time after the response and cost ~14 % of a small
    GraphQL request's CPU."""

    def __init__(self, app: ASGIApp, app_name: str) -> None:
        self.app = app
        self.app_name = app_name
        self.total, self.duration, self.in_progress = request_metrics()
        self.served = process_requests()

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(SKIPPED_PREFIXES):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        begin = time.perf_counter()
        status: list[Any] = [None]

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        in_progress = self.in_progress.labels(method, self.app_name)
        in_progress.inc()
        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            status[0] = 500
            raise
        finally:
            in_progress.dec()
            route = scope.get("route")
            path = getattr(route, "path", None)
            if path is not None:
                labels = (method, path, str(status[0] or 500), self.app_name)
                self.total.labels(*labels).inc()
                self.duration.labels(*labels).observe(time.perf_counter() - begin)
                self.served.inc()


class LiveCollector(Collector):
    """This process's event hub and live connections, read when scraped (nothing to keep in step)."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        hub = self.state.hub
        yield GaugeMetricFamily(
            "agent_tasks_subscriptions", "Open event subscriptions (WebSocket and SSE).", hub.subscriber_count
        )
        yield GaugeMetricFamily(
            "agent_tasks_websocket_connections",
            "Open GraphQL WebSocket connections.",
            len(self.state.websockets),
        )
        yield GaugeMetricFamily(
            "agent_tasks_event_hub_running",
            "1 while the event hub follows the change stream.",
            int(hub.running),
        )
        yield GaugeMetricFamily(
            "agent_tasks_event_hub_orphan_sweeper",
            "1 while this process holds the lease that sweeps for events no change stream saw.",
            int(hub.sweeps_orphans),
        )
        yield CounterMetricFamily(
            "agent_tasks_event_hub_restarts", "Times the hub reopened its change stream.", hub.restarts
        )
        yield CounterMetricFamily(
            "agent_tasks_events_stamped",
            "Events whose position this process wrote (the first of the processes to stamp it).",
            hub.stamped,
        )
        yield GaugeMetricFamily(
            "agent_tasks_event_hub_backlog",
            "Changes this process's hub read off the stream and has not released to subscribers yet.",
            hub.backlog,
        )


def metrics_route() -> Route:
    """`GET /metrics`: the request metrics (the process-wide registry) followed by this app's live ones."""

    async def metrics(request: Request) -> Response:
        state: AppState = request.app.state.agent_tasks
        if not state.settings.metrics_public:
            refused = _refusal(request)
            if refused is not None:
                return refused
        sampler: TaskSampler | None = state.extras.get("task_sampler")
        if sampler is None:
            sampler = state.extras["task_sampler"] = TaskSampler(state)
        await sampler.refresh()
        steering: SteeringSampler | None = state.extras.get("steering_sampler")
        if steering is None:
            steering = state.extras["steering_sampler"] = SteeringSampler(state)
        await steering.refresh()
        live: CollectorRegistry | None = state.extras.get("metrics_registry")
        if live is None:  # one registry per app: several apps in one process (the tests) never collide
            live = CollectorRegistry(auto_describe=True)
            live.register(LiveCollector(state))
            live.register(steering)
            state.extras["metrics_registry"] = live
        return Response(generate_latest(shared_registry()) + generate_latest(live), media_type=CONTENT_TYPE)

    return Route(METRICS_PATH, metrics, methods=["GET"])


class TaskSampler:
    """Tasks by status and agent, and the claimable queue per agent (`agent_tasks_tasks`,
    `agent_tasks_claimable_tasks`): counted by one aggregation (`states.sample_counts`) when a scrape finds
    the last sample older than METRICS_SAMPLE_SECONDS, never per scrape; bounded in MongoDB by
    METRICS_SAMPLE_TIMEOUT_SECONDS. A series whose count went away is set to 0 (not dropped: a gauge in
    multiprocess mode cannot be), so a queue that emptied reads 0. A failed sample keeps the previous one
    and logs one line.

    Concurrency: scrapes may overlap; one of them samples (`_lock`) and the others, finding the sample
    fresh once they hold the lock, serve it."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._lock = asyncio.Lock()
        self._sampled_at = -math.inf
        self._series: set[tuple[str, str]] = set()
        self._queues: set[str] = set()

    async def refresh(self) -> None:
        settings = self.state.settings
        async with self._lock:
            if time.monotonic() - self._sampled_at < settings.metrics_sample_seconds:
                return
            # Also when it fails: a MongoDB that is down is asked again only after the same interval.
            self._sampled_at = time.monotonic()
            try:
                counts, claimable = await state_store.sample_counts(
                    self.state.store.db, dt.datetime.now(dt.UTC), settings.metrics_sample_timeout_seconds
                )
            except PyMongoError as exc:
                logger.warning("task metrics not sampled: %s (the previous sample is served)", describe(exc))
                return
            self._publish(counts, claimable)

    def _publish(self, counts: list[tuple[Any, Any, int]], claimable: dict[Any, int]) -> None:
        meters = instruments.get()
        by_series: dict[tuple[str, str], int] = {}
        for agent, status, n in counts:
            key = (str(status), meters.agents(str(agent) if agent is not None else ""))
            by_series[key] = by_series.get(key, 0) + n
        queues: dict[str, int] = {}
        for agent, n in claimable.items():
            label = meters.agents(str(agent) if agent is not None else "")
            queues[label] = queues.get(label, 0) + n
        for status, agent in self._series - by_series.keys():
            meters.tasks.labels(status, agent).set(0)
        for (status, agent), n in by_series.items():
            meters.tasks.labels(status, agent).set(n)
        for agent in self._queues - queues.keys():
            meters.claimable.labels(agent).set(0)
        for agent, n in queues.items():
            meters.claimable.labels(agent).set(n)
        self._series |= by_series.keys()
        self._queues |= queues.keys()
        meters.tasks_sampled_at.set(time.time())


class SteeringSampler(Collector):
    """The concurrency and start rate limits' visible state (issue 22 part 5; docs/STEERING.md): per limit
    its maximum, the tasks in progress and claimable now under it; per start rate limit its budget, window,
    starts in the current window and when the next window opens; and how many of each are set.

    Read from MongoDB through the service (`Steering.sample`: at most three commands, bounded in all by
    METRICS_SAMPLE_TIMEOUT_SECONDS) when a scrape finds the last sample older than METRICS_SAMPLE_SECONDS,
    as the task gauges are. Only the first METRICS_LABEL_VALUES_MAX limits and as many rate limits (by
    scope, then key) have series, so the number of series is bounded whatever is configured;
    `agent_tasks_steering_limits` counts them all. A failed sample keeps the previous one and logs one line.

    Several workers (`--workers N`): these series are read from the database, so every process would answer
    the same; they are yielded by this collector in the answering process's own registry, after the shared
    (multiprocess) one, never written to the shared files, so they are never added up across processes.
    Each process samples for itself: two scrapes served by two processes may show samples up to
    METRICS_SAMPLE_SECONDS apart.

    Concurrency: scrapes may overlap; one of them samples (`_lock`), the others then find it fresh."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._lock = asyncio.Lock()
        self._sampled_at = -math.inf
        self._sample: SteeringSample | None = None
        self._sampled_unix: float | None = None

    async def refresh(self) -> None:
        settings = self.state.settings
        async with self._lock:
            if time.monotonic() - self._sampled_at < settings.metrics_sample_seconds:
                return
            self._sampled_at = time.monotonic()  # also on failure: a MongoDB that is down is asked later
            try:
                self._sample = await self.state.lifecycle.steering.sample(
                    dt.datetime.now(dt.UTC),
                    settings.metrics_label_values_max,
                    settings.metrics_sample_timeout_seconds,
                )
            except PyMongoError as exc:
                logger.warning("limit metrics not sampled: %s (the previous sample is served)", describe(exc))
                return
            self._sampled_unix = time.time()

    def collect(self) -> Iterator[Metric]:
        sample = self._sample
        if sample is None:
            return
        labels = ("scope", "key")
        limit = GaugeMetricFamily(
            "agent_tasks_concurrency_limit",
            "A concurrency limit's maximum of tasks in progress.",
            labels=labels,
        )
        running = GaugeMetricFamily(
            "agent_tasks_concurrency_running", "Tasks in progress under a concurrency limit.", labels=labels
        )
        ready = GaugeMetricFamily(
            "agent_tasks_concurrency_ready",
            "Tasks claimable now (pending or retrying, due) under a concurrency limit's agent, workflow or"
            " key: its queue depth, whether or not the limit is full.",
            labels=labels,
        )
        for view in sample.limits:
            values = (view.scope.value, view.key)
            limit.add_metric(values, view.max)
            running.add_metric(values, view.running)
            ready.add_metric(values, view.ready)
        rate = GaugeMetricFamily(
            "agent_tasks_start_rate_limit", "A start rate limit's most starts per window.", labels=labels
        )
        window = GaugeMetricFamily(
            "agent_tasks_start_rate_window_seconds",
            "A start rate limit's window (1, 60 or 3600 seconds, fixed).",
            labels=labels,
        )
        started = GaugeMetricFamily(
            "agent_tasks_start_rate_started",
            "Starts under a start rate limit in its current window.",
            labels=labels,
        )
        next_window = GaugeMetricFamily(
            "agent_tasks_start_rate_next_window_timestamp_seconds",
            "When a start rate limit's next window opens (Unix time): the next start it allows once spent.",
            labels=labels,
        )
        for rview in sample.rates:
            values = (rview.scope.value, rview.key)
            rate.add_metric(values, rview.max)
            window.add_metric(values, rview.per_seconds)
            started.add_metric(values, rview.started)
            next_window.add_metric(values, rview.next_window_at.timestamp())
        total = GaugeMetricFamily(
            "agent_tasks_steering_limits",
            "Concurrency limits and start rate limits set, listed or not (series: the first"
            " METRICS_LABEL_VALUES_MAX of each).",
            labels=("kind",),
        )
        total.add_metric(("concurrency",), sample.limits_set)
        total.add_metric(("start_rate",), sample.rates_set)
        yield from (limit, running, ready, rate, window, started, next_window, total)
        if self._sampled_unix is not None:
            yield GaugeMetricFamily(
                "agent_tasks_steering_sampled_timestamp_seconds",
                "When the limits' series were last sampled (Unix time).",
                self._sampled_unix,
            )


def _refusal(request: Request) -> Response | None:
    """None when the caller may scrape (an open server's anonymous caller holds every scope), else the
    401 / 403 answer in the REST error shape."""
    principal = getattr(request.state, "principal", None)  # set by AuthMiddleware
    try:
        require(principal if isinstance(principal, Principal) else OPEN, Scope.METRICS, "GET /metrics")
    except ScopeRefusal as exc:
        refused, status = (
            (ErrorCode.UNAUTHENTICATED, 401)
            if isinstance(exc, Unauthenticated)
            else (ErrorCode.FORBIDDEN, 403)
        )
        code = refused.rest
        request.state.refusal = f"{code}: {exc.message}"  # the edge's one log line (app/edge.py)
        return JSONResponse(
            {"error": {"code": code, "message": exc.message, "required_scope": exc.scope.value}},
            status_code=status,
            headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
        )
    return None
