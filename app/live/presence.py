"""Server processes' presence, and the transactions a dead one left open.

The problem. A transaction holds the documents it wrote until it commits or aborts. When a server process
dies with one open (SIGKILL, the OOM killer, a crash, its host going down), nobody aborts it: MongoDB does
after `transactionLifetimeLimitSeconds` (60 s by default, looked for every 30 s). Until then the client's
retry of that write (same idempotency key, same task) on another process collides with it: a WriteConflict
that `with_transaction` retries until MONGODB_TIMEOUT_SECONDS, then DATABASE_TIMEOUT, again and again.
Measured with `tests/test_crash_stall.py` (one of two servers SIGKILLed while it held a writer's task in a
transaction): that writer was held 85.5, 83.5 and 83.2 s in three runs; the other writers not at all.

What this does. Each process names itself to MongoDB (its clients' `appName` is `agent-tasks/<process
id>`) and registers in `server_processes` before its first transaction. Every PROCESS_HEARTBEAT_SECONDS it
renews its registration (valid for PROCESS_LAPSE_SECONDS) and, if other processes are registered, asks
MongoDB (`$currentOp`) for their open transactions. A registered process is dead when

1. its registration lapsed (not renewed for PROCESS_LAPSE_SECONDS: its host died, or it is cut off); or
2. none of its connections to the primary is open any more while one of its transactions has stayed idle
   a heartbeat long. A live process always has connections open (the driver's monitor keeps one to every
   server); a process that dies has its sockets closed by its kernel at once, so a crash is seen within
   one or two heartbeats, and the lapse can stay long enough for a busy process never to miss it.

The dead process's transactions are aborted (`killSessions` on their sessions), and a lapsed registration
is removed. Measured, three runs each: SIGKILLed, the held writers got through 1.59, 1.22 and 1.14 s after
the kill (rule 2); a server stopped with its connections open (rule 1 alone, lapse 2 s, heartbeat 0.5 s)
2.17, 2.47 and 2.48 s after it stopped.

Why not a bounded `transactionLifetimeLimitSeconds` instead: it aborts every transaction older than the
limit, live ones too, and MongoDB looks for them every limit/2 s (at least 1 s). Measured with the same
test on the code before this module: a limit of 12 s (the least above MONGODB_TIMEOUT_SECONDS, 10 s, the
longest a transaction of ours may legitimately run) held the writers 13.0 s; 3 s held them 4.5 s, but
would abort any transaction slower than 3 s, which a loaded server has. It stays the operators' backstop
where `$currentOp` or `killSessions` is not allowed (docs/OPERATIONS.md).

Why not register each session's id instead of using `appName`: `$currentOp` reports the `appName` and the
session id of every open transaction (mongod 6.0 checked), so nothing has to be written on the path of a
transaction.

Invariants (MUST):

* A process registers before it runs its first transaction (`start` returns after the first write), and
  every client it opens carries its `appName`: each transaction it opens is attributable to it.
* Only the sessions of a process registered in this database, and never this process's own, are killed:
  two deployments sharing one MongoDB never touch each other's sessions, nor a program that is not ours.
* Aborting a transaction is always safe: it commits nothing. A live process wrongly taken for dead (it
  lost every connection for a moment, or missed its heartbeats for PROCESS_LAPSE_SECONDS) sees its next
  command fail with NoSuchTransaction, a TransientTransactionError that `with_transaction` runs again; it
  re-registers on its next heartbeat. So several processes may judge and kill at once, in any order.
* The connection rule is used only where `$currentOp` shows our clients' connections: not through a
  sharded cluster's router (there, rule 1 alone).

Tuning (settings): PROCESS_HEARTBEAT_SECONDS (how soon a crash is seen: 1-2 heartbeats; the cost is one
upsert, one find and, with other processes registered, one `$currentOp` per heartbeat per process) and
PROCESS_LAPSE_SECONDS (how soon a host that went away is given up on; at least three heartbeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from pymongo.errors import PyMongoError

from app.cancellation import stop_task
from app.store import processes as store
from app.store.failures import describe
from app.store.types import Db

logger = logging.getLogger(__name__)


class Presence:
    """Keeps this process registered and aborts the transactions of registered processes that died."""

    def __init__(
        self,
        db: Db,
        process_id: str,
        app_name: str,
        *,
        heartbeat_seconds: float = 1.0,
        lapse_seconds: float = 10.0,
    ) -> None:
        self.db = db
        self.process_id = process_id
        self.app_name = app_name
        self.heartbeat_seconds = heartbeat_seconds
        self.lapse_seconds = lapse_seconds
        #: How many transactions this process aborted for dead ones (for operators and tests).
        self.aborted = 0
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self._sees_connections: bool | None = None
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._partition = (0, 1)

    def partition(self) -> tuple[int, int]:
        """(this process's place, how many live processes are registered), as of the last heartbeat: batch
        claims that collided across processes split the queue by it (`Lifecycle.claim_many`)."""
        return self._partition

    async def start(self) -> None:
        """Register (before this process runs any transaction), then keep at it in the background."""
        await self._register()
        self._task = asyncio.create_task(self._run(), name="presence")

    async def stop(self) -> None:
        """Stop the loop and withdraw the registration (a crash leaves it to lapse instead)."""
        task, self._task = self._task, None
        await stop_task(task)
        with contextlib.suppress(PyMongoError):
            await store.unregister(self.db, self.process_id)

    async def beat(self) -> int:
        """One heartbeat: renew the registration, abort what dead processes left open; how many were."""
        await self._register()
        others = await store.others(self.db, self.process_id)
        live = sorted([self.process_id, *(r.id for r in others if not r.lapsed)])
        self._partition = (live.index(self.process_id), len(live))
        if not others:
            return 0
        by_app = {r.app_name: r for r in others if r.app_name and r.app_name != self.app_name}
        lapsed = {r.app_name for r in others if r.lapsed and r.app_name in by_app}
        open_ = await store.open_transactions(self.db, list(by_app)) if by_app else []
        suspects = {
            t.app_name
            for t in open_
            if t.app_name not in lapsed and t.inactive_seconds >= self.heartbeat_seconds
        }
        gone: set[str] = set()
        if suspects and await self._connections_visible():
            gone = suspects - await store.connected(self.db, sorted(suspects))
        dead = lapsed | gone
        doomed = [t for t in open_ if t.app_name in dead]
        if doomed:
            await store.kill_sessions(self.db, [t.session_id for t in doomed])
            self.aborted += len(doomed)
            for app_name in sorted({t.app_name for t in doomed}):
                r = by_app[app_name]
                why = "its registration lapsed" if app_name in lapsed else "its connections are closed"
                count = sum(t.app_name == app_name for t in doomed)
                logger.warning(
                    "server process %s (pid %s on %s) is gone (%s): aborted %d transaction(s) it left open",
                    r.id,
                    r.pid,
                    r.host,
                    why,
                    count,
                )
        for r in others:
            if r.lapsed and await store.forget(self.db, r):
                logger.info(
                    "server process %s (pid %s on %s) unregistered: its registration lapsed",
                    r.id,
                    r.pid,
                    r.host,
                )
        return len(doomed)

    async def _register(self) -> None:
        await store.register(
            self.db, self.process_id, self.app_name, self.lapse_seconds, self._host, self._pid
        )

    async def _connections_visible(self) -> bool:
        if self._sees_connections is None:
            self._sees_connections = not await store.through_mongos(self.db)
        return self._sees_connections

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.beat()
            except Exception as exc:
                # Logged once per spell of failures: MongoDB down (every request says so too), or
                # `$currentOp` / `killSessions` not allowed (MongoDB's transactionLifetimeLimitSeconds is
                # then the bound); anything else is a bug, logged with its traceback.
                if not self._failing:
                    if isinstance(exc, PyMongoError):
                        logger.warning(
                            "server-process heartbeat failed (%s); a dead process's transactions are not"
                            " aborted until it works again",
                            describe(exc),
                        )
                    else:
                        logger.exception("server-process heartbeat failed")
                self._failing = True
            else:
                if self._failing:
                    logger.info("server-process heartbeat works again")
                self._failing = False
