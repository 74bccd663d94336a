"""The change-stream reader: the inserts into `task_events`, in commit order, onto the stamper's queue.

One change stream per server process. Each insert is queued with its commit's `clusterTime` (the stamper
numbers events from it); a stream that drops is reopened after the last resume token taken, so no commit
is missed; when MongoDB no longer has that token's history, the stream starts afresh and `GAP` is queued
once the fresh stream is open (subscribers then re-read from the collection, and the events no stream saw
are the orphan sweep's).

Batching: while none of this process's requests waits for events, the reader, once it has handled every
change it fetched, lets the next ones accumulate for up to `hold()` before its next read, so a process
costs itself and MongoDB one change-stream read per batch of other processes' events rather than one per
event. `wake` (set by a request that starts writing or waiting, or by a new subscriber) ends the pause at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from app.live.inbox import GAP, Doc
from app.store import events as event_store
from app.store.types import Db

logger = logging.getLogger(__name__)

_NOT_A_REPLICA_SET = 40573


class HubUnavailable(RuntimeError):
    """The change stream cannot work against this deployment at all."""


def _resumable(exc: OperationFailure) -> bool:
    """An error the change stream can resume after (as PyMongo's own rule: the server labels them)."""
    return exc.has_error_label("ResumableChangeStreamError")


def buffered(stream: Any) -> int | None:
    """How many changes the stream holds already fetched, or None when this PyMongo does not say.

    PyMongo has no public way to ask; its change stream keeps them in its command cursor's `_data`
    (`tests/test_library_assumptions.py` checks this against the installed PyMongo). Were it gone, the
    reader would never pause: correct, only costlier."""
    data = getattr(getattr(stream, "_cursor", None), "_data", None)
    return len(data) if data is not None else None


class ChangeReader:
    """Follows the change stream and queues each insert (with `_cluster_time`), or `GAP`, onto `out`."""

    def __init__(
        self,
        db: Db,
        out: asyncio.Queue[Doc],
        *,
        wake: asyncio.Event,
        hold: Callable[[], float],
        waiting: Callable[[], bool],
        retry_seconds: float,
    ) -> None:
        self.db = db
        self.out = out
        self.wake = wake
        self.hold = hold
        self.waiting = waiting
        self.retry_seconds = retry_seconds
        self.ready = asyncio.Event()
        self.resume_token: Mapping[str, Any] | None = None
        self.restarts = 0
        self._stream: Any = None

    async def interrupt(self) -> None:
        """Close the current change stream as a network failure would (operators' and tests' lever)."""
        if self._stream is not None:
            await self._stream.close()

    async def run(self) -> None:
        gap = False  # history was lost: tell subscribers once the fresh stream is open
        while True:
            opening = True
            try:
                self._stream = await event_store.watch_changes(self.db, resume_after=self.resume_token)
                opening = False
                # The stream's position even before any event arrives, so an early failure loses nothing.
                self.resume_token = self._stream.resume_token or self.resume_token
                self.ready.set()
                if gap:
                    # Only now: whatever commits from here on reaches subscribers live, so what they
                    # re-read from the collection after GAP leaves nothing out.
                    self.out.put_nowait(GAP)
                    gap = False
                async with self._stream as stream:
                    async for change in stream:
                        self.resume_token = stream.resume_token
                        event = change["fullDocument"]
                        event["_cluster_time"] = change["clusterTime"]
                        self.out.put_nowait(event)
                        await self._pause(stream)
                # The stream was closed without an error (e.g. `interrupt`): reopen after the token.
            except asyncio.CancelledError:
                raise
            except OperationFailure as exc:
                if exc.code == _NOT_A_REPLICA_SET:
                    raise HubUnavailable(
                        "MongoDB is not running as a replica set, so change streams (and transactions) are"
                        " unavailable; start it with --replSet (one node is enough) or use Atlas"
                    ) from exc
                if opening and self.resume_token is not None and not _resumable(exc):
                    # The server refuses to resume from our token (history rolled over, or the token is
                    # unusable): start afresh, and have subscribers re-read what they missed. Failures
                    # while reading (a killed cursor, a step-down) just reopen from the token.
                    logger.warning("cannot resume the change stream (%s); subscribers re-read", exc)
                    self.resume_token = None
                    gap = True
                else:
                    logger.warning("change stream failed (%s); reopening", exc)
                    await asyncio.sleep(self.retry_seconds)
            except PyMongoError as exc:
                logger.warning("change stream interrupted (%s); resuming", exc)
                await asyncio.sleep(self.retry_seconds)
            finally:
                self._stream = None
            self.restarts += 1

    async def _pause(self, stream: Any) -> None:
        """Once the fetched changes are handled, and while no request here waits for events, let the next
        ones accumulate for up to `hold()` and fetch them in one round trip. It pauses even while a request
        here is inside its transaction (its `settle` sets `wake`): in `bench.writes` that read less per
        event with two processes and was no slower with one."""
        hold = self.hold()
        if hold <= 0 or buffered(stream) != 0:
            return
        self.wake.clear()
        if self.waiting():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(hold):
                await self.wake.wait()
