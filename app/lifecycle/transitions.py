"""Applying lifecycle transitions to MongoDB: compare-and-set on `version`, the events in the same
transaction, and the release of dependents when a task reaches the status they wait for.

`state_machine` decides; this module reads, writes and retries. Every public function runs one
transaction and returns the new state document with the events it wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import math
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app import instruments
from app.domain import MAX_ID_LENGTH, EventType, Status, TaskKind, as_utc, utcnow
from app.lifecycle import idempotency, retry_policy, timeouts
from app.lifecycle import state_machine as sm
from app.lifecycle.errors import Conflict, Invalid, LeaseLost, NotFound, Refused, check_agent
from app.lifecycle.events import event_doc
from app.lifecycle.steering import Pick, Steering
from app.store import states as state_store
from app.store import tasks as task_store
from app.store.events import append_events
from app.store.steering import SLOT_FIELDS
from app.store.storable import encoded_size
from app.store.types import Db

Doc = dict[str, Any]
#: A state-machine action bound to its arguments: (state, now) -> Transition.
Action = Callable[[Mapping[str, Any], dt.datetime], sm.Transition]
#: How long a task this process claimed stays skipped by its other claimers after the commit.
CLAIM_LINGER_SECONDS = 2.0
#: How many stale images of lingering claims a candidate query leaves room for before reading further.
CLAIM_STALE_SLACK = 4
#: How long after a claim here collided with another process's claim every claim here spreads at once.
CLAIM_CONTENTION_SECONDS = 2.0
#: How many times a claim waits for the claims in flight here under the limits it found busy, and at most
#: how long each time (`Steering.settled`); then it answers nothing to claim.
CLAIM_BUSY_ROUNDS = 20
CLAIM_BUSY_WAIT_SECONDS = 1.0
#: A claim that collided with another process's (and, for `CLAIM_CONTENTION_SECONDS` after one, every claim
#: here) picks at random among this many of the agent's most urgent, oldest ready tasks, plus one per claim
#: in flight here, so claimers in different processes rarely race for the same one. A constant: with 8 the
#: two-process claim bench retried 502-580 collisions per 2,000 claims and kept priority order; nothing an
#: operator knows would choose another value.
CLAIM_SPREAD = 8
#: How many times its `max` a batch claim reads when it spreads (after a collision with another process).
CLAIM_BATCH_SPREAD = 4
#: Called with the events a change committed, once it has committed (see `Lifecycle.settle`).
Settle = Callable[[list[Doc]], Awaitable[None]]
#: Held around a change that writes events (see `Lifecycle.writing`).
Writing = Callable[[], AbstractContextManager[None]]


async def _as_written(events: list[Doc]) -> None:
    return None


@dataclass(frozen=True)
class Applied:
    """The state after a change and the events written with it (dependents released included)."""

    state: Doc
    events: list[Doc]


@dataclass(frozen=True)
class FailAction:
    """`failTask` bound to its arguments and the server's default retry policy (a dataclass, so an
    idempotency key's fingerprint counts its arguments)."""

    error: str
    details: str | None
    is_final: bool
    error_type: str | None
    next_retry_delay: float | None
    default_policy: Mapping[str, Any]

    def __call__(self, state: Mapping[str, Any], now: dt.datetime) -> sm.Transition:
        return sm.fail(
            state,
            now,
            self.error,
            self.details,
            self.is_final,
            error_type=self.error_type,
            next_retry_delay=self.next_retry_delay,
            policy=retry_policy.effective(state.get("retry_policy"), self.default_policy),
            draw=random.random(),
        )


def version_of(state: Mapping[str, Any]) -> int:
    """Documents written by other programs have no version: they are at version 0."""
    value = state.get("version")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def check_version(state: Mapping[str, Any], expected: int | None) -> None:
    """Refuse with a Conflict when the client's `expectedVersion` is not the stored one."""
    if expected is not None and version_of(state) != expected:
        raise Conflict(
            f"task '{state['_id']}' is at version {version_of(state)}, not {expected}",
            current_version=version_of(state),
        )


def check_lease(
    state: Mapping[str, Any],
    attempt: int | None,
    now: dt.datetime,
    worker_id: str | None = None,
    *,
    require_holder: bool = True,
) -> None:
    """Fencing: refuse a holder's change (LeaseLost) when its token `attempt` is not the task's current
    attempt in progress, or when the task's lease has run out (whoever asks: the sweep will move it on).

    A caller names itself with `worker_id`, else it is the task's agent: the same default a claim uses
    for the lease holder. A caller that names itself must be the holder of a leased task, token or not.
    With `require_holder` (the default; setting `REQUIRE_LEASE_HOLDER`), a change WITHOUT a token must come
    from the holder too: a worker that forgot its token can no longer write into another worker's attempt.
    """
    task_id, status = state["_id"], sm.normalise_status(state.get("status"))
    attempts, holder = sm.attempts_of(state), state.get("lease_holder")
    if attempt is not None and (attempt != attempts or status != Status.IN_PROGRESS):
        held = f", leased to {holder}" if holder and status == Status.IN_PROGRESS else ""
        raise LeaseLost(
            f"attempt {attempt} no longer holds task '{task_id}':"
            f" it is {status} under attempt {attempts}{held}",
            current_status=status,
            current_attempt=attempts,
            current_holder=holder if status == Status.IN_PROGRESS else None,
        )
    if timeouts.START_TO_CLOSE in sm.due_timeouts(state, now):
        deadline = as_utc(state.get(timeouts.START_TO_CLOSE.deadline_field))
        raise LeaseLost(
            f"attempt {attempts} of task '{task_id}' ran past its start-to-close timeout at"
            f" {deadline.isoformat() if deadline else '?'}; the next sweep fails the attempt",
            current_status=status,
            current_attempt=attempts,
            current_holder=None,
        )
    if sm.lease_lapsed(state, now):
        until = as_utc(state.get("lease_expires_at"))
        raise LeaseLost(
            f"the lease of task '{task_id}' held by {holder} expired at"
            f" {until.isoformat() if until else state.get('lease_expires_at')} (attempt {attempts});"
            " the next sweep returns it to retrying",
            current_status=status,
            current_attempt=attempts,
            current_holder=None,
        )
    if status == Status.IN_PROGRESS and holder is not None and (worker_id is not None or attempt is None):
        caller = worker_id if worker_id is not None else state.get("agent_name")
        if caller != holder and (worker_id is not None or require_holder):
            who = (
                f"worker '{worker_id}'"
                if worker_id is not None
                else f"a caller without a workerId (agent '{caller}')"
            )
            raise LeaseLost(
                f"task '{task_id}' is leased to {holder} (attempt {attempts}); {who} is not the lease"
                " holder: pass the attempt token the claim answered, or the holder's workerId",
                current_status=status,
                current_attempt=attempts,
                current_holder=holder,
            )


def lease_guard(state: Mapping[str, Any]) -> Doc:
    """What a lapse relies on, compared again by the write itself: the same attempt still in progress,
    under the same lease."""
    return {key: state.get(key) for key in ("status", "attempts", "lease_expires_at")}


class Lifecycle:
    """Lifecycle operations over one database."""

    def __init__(
        self,
        db: Db,
        clock: Callable[[], dt.datetime] = utcnow,
        settle: Settle | None = None,
        writing: Writing | None = None,
        claim_spread: int = CLAIM_SPREAD,
        max_claim_batch: int = 100,
        lease_seconds: float = 60,
        lease_bounds: tuple[float, float] = (1, 3600),
        max_payload_bytes: int = 256 * 1024,
        max_workflow_tasks: int = 1000,
        retry_policy: Mapping[str, Any] | None = None,
        require_lease_holder: bool = True,
        timeouts: Mapping[str, float] | None = None,
        steering: Steering | None = None,
        partition: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.db = db
        #: (this process's place, how many server processes are live): after a collision, batch claims take
        #: the tasks of this process's share of the queue first (`partitioned_batch`).
        self.partition = partition or (lambda: (0, 1))
        #: Concurrency limits and claim policies (app/lifecycle/steering.py): a claim under a limit or a
        #: fair policy is chosen there; without either, `claim` is unchanged.
        self.steering = steering or Steering(db)
        #: Whether a holder's change without its attempt token must come from the lease holder
        #: (`check_lease`; setting `REQUIRE_LEASE_HOLDER`).
        self.require_lease_holder = require_lease_holder
        #: The server's default retry policy (`RETRY_*` settings): what a task's own policy leaves out.
        self.retry_policy: dict[str, Any] = dict(retry_policy or {})
        #: The server's default timeouts (`*_TIMEOUT_SECONDS` settings, by `timeouts.FIELDS` name; 0: none):
        #: what a new task that names none of a kind takes.
        self.timeouts: dict[str, float] = dict(timeouts or {})
        self.clock = clock
        self.claim_spread = claim_spread
        #: Most tasks one `claim_many` may ask for.
        self.max_claim_batch = max_claim_batch
        #: The lease a claim or start takes when the caller names none, and the bounds of any lease.
        self.lease_seconds = lease_seconds
        self.lease_bounds = lease_bounds
        #: Largest free-form value a transition stores (`result`, `output_references`), BSON-encoded.
        self.max_payload_bytes = max_payload_bytes
        #: Most tasks one workflow creation may hold (read by the hierarchy's writes).
        self.max_workflow_tasks = max_workflow_tasks
        #: Tasks this process is claiming, or claimed a moment ago: other claimers here skip them. A
        #: claimed task stays listed for `CLAIM_LINGER_SECONDS` after its commit, because a claimer whose
        #: snapshot predates that commit still sees the task pending and would only collide with it.
        self._claiming: dict[str, float] = {}
        #: The version each lingering claim wrote: a candidate read at a later version (failed or lapsed
        #: since, and claimable again) is no stale snapshot, and is not skipped.
        self._claimed_version: dict[str, int] = {}
        #: Until when claims here spread from their first attempt: a claim collided with another process's
        #: a moment ago (`claim`).
        self._contended_until = 0.0
        # Waits until committed events carry their commit-order position (the event hub's `settle`);
        # without a hub (a bare service in a script or test) events are answered as written.
        self.settle: Settle = settle or _as_written
        # Tells the event hub a change that writes events is under way, so it watches for the commit
        # without pausing (the hub's `writing`); nothing without a hub.
        self.writing: Writing = writing or contextlib.nullcontext

    # ----------------------------------------------------------------- leases

    def lease(self, lease_seconds: float | None) -> float:
        """The lease to take or extend: the default when not given, refused outside the bounds."""
        if lease_seconds is None:
            return self.lease_seconds
        low, high = self.lease_bounds
        if not low <= lease_seconds <= high:
            bound = f"at least {low:g}" if lease_seconds < low else f"at most {high:g}"
            raise Invalid("lease_seconds", f"lease_seconds must be {bound}, got {lease_seconds:g}")
        return float(lease_seconds)

    @staticmethod
    def holder(worker_id: str | None) -> str | None:
        """The worker id a client names as lease holder (None: the task's agent holds it)."""
        if worker_id is None:
            return None
        if not worker_id.strip():
            raise Invalid("worker_id", "worker_id must not be empty")
        if len(worker_id) > MAX_ID_LENGTH:
            raise Invalid(
                "worker_id", f"worker_id must be at most {MAX_ID_LENGTH} characters, got {len(worker_id)}"
            )
        return worker_id

    def start_action(self, lease_seconds: float | None = None, worker_id: str | None = None) -> Action:
        """`state_machine.start` with a lease: the bounds and the holder are checked before any read.

        A start clears the concurrency slots an earlier attempt took (app/lifecycle/steering.py): a
        claim under limits sets the ones it takes in the same write."""
        lease, holder = self.lease(lease_seconds), self.holder(worker_id)

        def start(state: Mapping[str, Any], now: dt.datetime) -> sm.Transition:
            transition = sm.start(state, now, lease_seconds=lease, holder=holder)
            stale = {name: None for name in SLOT_FIELDS.values() if state.get(name) is not None}
            if stale:
                return dataclasses.replace(transition, set_fields={**transition.set_fields, **stale})
            return transition

        return start

    def policy_of(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The task's effective retry policy: its own fields over the server's default."""
        return retry_policy.effective(state.get("retry_policy"), self.retry_policy)

    def fail_action(
        self,
        error: str,
        details: str | None = None,
        is_final: bool = False,
        error_type: str | None = None,
        next_retry_delay: float | None = None,
    ) -> Action:
        """`state_machine.fail` under the task's retry policy (jitter drawn when it applies)."""
        return FailAction(error, details, is_final, error_type, next_retry_delay, self.retry_policy)

    async def lapse(self, task_id: Any, at: dt.datetime | None = None) -> Applied:
        """Return a task whose lease ran out to retrying (failed if its attempts are used up), with its
        STATUS_CHANGED and LEASE_EXPIRED events, in one transaction.

        Several processes may sweep at once: the write compares the version and, again, status, attempts
        and lease_expires_at, so a lapse is applied once, and never to a lease extended or an attempt
        finished meanwhile (the state machine then refuses it: `Refused`, which sweepers skip)."""

        async def work(session: AsyncClientSession) -> Applied:
            now = self.clock() if at is None else at
            state = await state_store.get(self.db, task_id, session)
            if state is None:
                raise NotFound(f"no task with id '{task_id}'", id=task_id)
            if sm.is_expired(state, now):  # expiry wins: the expiry sweep fails it for good
                raise Refused(f"task '{task_id}' has expired", current_status=Status.FAILED)
            policy, draw = self.policy_of(state), random.random()
            transition = _decide(lambda s, t: sm.lapse(s, t, policy=policy, draw=draw), state, now)
            return await self._apply(session, state, transition, now, guard=lease_guard(state))

        applied: Applied = await self._once(None, "lapse", work)
        return applied

    async def time_out(self, task_id: Any, kind: str, at: dt.datetime | None = None) -> Applied:
        """Fire the task's `kind` timeout (`state_machine.time_out`) once its deadline has passed, with its
        STATUS_CHANGED and TASK_TIMED_OUT events, in one transaction.

        Several processes may sweep at once: the write compares the version and, again, the status and the
        deadline read, so a timeout fires once; a task finished, started or re-armed meanwhile is refused
        by the state machine (`Refused`, which sweepers skip). An expired task is left to the expiry."""
        spec = timeouts.BY_NAME[kind]

        async def work(session: AsyncClientSession) -> Applied:
            now = self.clock() if at is None else at
            state = await state_store.get(self.db, task_id, session)
            if state is None:
                raise NotFound(f"no task with id '{task_id}'", id=task_id)
            if sm.is_expired(state, now):  # expiry wins: the expiry sweep fails it for good
                raise Refused(f"task '{task_id}' has expired", current_status=Status.FAILED)
            policy, draw = self.policy_of(state), random.random()
            action: Action = lambda s, t: sm.time_out(s, t, kind, policy=policy, draw=draw)  # noqa: E731
            guard = {key: state.get(key) for key in ("status", "attempts", spec.deadline_field)}
            return await self._apply(session, state, _decide(action, state, now), now, guard=guard)

        applied: Applied = await self._once(None, f"time_out:{kind}", work)
        return applied

    # ----------------------------------------------------------------- public operations

    async def transition(
        self,
        operation: str,
        task_id: str,
        action: Action,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        fenced: bool = False,
        attempt: int | None = None,
        worker_id: str | None = None,
    ) -> Applied:
        """Apply `action` to the task's state, atomically with its events and the dependents it releases.

        `fenced` marks a holder's change (progress, heartbeat, complete, fail): it is refused with
        `LeaseLost` when `attempt` (the holder's token, if given) is stale, when the caller (`worker_id`,
        else the agent) is not the lease holder (`check_lease`), or when the lease has run out."""

        async def work(session: AsyncClientSession) -> Applied:
            now = self.clock()
            state = await state_store.get(self.db, task_id, session)
            if state is None:
                raise NotFound(f"no task with id '{task_id}'", id=task_id)
            check_agent(state.get("agent_name"), f"task '{task_id}'")
            check_version(state, expected_version)
            if operation != "expire" and sm.is_expired(state, now):
                # Reads already show it failed; the sweeper records the failure and its events.
                raise Refused(
                    f"task '{task_id}' has expired (expires_at {state.get('expires_at')}); it is failed",
                    current_status=Status.FAILED,
                )
            if fenced:
                check_lease(state, attempt, now, worker_id, require_holder=self.require_lease_holder)
            applied = await self._apply(session, state, _decide(action, state, now), now)
            return applied

        return await self._once(
            idempotency_key,
            operation,
            work,
            {"task_id": task_id, "action": action, "version": expected_version},
        )

    async def claim(
        self,
        agent_name: str,
        *,
        workflow_id: str | None = None,
        task_kinds: list[str] | None = None,
        idempotency_key: str | None = None,
        lease_seconds: float | None = None,
        worker_id: str | None = None,
        why: list[str] | None = None,
    ) -> Applied | None:
        """Start the most urgent, oldest pending or retrying task of `agent_name`, under a lease of
        `lease_seconds` (default: the lifecycle's) held by `worker_id` (default: the agent).

        None when there is nothing to claim. Pending means released: a task with unmet dependencies is
        `awaiting_dependency`, never `pending`; a retrying task (failed, or its lease ran out) is claimed
        like a pending one, so a worker pool picks retries up by itself. A task whose lease ran out is
        claimable once the sweep has returned it to retrying (within `EXPIRY_SWEEP_SECONDS`).

        Claims spread instead of racing for the head of the queue. Within this process, a candidate being
        claimed is skipped by the other claimers (`_claiming`), so concurrent claims here never conflict
        and still go strictly by priority, then age. Claimers in other processes can still pick the same
        task; the loser's transaction conflicts and is retried, and a retry picks at random among the
        most urgent, oldest candidates of the top priority present (`claim_spread` of them, plus as many
        as this process has claims in flight: the other processes' in-flight claims sit among the same
        few), so two processes rarely collide twice. For `CLAIM_CONTENTION_SECONDS` after such a
        collision, every claim here picks that way from its first attempt: with several processes
        claiming for one agent, taking the head of the queue first made most first attempts collide
        (`bench.writes`, two servers). Age order within a priority is then kept only within that window;
        a lower priority is never handed out while a higher one is claimable.

        Under a concurrency limit, or a fair claim policy, the task is chosen by `Steering.pick` instead
        (app/lifecycle/steering.py): tasks under a full limit are passed over, and when nothing is left,
        the reason is appended to `why` (if given).
        """
        if not agent_name:
            raise Invalid("agent_name", "agent_name must not be empty")
        check_agent(agent_name, f"claiming for agent '{agent_name}': the queue")
        start = self.start_action(lease_seconds, worker_id)
        operation = f"claim:{agent_name}"
        held: set[str] = set()
        attempts = 0
        steered = await self.steering.applies(agent_name)
        picked: list[Pick] = []

        async def work(session: AsyncClientSession) -> Applied | None:
            nonlocal attempts
            attempts += 1
            self._let_go(held)  # a retried attempt lets go of its earlier pick
            for pick in picked:
                self.steering.release(pick, agent_name)
            picked.clear()
            now = self.clock()
            spread = attempts > 1 or time.monotonic() < self._contended_until
            if steered:
                in_flight = [t for t, until in self._claiming.items() if until == math.inf]
                pick = await self.steering.pick(
                    session,
                    agent_name,
                    now,
                    workflow_id=workflow_id,
                    task_kinds=task_kinds,
                    exclude=in_flight,
                    skipped=self._skipped,
                    spread=spread,
                )
                picked.append(pick)
                if pick.state is None:
                    if why is not None and pick.reason:
                        why[:] = [pick.reason]
                    return None
                picks = [pick.state]
            else:
                picks = await self._candidates(session, agent_name, now, workflow_id, task_kinds, spread)
            if not picks:
                return None
            state = random.choice(picks) if spread else picks[0]
            self._hold(held, [state])
            transition = _decide(start, state, now)
            if steered and picked and picked[-1].fields:  # the concurrency slots it took
                transition = dataclasses.replace(
                    transition, set_fields={**transition.set_fields, **picked[-1].fields}
                )
            return await self._apply(session, state, transition, now)

        try:
            for _ in range(CLAIM_BUSY_ROUNDS):
                applied = await self._once(
                    idempotency_key, operation, work, {"workflow_id": workflow_id, "task_kinds": task_kinds}
                )
                busy = [lid for pick in picked for lid in pick.busy]
                if applied is not None or not busy:
                    break
                # Only tasks under limits another claim here is taking a slot of: once it ends, again.
                await self.steering.settled(busy, CLAIM_BUSY_WAIT_SECONDS)
                attempts = 0
        except BaseException:
            self._let_go(held)
            raise
        finally:
            for pick in picked:
                self.steering.release(pick, agent_name)
        if applied is not None and picked:
            await self.steering.served(
                picked[-1], agent_name, as_utc(applied.state.get("started_at")) or self.clock()
            )
        self._linger(held, attempts, [] if applied is None else [applied])
        return applied

    async def claim_many(
        self,
        agent_name: str,
        max_tasks: int,
        *,
        workflow_id: str | None = None,
        task_kinds: list[str] | None = None,
        idempotency_key: str | None = None,
        lease_seconds: float | None = None,
        worker_id: str | None = None,
        why: list[str] | None = None,
    ) -> list[Applied]:
        """Claim up to `max_tasks` of the agent's claimable tasks at once, in claim order (priority, then
        age), each under its own lease: what `max_tasks` calls of `claim` would hand out, in one transaction
        (one compare-and-set per task, one insert of all their events, one commit). Fewer when the queue
        runs dry; none when there is nothing to claim (the reason appended to `why`, if given).

        A batch takes the head of the queue in order, skipping the tasks other claims here are taking. A
        batch that collided with another process's claim is retried as a whole, and (as `claim` does) for
        `CLAIM_CONTENTION_SECONDS` after it every batch here spreads: with P server processes live, it
        reads `CLAIM_BATCH_SPREAD` x P x `max_tasks` candidates and takes those of this process's share of
        the queue (a hash of the id, modulo P), level by level, never going down a priority level while
        another process's share of a higher one is left (`partitioned_batch`). Random picks were not
        enough: a batch of ten drawn from the shared head of the queue met the other process's batch in
        flight almost every time (two servers: 1,215 aborted transactions for 420 batches; a random
        sample of four times the batch: 635).

        Under a concurrency limit or a fair claim policy every task is chosen by `Steering.pick`, so the
        batch is `claim` called up to `max_tasks` times, one transaction each; an idempotency key then
        covers each claim as `<key>#<n>`."""
        if not 1 <= max_tasks <= self.max_claim_batch:
            raise Invalid(
                "max", f"max must be between 1 and MAX_CLAIM_BATCH ({self.max_claim_batch}), got {max_tasks}"
            )
        if not agent_name:
            raise Invalid("agent_name", "agent_name must not be empty")
        check_agent(agent_name, f"claiming for agent '{agent_name}': the queue")
        if await self.steering.applies(agent_name):
            claimed: list[Applied] = []
            for n in range(max_tasks):
                one = await self.claim(
                    agent_name,
                    workflow_id=workflow_id,
                    task_kinds=task_kinds,
                    idempotency_key=None if idempotency_key is None else f"{idempotency_key}#{n}",
                    lease_seconds=lease_seconds,
                    worker_id=worker_id,
                    why=why if not claimed else None,
                )
                if one is None:
                    break
                claimed.append(one)
            return claimed
        start = self.start_action(lease_seconds, worker_id)
        held: set[str] = set()
        attempts = 0

        async def work(session: AsyncClientSession) -> list[Applied]:
            nonlocal attempts
            attempts += 1
            self._let_go(held)  # a retried attempt lets go of its earlier picks
            now = self.clock()
            spread = attempts > 1 or time.monotonic() < self._contended_until
            share = self.partition() if spread else (0, 1)
            window = max_tasks * CLAIM_BATCH_SPREAD * share[1] if spread else max_tasks
            candidates = await self._candidates(
                session, agent_name, now, workflow_id, task_kinds, spread=False, batch=window
            )
            picks = partitioned_batch(candidates, max_tasks, share) if spread else candidates[:max_tasks]
            self._hold(held, picks)
            return await self._apply_starts(session, picks, start, now)

        try:
            claimed = await self._once(
                idempotency_key,
                f"claim_many:{agent_name}",
                work,
                {"max": max_tasks, "workflow_id": workflow_id, "task_kinds": task_kinds},
            )
        except BaseException:
            self._let_go(held)
            raise
        self._linger(held, attempts, claimed)
        if not claimed and why is not None:
            why[:] = ["no pending task with its dependencies met is waiting for this agent"]
        return claimed

    def _hold(self, held: set[str], states: list[Doc]) -> None:
        """Mark a claim's picks as in flight: the other claimers here skip them, whatever their version."""
        for state in states:
            held.add(state["_id"])
            self._claiming[state["_id"]] = math.inf
            self._claimed_version.pop(state["_id"], None)

    def _let_go(self, held: set[str]) -> None:
        """Forget the picks of a claim attempt that is retried or failed: the claimers here may take them."""
        for task_id in held:
            self._claiming.pop(task_id, None)
        held.clear()

    def _linger(self, held: set[str], attempts: int, claimed: list[Applied]) -> None:
        """After a claim's transaction: its picks stay skipped here for `CLAIM_LINGER_SECONDS` (those it
        started, only while what a claimer reads is their image before the claim), and a claim that had to
        run more than once (it collided with another process's: claims here skip each other's) makes every
        claim here spread for `CLAIM_CONTENTION_SECONDS`."""
        if attempts > 1:
            self._contended_until = time.monotonic() + CLAIM_CONTENTION_SECONDS
        linger = time.monotonic() + CLAIM_LINGER_SECONDS
        versions = {item.state["_id"]: version_of(item.state) for item in claimed}
        for task_id in held:
            self._claiming[task_id] = linger
            if task_id in versions:
                self._claimed_version[task_id] = versions[task_id]

    def _skipped(self, state: Mapping[str, Any]) -> bool:
        """Whether a candidate is being claimed here, or is the stale image of a claim made here."""
        task_id = state["_id"]
        if task_id not in self._claiming:
            return False
        claimed = self._claimed_version.get(task_id)
        return claimed is None or version_of(state) <= claimed

    async def _candidates(
        self,
        session: AsyncClientSession,
        agent_name: str,
        now: dt.datetime,
        workflow_id: str | None,
        task_kinds: list[str] | None,
        spread: bool,
        batch: int = 0,
    ) -> list[Doc]:
        """The first claimable task, or (`spread`) up to `claim_spread` plus as many as claims in flight
        here of them, all of the top priority present, skipping those this process is claiming right now;
        or (`batch` > 0) the first `batch` claimable tasks in claim order, whatever their priorities.

        The query skips the tasks being claimed when it is sent; claims that start while it runs are
        skipped afterwards, so it reads one candidate more for each claim in flight (about as many start
        meanwhile), and a few more for stale images of recent claims."""
        now_mono = time.monotonic()
        for task_id in [t for t, until in self._claiming.items() if until < now_mono]:
            del self._claiming[task_id]
            self._claimed_version.pop(task_id, None)
        # Claims in flight are left out by the query. Lingering ones are read (one may be claimable again)
        # and sorted out by `_skipped`, but only the few whose commit is not in the query's snapshot yet
        # can come back: the others are `in_progress` there. So the limit leaves room for a few of them
        # (`CLAIM_STALE_SLACK`), not for all: with hundreds lingering at a high claim rate, reading one
        # candidate per lingering claim cost more than everything else in a claim. When a snapshot holds
        # more stale ones than that, the loop below reads further.
        in_flight = [t for t, until in self._claiming.items() if until == math.inf]
        wanted = batch or (self.claim_spread + len(in_flight) if spread else 1)
        lingering = len(self._claiming) - len(in_flight)
        # (A batch's claims in flight are tasks, ten or more a claim: one more read for each of those
        # claims would read a page per claim; a batch short of `wanted` reads further instead.)
        limit = (
            wanted
            + min(len(in_flight), wanted if batch else len(in_flight))
            + min(lingering, CLAIM_STALE_SLACK)
        )
        while True:
            docs = await state_store.claimable(
                self.db,
                agent_name,
                now,
                workflow_id=workflow_id,
                task_kinds=task_kinds,
                exclude=in_flight,
                limit=limit,
                session=session,
            )
            picks: list[Doc] = []
            for state in docs:
                if self._skipped(state) or sm.is_expired(state, now):  # (an ISO-string expiry)
                    continue
                if any(kind.final for kind in sm.due_timeouts(state, now)):  # the sweep fails it
                    continue
                if not sm.has_attempts_left(state):  # (its max_attempts was lowered since it failed)
                    continue
                if not batch and picks and state.get("priority_rank") != picks[0].get("priority_rank"):
                    break
                picks.append(state)
                if len(picks) >= wanted:
                    break
            if (len(picks) >= wanted if batch else picks) or len(docs) < limit:  # enough, or nothing more
                return picks
            limit *= 4  # every candidate read was taken or expired meanwhile: look further

    # ----------------------------------------------------------------- inside a transaction

    async def _apply(
        self,
        session: AsyncClientSession,
        state: Doc,
        transition: sm.Transition,
        now: dt.datetime,
        guard: Doc | None = None,
    ) -> Applied:
        """Write `transition` with compare-and-set, its events, and release the dependents it unblocks."""
        free_form = [*transition.set_fields.items(), *(i for _, p in transition.events for i in p.items())]
        for name, value in free_form:
            if isinstance(value, dict | list):  # free-form JSON (`result`…): bounded before it is written
                size = encoded_size({"v": value})
                if size > self.max_payload_bytes:
                    raise Invalid(
                        name,
                        f"{name} is {size} bytes, more than MAX_PAYLOAD_BYTES ({self.max_payload_bytes})",
                    )
        updated, events = await self._write(session, state, transition, now, guard)
        if events:
            await append_events(self.db, session, events)
        if transition.changes_status:
            events += await self.release_dependents(session, [updated["_id"]], now)
        return Applied(state=updated, events=events)

    async def _write(
        self,
        session: AsyncClientSession,
        state: Doc,
        transition: sm.Transition,
        now: dt.datetime,
        guard: Doc | None = None,
    ) -> tuple[Doc, list[Doc]]:
        """Write `transition`'s fields with compare-and-set; the state after it and its events, not yet
        appended."""
        new_version = version_of(state) + 1
        updated = await state_store.update_if_version(
            self.db, state, transition.set_fields, new_version, session, guard=guard
        )
        if updated is None:  # changed since we read it (outside a transaction, e.g. by another program)
            raise Conflict(f"task '{state['_id']}' changed concurrently; read it again and retry")
        workflow_id = await self.workflow_id(session, updated)
        events = [
            event_doc(kind, updated["_id"], workflow_id, updated.get("agent_name"), payload, now)
            for kind, payload in transition.events
        ]
        return updated, events

    async def _apply_starts(
        self, session: AsyncClientSession, picks: list[Doc], start: Action, now: dt.datetime
    ) -> list[Applied]:
        """Start every task of `picks` in this transaction: one command for all their compare-and-sets,
        one insert of all their events, one query for the dependents any of them releases."""
        transitions = [(state, _decide(start, state, now)) for state in picks]
        updated = await state_store.update_all_if_version(
            self.db, [(state, t.set_fields, version_of(state) + 1) for state, t in transitions], session
        )
        if updated is None:  # changed since we read them (outside a transaction, e.g. by another program)
            raise Conflict("a task of the batch changed concurrently; claim again")
        written: list[tuple[Doc, list[Doc]]] = []
        for after, (_, transition) in zip(updated, transitions, strict=True):
            workflow_id = await self.workflow_id(session, after)
            agent = after.get("agent_name")
            written.append(
                (
                    after,
                    [
                        event_doc(kind, after["_id"], workflow_id, agent, p, now)
                        for kind, p in transition.events
                    ],
                )
            )
        events = [event for _, own in written for event in own]
        if events:
            await append_events(self.db, session, events)
        applied = [Applied(state=updated, events=own) for updated, own in written]
        # A dependent waiting for a start (`statusExpected: in_progress`) is released with the claim: its
        # events go with the first task of the batch it waits for.
        for waiting, released in await self._release(session, [item.state["_id"] for item in applied], now):
            waits_for = {d.get("task_id") for d in waiting.get("dependencies") or [] if isinstance(d, dict)}
            owner = next((item for item in applied if item.state["_id"] in waits_for), applied[-1])
            owner.events.extend(released)
        return applied

    async def release_dependents(
        self, session: AsyncClientSession, task_ids: list[Any], now: dt.datetime
    ) -> list[Doc]:
        """Move to `pending` every task awaiting one of `task_ids` whose dependencies are now all met; the
        events written."""
        return [event for _, events in await self._release(session, task_ids, now) for event in events]

    async def _release(
        self, session: AsyncClientSession, task_ids: list[Any], now: dt.datetime
    ) -> list[tuple[Doc, list[Doc]]]:
        """`release_dependents`, by dependent: (its state before, the events of its release)."""
        waiting = await state_store.awaiting(self.db, task_ids, session) if task_ids else []
        if not waiting:
            return []
        dep_ids = {
            d.get("task_id") for doc in waiting for d in doc.get("dependencies") or [] if isinstance(d, dict)
        }
        statuses = await state_store.statuses(self.db, dep_ids, session)
        released: list[tuple[Doc, list[Doc]]] = []
        for doc in waiting:
            if sm.dependencies_met(doc, statuses):
                applied = await self._apply(session, doc, sm.release(doc, now), now)
                released.append((doc, applied.events))
        return released

    async def workflow_id(self, session: AsyncClientSession | None, state: Mapping[str, Any]) -> str | None:
        """The meta task whose tree holds this task: stored on states we wrote, looked up for foreign ones."""
        if state.get("workflow_id") or state.get("task_kind") == TaskKind.STANDALONE:
            return state.get("workflow_id")
        return await task_store.workflow_of(self.db, state["_id"], session)

    async def _once(
        self,
        key: str | None,
        operation: str,
        work: Callable[[AsyncClientSession], Awaitable[Any]],
        payload: Any = None,
    ) -> Any:
        """Run `work` in a transaction, once per idempotency key; a replay answers the state as it was.

        Every lifecycle change commits here, once: so this is where the claims, lease lapses, retries and
        expiries are counted (`count_committed`), after the commit and never for a replay."""
        replayed = False

        def replay(answer: Mapping[str, Any], events: list[Doc]) -> Applied | list[Applied]:
            nonlocal replayed
            replayed = True
            if "states" not in answer:
                return Applied(state=answer["state"], events=events)
            batch, rest = [], iter(events)  # a batch: each task's events, by the counts kept
            for state, count in zip(answer["states"], answer["event_counts"], strict=True):
                batch.append(Applied(state=state, events=[next(rest) for _ in range(count)]))
            return batch

        with self.writing():
            applied = await idempotency.run_once(
                self.db,
                key,
                operation,
                work,
                encode=lambda applied: _answer(applied) if applied else None,  # nothing applied: keep nothing
                decode=replay,
                clock=self.clock,
                payload=payload,
            )
            items = applied if isinstance(applied, list) else [] if applied is None else [applied]
            if not replayed:
                for item in items:
                    count_committed(operation, item)
            if items:
                await self.settle([event for item in items for event in item.events])
        return applied


def spread_batch(candidates: list[Doc], count: int) -> list[Doc]:
    """`count` of `candidates` (in claim order): every priority level that fits whole, then a random sample
    of the first level that does not, in claim order. No task of a level is passed over for a lower one."""
    picks: list[Doc] = []
    for _, level in itertools.groupby(candidates, key=lambda state: state.get("priority_rank")):
        tasks = list(level)
        room = count - len(picks)
        if len(tasks) > room:
            chosen = {id(state) for state in random.sample(tasks, room)}
            picks += [state for state in tasks if id(state) in chosen]
            break
        picks += tasks
    return picks


def partitioned_batch(candidates: list[Doc], count: int, share: tuple[int, int]) -> list[Doc]:
    """Up to `count` of `candidates` (in claim order) in this process's `share` (place, processes) of the
    queue, level by level: a level holding another share's tasks is the last one taken from, so no task of
    a priority level is passed over for a lower one. When the share holds none of the top level read, a
    random sample (`spread_batch`).

    A process that died still counts until its registration lapses (PROCESS_LAPSE_SECONDS): while batches
    spread, its share waits for the others' batches to run short of their own tasks, at most that long."""
    place, processes = share
    if processes <= 1:
        return spread_batch(candidates, count)
    picks: list[Doc] = []
    for _, level in itertools.groupby(candidates, key=lambda state: state.get("priority_rank")):
        tasks = list(level)
        mine = [state for state in tasks if zlib.crc32(str(state["_id"]).encode()) % processes == place]
        picks += mine[: count - len(picks)]
        if len(mine) < len(tasks) or len(picks) >= count:
            break
    return picks or spread_batch(candidates, count)


def count_committed(operation: str, applied: Applied) -> None:
    """Count a committed change for `/metrics` (`app/instruments.py`), by the task's agent: a claim, a
    lease that lapsed, an expiry, a timeout, and every task it sent to retrying (a failure, a lapse, an
    attempt's timeout)."""
    meters = instruments.get()
    agent = meters.agents(applied.state.get("agent_name"))
    if operation.startswith(("claim:", "claim_many:")):
        meters.claims.labels(agent).inc()
    elif operation == "lapse":
        meters.lease_lapses.labels(agent).inc()
    elif operation == "expire":
        meters.expiries.labels(agent).inc()
    elif operation.startswith("time_out:"):  # `time_out:<kind>`: the kinds are the server's few
        meters.timeouts.labels(agent, operation.removeprefix("time_out:")[:32]).inc()
    for event in applied.events:
        if (
            event.get("type") == EventType.STATUS_CHANGED
            and event.get("payload", {}).get("to_status") == Status.RETRYING
        ):
            meters.retries.labels(meters.agents(event.get("agent_id"))).inc()


def _decide(action: Action, state: Mapping[str, Any], now: dt.datetime) -> sm.Transition:
    """Run the pure state machine and turn its refusals into service errors."""
    try:
        return action(state, now)
    except sm.TransitionRefused as exc:
        raise Refused(exc.message, current_status=exc.current_status) from exc
    except sm.InvalidInput as exc:
        raise Invalid(exc.field, exc.message) from exc


def _answer(applied: Applied | list[Applied]) -> dict[str, Any]:
    """What an idempotency key keeps of a change (`idempotency.run_once`): the state(s), the event ids."""
    if isinstance(applied, Applied):
        return {"state": applied.state, "event_ids": [e["_id"] for e in applied.events]}
    return {
        "states": [item.state for item in applied],
        "event_counts": [len(item.events) for item in applied],
        "event_ids": [e["_id"] for item in applied for e in item.events],
    }
