"""The worker loop: claim tasks of one agent, run a handler on each under a heartbeated lease, report.

    async with client.worker("VoiceForgeAgent", handle, concurrency=8, lease_seconds=30) as worker:
        await worker.wait_idle()   # or: await worker.run() until cancelled

`concurrency` slots each claim a task, run `handler(task)` while a background heartbeat extends the lease
every `heartbeat_every` seconds (a third of the lease by default), and then:

- the handler returned: `completeTask` with its return value as `result` (a mapping as it is, anything
  else but None as `{"value": ...}`), unless the handler completed or failed the task itself; a result
  the server refuses fails the task for good;
- it raised `FatalError`: `failTask(isFinal: true)`; any other exception (`RetryableError` says so
  explicitly): `failTask(isFinal: false)`, which the server turns into retrying or, once attempts are
  used up, failed;
- the lease was lost (`LeaseLost` from any call, or a heartbeat refused because the task moved on): the
  handler is cancelled if it still runs and its result dropped, quietly (a warning in the log): another
  worker owns the task now.

Free slots claim together: the slot that asks first claims as many tasks as slots are waiting for one
(`claimTasks`, at most `claim_batch`), one request and one transaction for all of them, and hands the
others to the waiting slots at once, so no claimed task waits for a slot (against a server without
`claimTasks`, one `claimTask` per slot).

A slot that finds nothing to claim polls again after `poll_min` seconds, doubling up to `poll_max`; with
`wake_on_events` a subscription to the agent's events wakes it at once when a task is created or
released. Each attempt runs in a span "task attempt", a child of the trace context stored with the task
(`traceparent`: its creating request's), so the handler's own spans nest under it (docs/TRACING.md).
Leaving the `async with` (or cancelling `run`) stops claiming, gives handlers in flight
`grace_seconds` to finish, then cancels them: their leases lapse on the server and the tasks are retried.

The worker knows the client only by the calls it makes (`WorkerClient`, which `AgentTasksClient` has), so
this module sits below the client and imports none of it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from agent_tasks_client import tracing
from agent_tasks_client.claimed import ClaimedTask
from agent_tasks_client.enums import EventType, TaskStatus
from agent_tasks_client.errors import (
    AgentTasksError,
    FatalError,
    LeaseLost,
    NotFound,
    TransitionRefused,
    ValidationFailed,
)
from agent_tasks_client.models import Event

logger = logging.getLogger("agent_tasks_client.worker")

Handler = Callable[[ClaimedTask], Awaitable[Any]]
#: Lease the server gives when none is asked for (its LEASE_SECONDS default); sets the heartbeat pace.
DEFAULT_LEASE_SECONDS = 60
#: At most this much of a traceback goes into `failTask(details:)`.
MAX_DETAILS = 4000


class WorkerClient(Protocol):
    """What the worker uses of its client (`AgentTasksClient`'s methods and its tracer)."""

    tracer: Any

    async def supports_leases(self) -> bool: ...

    async def claim(
        self,
        agent_name: str,
        *,
        workflow_id: str | None = None,
        task_kinds: Sequence[str] | None = None,
        lease_seconds: int | None = None,
        worker_id: str | None = None,
    ) -> ClaimedTask | None: ...

    async def claim_many(
        self,
        agent_name: str,
        max_tasks: int,
        *,
        workflow_id: str | None = None,
        task_kinds: Sequence[str] | None = None,
        lease_seconds: int | None = None,
        worker_id: str | None = None,
    ) -> list[ClaimedTask]: ...

    def watch_events(
        self, *, agent_id: str | None = None, types: Sequence[str] | None = None, after: str | None = None
    ) -> AsyncIterator[Event]: ...


@dataclass
class WorkerStats:
    """What a worker did: tasks claimed, completed, failed (reported; `fatal` of them final), lost (lease
    lost, result dropped; `cancelled` of them because the task was cancelled, its handler cancelled), and
    errors (calls that failed for another reason, logged)."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    fatal: int = 0
    lost: int = 0
    errors: int = 0
    cancelled: int = 0


class Worker:
    """Claims and runs tasks of `agent_name` with `handler`; see the module's docstring."""

    def __init__(
        self,
        client: WorkerClient,
        agent_name: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        lease_seconds: int | None = None,
        heartbeat_every: float | None = None,
        workflow_id: str | None = None,
        task_kinds: Sequence[str] | None = None,
        worker_id: str | None = None,
        poll_min: float = 0.1,
        poll_max: float = 2.0,
        grace_seconds: float = 10.0,
        wake_on_events: bool = False,
        claim_batch: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if claim_batch is not None and claim_batch < 1:
            raise ValueError(f"claim_batch must be at least 1, got {claim_batch}")
        self.client = client
        self.agent_name = agent_name
        self.handler = handler
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.heartbeat_every = heartbeat_every or (lease_seconds or DEFAULT_LEASE_SECONDS) / 3
        self.workflow_id = workflow_id
        self.task_kinds = list(task_kinds) if task_kinds else None
        #: Names this process as the lease holder (the server shows it in `leaseHolder`).
        self.worker_id = worker_id or f"{agent_name}-{uuid.uuid4().hex[:8]}"
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.grace_seconds = grace_seconds
        self.wake_on_events = wake_on_events
        #: Most tasks one claim asks for (default: `concurrency`; 1: a `claimTask` per slot).
        self.claim_batch = claim_batch or concurrency
        self.stats = WorkerStats()
        #: Tasks claimed by one slot's batch for the other slots waiting, and how many slots wait.
        self._ready: collections.deque[ClaimedTask] = collections.deque()
        self._waiting = 0
        self._claiming = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle_slots: set[int] = set()
        self._slots: list[asyncio.Task[None]] = []
        self._waker: asyncio.Task[None] | None = None
        #: Tasks whose lease was found lost by the heartbeat (their handler is being cancelled).
        self._lost: set[str] = set()
        #: Tasks whose heartbeat said they were cancelled (`LeaseLost.cancel_requested`).
        self._cancelled: set[str] = set()

    async def __aenter__(self) -> Worker:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the slots (and the waker); returns at once."""
        if self._slots:
            return
        self._slots = [
            asyncio.create_task(self._slot(n), name=f"{self.worker_id}-slot-{n}")
            for n in range(self.concurrency)
        ]
        if self.wake_on_events:
            self._waker = asyncio.create_task(self._wake_on_events(), name=f"{self.worker_id}-waker")

    async def run(self) -> None:
        """Start, and work until cancelled (then stop gracefully) or until `stop` is called elsewhere."""
        self.start()
        try:
            await self._stopping.wait()
        finally:
            await asyncio.shield(self.stop())

    async def wait_idle(self) -> None:
        """Return once every slot found nothing to claim and no handler runs."""
        await self._idle.wait()

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop claiming; let handlers in flight finish within the grace period, then cancel them."""
        self._stopping.set()
        self._poke()
        if self._waker is not None:
            self._waker.cancel()
        if not self._slots:
            return
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        _, pending = await asyncio.wait(self._slots, timeout=grace)
        for slot in pending:
            slot.cancel()
        if pending:
            logger.warning("%s: cancelled %d handler(s) after the grace period", self.worker_id, len(pending))
        rest = {*self._slots, *([self._waker] if self._waker else [])}
        while rest:
            done, rest = await asyncio.wait(rest, timeout=0.5)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    logger.error("%s: %s ended with %r", self.worker_id, task.get_name(), error)
            for task in rest:  # again: on Python 3.11 a cancellation can be lost (CPython gh-86296)
                task.cancel()

    # ------------------------------------------------------------------------------------------- slots

    async def _slot(self, n: int) -> None:
        delay = self.poll_min
        while not self._stopping.is_set():
            try:
                task = await self._next()
            except AgentTasksError as exc:
                self.stats.errors += 1
                logger.warning("%s: claim failed: %s", self.worker_id, exc)
                task = None
            if task is None:
                self._idle_slots.add(n)
                if len(self._idle_slots) == self.concurrency:
                    self._idle.set()
                await self._sleep(delay)
                delay = min(self.poll_max, delay * 2)
                continue
            self._idle_slots.discard(n)
            self._idle.clear()
            delay = self.poll_min
            self.stats.claimed += 1
            await self._run_one(task)

    async def _next(self) -> ClaimedTask | None:
        """A task for this slot: one a batch claimed for it, else a batch for every slot waiting now."""
        self._waiting += 1
        try:
            async with self._claiming:  # one claim at a time: the slots arriving meanwhile join the next
                if self._ready:
                    return self._ready.popleft()
                want = min(self._waiting, self.claim_batch)
                if want == 1:
                    return await self.client.claim(
                        self.agent_name,
                        workflow_id=self.workflow_id,
                        task_kinds=self.task_kinds,
                        lease_seconds=self.lease_seconds,
                        worker_id=self.worker_id,
                    )
                tasks = await self.client.claim_many(
                    self.agent_name,
                    want,
                    workflow_id=self.workflow_id,
                    task_kinds=self.task_kinds,
                    lease_seconds=self.lease_seconds,
                    worker_id=self.worker_id,
                )
                self._ready.extend(tasks[1:])  # each slot waiting on the lock takes one
                return tasks[0] if tasks else None
        finally:
            self._waiting -= 1

    async def _sleep(self, seconds: float) -> None:
        """Sleep, cut short by `stop` or by a wake-up from the event subscription."""
        # `asyncio.timeout`, not `wait_for`: on Python 3.11 the latter can lose a cancellation that lands
        # as the event is set (CPython gh-86296).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def _poke(self) -> None:
        """Wake every sleeping slot (each waits on the event it found; the next ones on a fresh one)."""
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def _run_one(self, task: ClaimedTask) -> None:
        # The attempt continues the trace stored with the task (its creating request's): the handler's own
        # spans (model calls, tools) and every call the client makes from here nest under it.
        with tracing.span(
            self.client.tracer,
            "task attempt",
            kind="consumer",
            traceparent=task.state.traceparent,
            attributes={
                "agent_tasks.task_id": task.id,
                "agent_tasks.attempt": task.attempt,
                "agent_tasks.agent_name": task.agent_name,
                "agent_tasks.worker_id": self.worker_id,
            },
        ) as span:
            await self._attempt(task)
            status = task.state.status
            span.set_attribute("agent_tasks.status", status)
            if status in (TaskStatus.FAILED, TaskStatus.RETRYING):
                span.set_error(task.state.last_error or status)

    async def _attempt(self, task: ClaimedTask) -> None:
        async def call() -> Any:
            return await self.handler(task)

        handler = asyncio.create_task(call(), name=f"{self.worker_id}-{task.id}")
        heartbeat = asyncio.create_task(self._heartbeats(task, handler))
        try:
            try:
                result = await handler
            except asyncio.CancelledError:
                if task.id in self._lost and not _cancelling():
                    self._dropped(task, "its heartbeat was refused")
                    if task.id in self._cancelled:
                        self.stats.cancelled += 1
                    return
                raise
            except LeaseLost as exc:
                self._dropped(task, str(exc))
                return
            except FatalError as exc:
                await self._fail(task, exc, final=True)
                return
            except Exception as exc:
                await self._fail(task, exc, final=False)
                return
            if task.finished:  # the handler completed or failed it itself
                self.stats.completed += task.state.status == TaskStatus.COMPLETED
                return
            try:
                await task.complete(as_result(result))
                self.stats.completed += 1
            except LeaseLost as exc:
                self._dropped(task, str(exc))
            except ValidationFailed as exc:  # the same result would be refused again: no retry
                await self._fail(task, exc, final=True)
            except AgentTasksError as exc:
                self.stats.errors += 1
                logger.warning("%s: completing %s failed: %s", self.worker_id, task.id, exc)
        finally:
            heartbeat.cancel()
            self._lost.discard(task.id)
            self._cancelled.discard(task.id)
            await asyncio.wait([heartbeat])  # never swallows a cancellation of this slot itself

    async def _fail(self, task: ClaimedTask, exc: BaseException, *, final: bool) -> None:
        details = "".join(traceback.format_exception(exc))[-MAX_DETAILS:]
        try:
            await task.fail(
                f"{type(exc).__name__}: {exc}",
                details,
                final=final,
                # The error's type: the handler's own (RetryableError/FatalError(error_type=...)), else
                # the exception's class name, which a retry policy's nonRetryableErrorTypes can name.
                error_type=getattr(exc, "error_type", None) or type(exc).__name__,
                next_retry_delay=getattr(exc, "next_retry_delay", None),
            )
        except LeaseLost as lost:
            self._dropped(task, str(lost))
            return
        except AgentTasksError as error:
            self.stats.errors += 1
            logger.warning("%s: reporting the failure of %s failed: %s", self.worker_id, task.id, error)
            return
        self.stats.failed += 1
        self.stats.fatal += final

    def _dropped(self, task: ClaimedTask, why: str) -> None:
        self.stats.lost += 1
        logger.warning(
            "%s: lost the lease on %s (attempt %d), result dropped: %s",
            self.worker_id,
            task.id,
            task.attempt,
            why,
        )

    async def _heartbeats(self, task: ClaimedTask, handler: asyncio.Task[Any]) -> None:
        """Extend the lease every `heartbeat_every` seconds while the handler runs; if the server says the
        task moved on, cancel the handler (its work can no longer be reported)."""
        if not await self.client.supports_leases():  # a server without leases: nothing to extend
            return
        while not handler.done():
            await asyncio.sleep(self.heartbeat_every)
            if handler.done():
                return
            try:
                await task.heartbeat(lease_seconds=self.lease_seconds)
            except (LeaseLost, TransitionRefused, NotFound) as exc:
                logger.warning("%s: heartbeat for %s refused: %s", self.worker_id, task.id, exc)
                self._lost.add(task.id)
                if isinstance(exc, LeaseLost) and exc.cancel_requested:  # cancelled: stop the handler
                    self._cancelled.add(task.id)
                handler.cancel()
                return
            except AgentTasksError as exc:  # the server unreachable for a moment: try again next beat
                self.stats.errors += 1
                logger.warning("%s: heartbeat for %s failed: %s", self.worker_id, task.id, exc)

    async def _wake_on_events(self) -> None:
        """Wake the idle slots when one of the agent's tasks is created or changes status."""
        try:
            async for _ in self.client.watch_events(
                agent_id=self.agent_name,
                types=[EventType.TASK_CREATED, EventType.STATUS_CHANGED],
                after="HEAD",
            ):
                self._poke()
        except AgentTasksError as exc:
            logger.warning("%s: event subscription failed, polling only: %s", self.worker_id, exc)


def as_result(value: Any) -> Any:
    """A handler's return value as `completeTask`'s result, which must be a JSON object: a mapping as it
    is, None as no result, anything else as `{"value": ...}`."""
    if value is None or isinstance(value, Mapping):
        return value
    return {"value": value}


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (not just the handler it awaited)."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
