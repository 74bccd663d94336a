"""The `agent-tasks` command: serve the API, load the demo workflow, run the demo agent, export the schema.

Starting: the settings (environment, `.env`, then `--host`/`--port`) are validated first; then the HTTP
port is bound, the embedded mongod started (when no `MONGODB_URI` is set), MongoDB checked and prepared
(`open_resources`), and with `--demo` (LOAD_DEMO) the demo loaded into it (`app/demo`: the command line
loads it, the server never imports it); only then does uvicorn listen and "GraphiQL at …" get printed. A
failure at any step prints one line saying what to do and exits non-zero (`EXIT_*`).

Next to a running server: `serve` on the embedded mongod leaves `DATA_DIR/server.json` (the URI, the
database, its pid) while it runs; `keys` and `demo` without MONGODB_URI read it (checking the pid is alive)
and work on that server's database, or say in one line what to pass (exit code 2); `--embedded` starts the
embedded mongod for the command when no server runs.

Stopping (SIGTERM or Ctrl-C): no new connections; every subscription ends at once, as a finished stream
(SSE `complete`, graphql-transport-ws `complete` then close 1001 "going away"); requests still running get
`SHUTDOWN_GRACE_SECONDS` in all, after which uvicorn cancels them; then the resources close, the embedded
mongod stops, and the process exits 0.

Several processes (`serve --workers N`, `WORKERS`): this process binds the port, starts the embedded mongod,
checks MongoDB (and loads the demo) once, then supervises N workers (app/supervisor.py), each running the
server above on the same socket; SIGTERM or Ctrl-C stops them all as above, and this process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import errno
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import uvicorn

from app import logs
from app.edge import url_limited_protocol
from app.settings import Settings

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from app.resources import AppState

logger = logging.getLogger("agent_tasks")

#: Exit codes (docs/OPERATIONS.md lists them): stopped by a signal, or done.
EXIT_OK = 0
#: The server could not start (port taken, MongoDB unreachable or unsuitable, mongod failed), or failed.
EXIT_FAILED = 1
#: Invalid settings or command line.
EXIT_USAGE = 2

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_T = TypeVar("_T")
#: The command-line options that override a setting, to name the one the user typed in an error.
_OPTIONS = {"host": "--host", "port": "--port", "workers": "--workers"}


class StartupError(Exception):
    """The server cannot start; the message is one sentence saying what to do."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class _Stopped(BaseException):
    """SIGTERM or Ctrl-C before the event loop runs (while the embedded mongod starts)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line instead of argparse's usage and message."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------------------------- settings


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """The settings from the environment (and `.env`), with command-line `overrides` validated alike.

    Raises `StartupError` (`EXIT_USAGE`) naming each invalid variable or option and what it accepts."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    overrides = overrides or {}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise StartupError(_invalid_settings(exc, overrides), EXIT_USAGE) from None
    except SettingsError as exc:  # a value that could not even be parsed (a list that is not JSON…)
        raise StartupError(f"{exc}; fix it in the environment (or .env).", EXIT_USAGE) from None


def _invalid_settings(exc: Any, overrides: dict[str, Any]) -> str:
    """One sentence: `PORT=99999 is invalid: input should be less than or equal to 65535; fix it …`."""
    problems, fixes = [], set()
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        if name in overrides and name in _OPTIONS:
            where = f"{_OPTIONS[name]} {error['input']}"
            fixes.add("on the command line")
        else:
            where = f"{name.upper()}={error['input']}"
            fixes.add("in the environment (or .env)")
        message = str(error["msg"])
        problems.append(f"{where} is invalid: {message[:1].lower()}{message[1:]}")
    return "; ".join(problems) + f"; fix it {' and '.join(sorted(fixes))}."


# ----------------------------------------------------------------------------------------------- serve


def _bind(settings: Settings) -> socket.socket:
    """Bind the HTTP port now, before anything starts, so a taken port fails at once (and the server
    never points at another one). It listens only once the server is ready (uvicorn's `startup`)."""
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: no wait after a restart
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {port} on {host} is already in use (another agent-tasks server?); stop what holds it"
                " or pick another with PORT or --port."
            )
        elif exc.errno == errno.EACCES:
            message = f"no permission to bind port {port} on {host}; use a port above 1023 (PORT or --port)."
        else:
            message = (
                f"cannot bind {host}:{port} ({exc.strerror or exc}); set HOST or --host to an address of"
                " this machine (127.0.0.1, or 0.0.0.0 for every interface)."
            )
        raise StartupError(message) from None
    sock.set_inheritable(True)
    return sock


def _serve(settings: Settings) -> int:
    from app.mongo.embedded import EmbeddedMongod, EmbeddedMongoError, announce_server, withdraw_server

    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    previous = {sig: signal.signal(sig, stop) for sig in _SIGNALS}
    embedded: EmbeddedMongod | None = None
    sock: socket.socket | None = None
    try:
        sock = _bind(settings)
        if settings.mongodb_uri is None:
            # Started here rather than in the lifespan so that a failure ends in one clear sentence, and
            # so that Ctrl-C stops mongod only after the server has drained (mongod runs in a session of
            # its own: the terminal's Ctrl-C does not reach it).
            embedded = EmbeddedMongod(settings.data_dir, settings.embedded_mongo_port)
            try:
                uri = embedded.start()
            except EmbeddedMongoError as exc:
                raise StartupError(str(exc)) from None
            settings = settings.model_copy(update={"mongodb_uri": uri})
            logs.announce(f"embedded MongoDB ready at {uri} (data in {settings.data_dir})")
            # Where `agent-tasks keys` and `agent-tasks demo` find this database while the server runs.
            announce_server(settings.data_dir, uri, settings.mongodb_db)
        if settings.workers > 1:
            return _supervise(settings, sock)
        url = _graphiql_url(settings, sock)
        return _run_loop(_run(settings, sock, lambda: _announce(settings, url)))
    except _Stopped:
        return EXIT_OK
    except StartupError as exc:
        print(f"agent-tasks: {exc}", file=sys.stderr)
        return exc.code
    finally:
        # A second signal while stopping must not interrupt mongod's clean shutdown.
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if sock is not None:
            sock.close()
        if embedded is not None:
            withdraw_server(settings.data_dir)
            embedded.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _graphiql_url(settings: Settings, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{reachable_host(settings, host)}:{port}/graphql"


def _announce(settings: Settings, url: str) -> None:
    """The lines saying the server is ready: where, and who may call it."""
    logs.announce(f"GraphiQL at {url}")
    mode = (
        f"open: anyone who can reach {settings.host}:{settings.port} may read and write"
        + (" (AUTH_MODE=open)" if settings.auth_mode == "open" else " — bound to loopback")
        if settings.auth_open
        else "API keys required (`agent-tasks keys create`)"
    )
    logs.announce(f"access: {mode}")


def _supervise(settings: Settings, sock: socket.socket) -> int:
    """`--workers N` (N > 1): N processes serving on `sock`, supervised by this one (app/supervisor.py),
    their Prometheus values kept in files that `/metrics` adds up (app/metrics.py)."""
    from app.mongo.client import MongoUnavailable
    from app.supervisor import metrics_directory, supervise

    url = _graphiql_url(settings, sock)
    try:
        # Checked once here, so that an unusable MongoDB is said once, not by every worker; the demo is
        # loaded once too (workers loading it at the same time would race on its upserts).
        _run_loop(_prepare(settings))
    except MongoUnavailable as exc:
        raise StartupError(str(exc)) from None
    settings = settings.model_copy(update={"load_demo": False})

    def ready(pids: list[int]) -> None:
        logs.announce(f"{len(pids)} worker processes serving (pids {', '.join(map(str, pids))})")
        _announce(settings, url)

    with metrics_directory():
        return supervise(
            settings.workers,
            _worker,
            sock,
            (settings,),
            on_ready=ready,
            # Each worker drains for the grace period, then closes its resources.
            stop_seconds=settings.shutdown_grace_seconds + 30,
        )


async def _prepare(settings: Settings) -> None:
    """MongoDB checked and its indexes built (and the demo loaded with `--demo`), before any worker starts."""
    from app.resources import open_database

    if settings.load_demo:
        await _load_demo(settings, reset=False)
        return
    async with open_database(settings):
        pass


def _worker(sock: socket.socket, ready: Connection, settings: Settings) -> None:
    """One of `--workers N`, in a process of its own (spawned by app/supervisor.py): the one-process server
    on the inherited socket, stopped by the parent's SIGTERM or when the parent is gone; it says it serves
    by sending its pid."""
    from app.supervisor import watch_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent acts on Ctrl-C (app/supervisor.py)

    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    signal.signal(signal.SIGTERM, stop)  # until the event loop takes it over
    try:
        watch_parent(ready)
        logs.configure(settings.log_level, settings.log_format)
        code = _run_loop(_run(settings, sock, lambda: ready.send(os.getpid()), (signal.SIGTERM,)))
    except _Stopped:
        code = EXIT_OK
    except StartupError as exc:
        print(f"agent-tasks: {exc}", file=sys.stderr, flush=True)
        code = exc.code
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sock.close()
    sys.exit(code)


def _run_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """Run on uvloop when it is installed, as `uvicorn.run` would.

    A stop signal before the server's own handlers are installed raises `_Stopped` wherever the main thread
    is, and that can be inside the loop's start-up (uvloop sets up its signal pipe in `run_forever`): the
    loop is then left marked as running, and closing it fails ("this event loop is already running",
    "Cannot close a running event loop"). That failure would replace the stop, and a SIGTERM during
    start-up would exit 1 with a traceback instead of 0 (seen once in `tests/test_start_stop.py`). The
    process is exiting: the stop goes on, the loop is left to the interpreter."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    runner = asyncio.Runner(loop_factory=loop_factory)
    try:
        result = runner.run(main)
    except _Stopped:
        with contextlib.suppress(RuntimeError):
            runner.close()
        raise
    except BaseException:
        runner.close()
        raise
    runner.close()
    return result


def freeze_start_up_heap() -> None:
    """Move everything start-up made (modules, the schema, the resources) out of the garbage collector's
    sight: it lives as long as the process, and a full collection, which a big query's allocations
    trigger every few requests, would otherwise walk all of it inside a request (50 ms per pass on a
    1×20×25 tree, ~8 ms frozen; graphql-core's lexer tokens form reference cycles, so the collector
    cannot be left off). The thresholds stay Python's: raising them kept full passes out of requests
    but let each query's cyclic garbage pile up (peak RSS +20 to +48 MiB over 20 trees)."""
    gc.collect()
    gc.freeze()


def _route_signals(handler: Callable[[int], object], signals: tuple[int, ...] = _SIGNALS) -> None:
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, handler, sig)


async def _run(
    settings: Settings,
    sock: socket.socket,
    announce: Callable[[], None],
    signals: tuple[int, ...] = _SIGNALS,
) -> int:
    """Open the resources, serve until one of `signals`, drain, close; `announce()` once listening.
    `StartupError` when MongoDB is unusable."""
    from app.mongo.client import MongoUnavailable
    from app.resources import open_resources
    from app.server import create_app

    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    stopped = starting = False

    def stop_starting(sig: int) -> None:
        nonlocal stopped
        stopped = True
        if starting:
            main.cancel()
            # Again until it takes: Python 3.11's `asyncio.wait_for` (which the driver waits in) can lose a
            # cancellation that lands just as what it waits for completes (fixed in 3.12).
            loop.call_later(0.5, stop_starting, sig)

    starting = True
    _route_signals(stop_starting, signals)
    try:
        async with open_resources(settings) as state:
            if settings.load_demo:
                # `serve --demo` (`make run`): loaded here, by the command line, so that the server's
                # resources never import the demo; before listening, so the first request sees it whole.
                # (With `--workers N` the parent loaded it once, `_prepare`, and the workers do not.)
                from app.demo.workflow import load_into

                await load_into(state)
            starting = False
            host, port = sock.getsockname()[:2]
            app = create_app(settings, state=state)
            freeze_start_up_heap()
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=settings.log_level,
                # Its lines go through the root logger's handler (one format, redacted); its access log
                # is off: the edge writes one line per request (app/edge.py `AccessLog`).
                log_config=logs.uvicorn_log_config(),
                access_log=False,
                lifespan="on",
                http=url_limited_protocol(settings.max_url_bytes),
                ws_per_message_deflate=settings.ws_per_message_deflate,
                # X-Forwarded-For from the configured proxies only: uvicorn's default trusts loopback.
                proxy_headers=bool(settings.forwarded_allow_ips),
                forwarded_allow_ips=settings.forwarded_allow_ips,
            )
            server = _Server(config, state, settings.shutdown_grace_seconds, announce)
            # From here a signal drains the server (a second Ctrl-C: at once, as uvicorn does).
            _route_signals(lambda sig: server.handle_exit(sig, None), signals)
            server.should_exit = stopped  # a signal came in meanwhile: start, and stop at once
            try:
                await server.serve(sockets=[sock])
            except SystemExit:  # uvicorn gave up during its own start-up (it logged why)
                raise StartupError("the HTTP server could not start (see the error above).") from None
            _route_signals(lambda sig: logger.info("already stopping"), signals)
    except MongoUnavailable as exc:
        if stopped:  # told to stop meanwhile: that is what happened
            return EXIT_OK
        raise StartupError(str(exc)) from None
    except asyncio.CancelledError:
        if stopped:  # SIGTERM or Ctrl-C while starting
            return EXIT_OK
        raise
    finally:
        starting = False
    return EXIT_OK


#: Addresses that mean "every interface": not a host a client can name in a URL.
_ANY_ADDRESS = ("0.0.0.0", "::", "")


def reachable_host(settings: Settings, bound: str) -> str:
    """The host to print in the start-up URL: the address bound, unless it is every interface (0.0.0.0,
    ::); then a host the server answers to (TRUSTED_HOSTS): localhost or 127.0.0.1 when allowed (a URL
    that works on this machine), else the first host name listed."""
    if bound not in _ANY_ADDRESS:
        return f"[{bound}]" if ":" in bound else bound
    allowed = settings.allowed_hosts
    for candidate in ("localhost", "127.0.0.1"):
        if any(
            pattern == "*"
            or pattern == candidate
            or (pattern.startswith("*.") and candidate.endswith(pattern[1:]))
            for pattern in allowed
        ):
            return candidate
    named = [host for host in allowed if "*" not in host]
    if named:
        return named[0]
    return allowed[0].replace("*", "www", 1) if allowed else "localhost"


class _Server(uvicorn.Server):
    """uvicorn's server, told when it listens and ending live connections first when it stops.

    uvicorn's own shutdown closes the listening socket, asks every connection to finish, then waits for
    all of them (for ever unless `timeout_graceful_shutdown`) before the lifespan's shutdown runs: a
    streaming response, such as an SSE subscription, would hold it until the client leaves. So the
    subscriptions are ended first, here, and what remains gets the rest of the grace period."""

    def __init__(
        self, config: uvicorn.Config, state: AppState, grace: float, announce: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self._state = state
        self._grace = grace
        self._announce = announce

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # `_run` routes the signals to `handle_exit` through the event loop; uvicorn's version would also
        # re-raise them once the server stopped, killing the process before the resources are closed.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._announce()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        for server in getattr(self, "servers", ()):
            server.close()  # no new connections meanwhile (uvicorn closes them again: harmless)
        await self._state.end_live_connections(self._grace)
        # uvicorn hands this to `asyncio.wait_for`, which takes any number of seconds.
        self.config.timeout_graceful_shutdown = cast(int, max(0.0, deadline - loop.time()))
        # Past the grace period uvicorn cancels what still runs, says so in one line, and then logs each
        # cancelled request's traceback as an "Exception in ASGI application": that part is left out.
        logging.getLogger("uvicorn.error").addFilter(_no_cancelled_tracebacks)
        await super().shutdown(sockets)


def _no_cancelled_tracebacks(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


# ----------------------------------------------------------------------------------------------- commands


def operator_settings(settings: Settings, embedded: bool) -> Settings:
    """The settings an operator's command (`keys`, `demo`) uses: MONGODB_URI when set; else the database
    of the server running on DATA_DIR's embedded mongod (its `server.json`, and its MONGODB_DB unless
    set); else, with `--embedded`, the embedded mongod started for this command. Raises `StartupError`
    (EXIT_USAGE) with one line saying what to pass when none of these applies."""
    from app.mongo.embedded import ServerNotFound, running_server

    if settings.mongodb_uri is not None:
        return settings
    try:
        found = running_server(settings.data_dir)
    except ServerNotFound as exc:
        if embedded and exc.held_by is None:
            return settings  # `open_database` starts the embedded mongod on DATA_DIR
        hint = "" if embedded else " (or --embedded to start the embedded MongoDB for this command)"
        raise StartupError(f"{str(exc).removesuffix('.')}{hint}.", EXIT_USAGE) from None
    update: dict[str, Any] = {"mongodb_uri": found["uri"]}
    if "mongodb_db" not in settings.model_fields_set and isinstance(found.get("database"), str):
        update["mongodb_db"] = found["database"]
    return settings.model_copy(update=update)


def _operator_command(settings: Settings, args: argparse.Namespace) -> int:
    """`keys` and `demo`: one line and an exit code for every failure a user can meet, never a traceback."""
    from app.mongo.client import MongoUnavailable
    from app.mongo.embedded import EmbeddedMongoError

    try:
        settings = operator_settings(settings, bool(getattr(args, "embedded", False)))
        if args.command == "keys":
            return asyncio.run(_keys(settings, args))
        if args.command == "limits":
            return asyncio.run(_limits(settings, args))
        asyncio.run(_load_demo(settings, args.reset))
        return EXIT_OK
    except StartupError as exc:
        print(f"agent-tasks: {exc}", file=sys.stderr)
        return exc.code
    except (EmbeddedMongoError, MongoUnavailable) as exc:
        print(f"agent-tasks: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _load_demo(settings: Settings, reset: bool) -> None:
    from app.demo.workflow import DEMO_WORKFLOW_ID, load_into
    from app.resources import open_resources

    async with open_resources(settings) as state:
        await load_into(state, reset=reset)
    print(f"agent-tasks: demo workflow {DEMO_WORKFLOW_ID!r} loaded into database {settings.mongodb_db!r}")


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    """`agent-tasks keys create|list|revoke`: API keys in the configured database."""
    from app.auth.keys import KeyService
    from app.domain import Scope
    from app.resources import open_database

    async with open_database(settings) as db:
        keys = KeyService(db)
        if args.keys_command == "create":
            try:
                scopes = [Scope(s.strip()) for s in args.scopes.split(",") if s.strip()]
                expires = (
                    dt.datetime.now(dt.UTC) + dt.timedelta(days=args.expires_days)
                    if args.expires_days
                    else None
                )
                key, secret = await keys.create(args.name, scopes, args.agent or None, expires)
            except ValueError as exc:
                print(f"agent-tasks: {exc}", file=sys.stderr)
                return EXIT_USAGE
            print(f"created key {key.id} ({key.name}; scopes: {','.join(key.scopes)})")
            print(f"secret (shown once, keep it): {secret}")
            print(f"use it as: Authorization: Bearer {secret}")
        elif args.keys_command == "list":
            for k in await keys.list():
                status = "revoked" if k.revoked_at else "active"
                agents = ",".join(k.agents) if k.agents is not None else "*"
                print(f"{k.id}\t{k.name}\t{','.join(k.scopes)}\tagents={agents}\t{status}")
        else:
            if await keys.revoke(args.id) is None:
                print(f"agent-tasks: no key {args.id!r}", file=sys.stderr)
                return EXIT_FAILED
            print(f"revoked key {args.id}")
    return EXIT_OK


async def _limits(settings: Settings, args: argparse.Namespace) -> int:
    """`agent-tasks limits set|list|clear`: concurrency limits in the configured database (what the admin
    mutations setConcurrencyLimit / clearConcurrencyLimit / concurrencyLimits do; docs/STEERING.md)."""
    from app.lifecycle.errors import Invalid
    from app.lifecycle.steering import Scope, Steering
    from app.resources import open_database

    async with open_database(settings) as db:
        steering = Steering(db, max_limits=settings.max_concurrency_limits)
        try:
            if args.limits_command == "set":
                view = await steering.set_limit(
                    Scope(args.scope), args.key, args.max, dt.datetime.now(dt.UTC)
                )
                print(f"{view.scope.value}:{view.key}\tmax={view.max}\trunning={view.running}")
            elif args.limits_command == "clear":
                cleared = await steering.clear_limit(Scope(args.scope), args.key)
                print(f"{args.scope}:{args.key}\t{'cleared' if cleared else 'no such limit'}")
            else:
                for view in await steering.limits():
                    print(f"{view.scope.value}:{view.key}\tmax={view.max}\trunning={view.running}")
        except Invalid as exc:
            print(f"agent-tasks: {exc.message}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="agent-tasks", description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve the GraphQL API (embedded MongoDB unless MONGODB_URI is set)"
    )
    serve.add_argument("--host", help="interface to bind (default from HOST, else 127.0.0.1)")
    # A string: validated with the settings, so `--port 70000` is refused like PORT=70000.
    serve.add_argument("--port", help="port (default from PORT, else 8000; 0: any free port)")
    serve.add_argument("--demo", action="store_true", help="load the demo workflow before serving")
    # A string, validated with the settings (WORKERS), as --port is.
    serve.add_argument(
        "--workers",
        help="server processes on the port (default from WORKERS, else 1; production: one per core)",
    )
    demo = commands.add_parser("demo", help="load the demo workflow into the database and exit")
    demo.add_argument("--reset", action="store_true", help="put the demo documents back as they were")
    embedded_help = (
        "when no server runs on DATA_DIR (and MONGODB_URI is unset), start the embedded MongoDB for this"
        " command"
    )
    demo.add_argument("--embedded", action="store_true", help=embedded_help)
    export = commands.add_parser("export-schema", help="print the GraphQL SDL (schema/schema.graphql)")
    export.add_argument("--output", type=Path, help="write to this file instead of standard output")
    commands.add_parser("settings-doc", help="print the configuration reference (docs/CONFIGURATION.md)")
    agent = commands.add_parser(
        "demo-agent", help="run the demo's agents (Python client) through a workflow on a running server"
    )
    agent.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    agent.add_argument("--workflow", help="work on this workflow (default: create a new episode)")
    agent.add_argument("--pace", type=float, default=1.0, help="scale every pause (0.1: ten times faster)")
    agent.add_argument("--seed", type=int, help="seed the random pauses and failures")
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    keys.add_argument("--embedded", action="store_true", help=embedded_help)
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", default="read", help="comma-separated: read,write,admin,metrics")
    create.add_argument("--agent", action="append", help="bind the key to this agent (repeatable)")
    create.add_argument("--expires-days", type=float, help="the key expires after this many days")
    key_commands.add_parser("list", help="list keys (never their secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    limits = commands.add_parser("limits", help="set, list and clear concurrency limits")
    limits.add_argument("--embedded", action="store_true", help=embedded_help)
    limit_commands = limits.add_subparsers(dest="limits_command", required=True)
    scopes = ("agent", "workflow", "key")
    limit_set = limit_commands.add_parser("set", help="set (or change) a limit on tasks in progress")
    limit_set.add_argument("scope", choices=scopes)
    limit_set.add_argument("key", help="the agent name, workflow id or concurrency key")
    limit_set.add_argument("max", type=int, help="most tasks in progress under it")
    limit_commands.add_parser("list", help="list limits with their running counts")
    limit_clear = limit_commands.add_parser("clear", help="remove a limit")
    limit_clear.add_argument("scope", choices=scopes)
    limit_clear.add_argument("key")
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        from app.api.schema import export_sdl

        sdl = export_sdl()
        if args.output:
            args.output.write_text(sdl, encoding="utf-8")
        else:
            sys.stdout.write(sdl)
        return EXIT_OK

    if args.command == "settings-doc":
        from app.settings_doc import render

        sys.stdout.write(render())
        return EXIT_OK

    if args.command == "demo-agent":
        from app.demo.agent import run

        logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the workers stop gracefully
            return asyncio.run(run(args.url, args.workflow, args.pace, args.seed))
        return EXIT_OK

    overrides: dict[str, Any] = {}
    if args.command == "serve":
        options = {"host": args.host, "port": args.port, "workers": args.workers}
        overrides = {k: v for k, v in options.items() if v is not None}
        if args.demo:
            overrides["load_demo"] = True
    try:
        settings = load_settings(overrides)
    except StartupError as exc:
        print(f"agent-tasks: {exc}", file=sys.stderr)
        return exc.code
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "serve":
        return _serve(settings)
    if args.command in ("keys", "limits", "demo"):
        return _operator_command(settings, args)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
