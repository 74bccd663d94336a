"""Concurrency limits and fair claims: which claimable task a claim may take, and the slot guard.

A concurrency limit caps the tasks `in_progress` under a key: an agent ("agent:<name>"), a workflow
("workflow:<id>") or a task's `concurrency_key` ("key:<k>"). The running count is counted inside the
claim's transaction from the tasks themselves (a count of index keys), never kept as a counter: a task
that completes, fails, lapses or is cancelled frees its slot in the transaction that moves it, and no
slot can leak. A claim policy per agent picks among the claimable tasks: FIFO (most urgent, then
oldest: the default), FAIR_BY_WORKFLOW or FAIR_BY_KEY (among the groups with ready work of the top
priority not blocked by a limit, the one served least recently, then its oldest task).

Invariants:
- MUST: a claim never takes a task while a limit over it has `max` tasks in progress, even with claims in
  several processes. A limit has slots 0..max-1; a task claimed under it records the slot it took
  (`slot_<scope>`), and a slot is taken while a task in progress holds it (read from index keys in the
  claim's snapshot: no counter, nothing to free). A claim takes a slot free in its snapshot and writes
  that slot's guard document (`concurrency_slots`, "<limit>#<n>"): two overlapping claims taking the
  same slot write-conflict and one chooses again, while claims taking different slots run in parallel.
  A task in progress holding no slot in 0..max-1 (started before the limit existed, or by `startTask`, or
  above a lowered max) takes a slot from the bottom: with s such tasks, only slots s..max-1 are handed
  out. So each slot is held by at most one task, and tasks in progress never outnumber `max`.
- MUST: `Lifecycle.start_action` clears the slot fields on every start; a claim under limits sets them in
  the same write. A stale slot from an earlier attempt is never taken for a held one.
- MUST: limits (which exist, and their `max`) are cached for `refresh_seconds` (setting
  CONCURRENCY_LIMITS_REFRESH_SECONDS): a limit set or changed through another process binds claims here
  at most that long after (0: every claim reads them; through this process: at once).
- MUST: a start rate limit (N starts per window of 1 s, 1 min or 1 h, fixed windows) never lets more than
  N claims start under it in one window, across processes: each claim inserts the window's n-th start
  document (`start_windows`, "<limit>@<window>#<n>", n free in its snapshot and below N) in its
  transaction, so two claims taking the same n conflict. The documents are the count: nothing to reset.
- MUST: claims in this process take different slots (`_in_flight_slots`); when the free slots of a limit
  are all being taken here, a claim passes over its tasks, or waits for one of those claims to end and
  chooses again, outside any transaction (claims racing for one slot would only write-conflict and retry,
  over and over: with 20 claimers on a loaded machine they ran into MONGODB_TIMEOUT_SECONDS).
- MUST: with no limit and a FIFO policy, a claim takes the path it took before limits existed (no extra
  command): the checks cost nothing where nothing is configured.

Tuning (not invariants): `max_groups` bounds how many groups one claim probes per priority; a fair claim
prefers a group no claim here is serving right now; a slot is drawn at random among the free ones, so
claims in two processes rarely collide on one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import OperationFailure

from app.domain import MAX_ID_LENGTH
from app.lifecycle import state_machine as sm
from app.lifecycle.errors import Invalid, check_agent
from app.store import states as state_store
from app.store import steering as store
from app.store.types import Db, Doc


class Scope(StrEnum):
    """What a concurrency limit counts over."""

    AGENT = "agent"
    WORKFLOW = "workflow"
    KEY = "key"


def check_own(scope: Scope, key: str) -> None:
    """An agent-bound caller sets limits, rates and policies for its own agents only: a workflow's or a
    concurrency key's limit spans agents, so it is no agent's (`NotYourAgent`, as for any write)."""
    what = (
        f"the agent limit '{key}'"
        if scope is Scope.AGENT
        else f"the {scope.value} limit '{key}' (any agent's)"
    )
    check_agent(key if scope is Scope.AGENT else None, what)


class Policy(StrEnum):
    """How an agent's claims choose among its claimable tasks."""

    FIFO = "FIFO"
    FAIR_BY_WORKFLOW = "FAIR_BY_WORKFLOW"
    FAIR_BY_KEY = "FAIR_BY_KEY"


#: MongoDB's code for a write that collides with another open transaction's, and the most a claim that
#: collided on a limit waits before its transaction is retried.
WRITE_CONFLICT = 112
CONFLICT_BACKOFF_SECONDS = 0.02
#: Highest `max` a limit may have.
MAX_LIMIT = 1_000_000
#: How many tasks in claim order a FIFO claim under limits looks at before it probes the groups.
FIFO_LOOKAHEAD = 8
#: How many tasks of one group a claim looks at past a head blocked by another group's limit.
GROUP_LOOKAHEAD = 8
#: How far a claim queue (`queue`: GraphQL `claimQueue`, REST `GET /claim-queues/{agent_name}`) counts the
#: tasks of one agent or group before it stops (its `capped` says so).
QUEUE_COUNT_CAP = 10_000


@dataclass(frozen=True)
class LimitView:
    """A limit and how many tasks run under it now."""

    scope: Scope
    key: str
    max: int
    running: int


@dataclass(frozen=True)
class GroupQueue:
    """One workflow's (or concurrency key's) share of an agent's queue."""

    group: str | None
    ready: int
    running: int
    limit: int | None


@dataclass(frozen=True)
class AgentQueue:
    """An agent's queue: tasks claimable now, those of them under a full limit, and per group."""

    agent_name: str
    policy: Policy
    ready: int
    running: int
    limit: int | None
    waiting_on_limits: int
    groups: list[GroupQueue]
    capped: bool


@dataclass(frozen=True)
class RateView:
    """A start rate limit and its current window."""

    scope: Scope
    key: str
    max: int
    per_seconds: int
    started: int
    next_window_at: dt.datetime


@dataclass(frozen=True)
class LimitSample:
    """A concurrency limit with the tasks in progress and claimable now under it (`/metrics`)."""

    scope: Scope
    key: str
    max: int
    running: int
    ready: int


@dataclass(frozen=True)
class SteeringSample:
    """What `/metrics` shows of the limits: the first limits and rates by id (`cap` of each) and how many
    of each are set in all."""

    limits: list[LimitSample]
    rates: list[RateView]
    limits_set: int
    rates_set: int


@dataclass
class Pick:
    """What a claim attempt chose: the task (None: nothing eligible) and why not, when nothing."""

    state: Doc | None
    limits: list[str] = field(default_factory=list)
    group: Any = None
    reason: str | None = None
    #: Nothing was eligible but tasks under limits another claim here is taking a slot of: try again once
    #: those end (`Steering.settled`).
    busy: list[str] = field(default_factory=list)
    #: The start rate limits over the pick: limit id → (window, the starts taken in it in the snapshot).
    rates: dict[str, tuple[int, set[int]]] = field(default_factory=dict)
    #: The start number taken in each rate limit's window.
    rate_slots: dict[str, int] = field(default_factory=dict)
    #: The slot taken under each limit (limit id → slot), and the state fields recording them.
    slots: dict[str, int] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    #: The slots held under each limit in the claim's snapshot (read when choosing, used by the guard).
    held: dict[str, list[Any]] = field(default_factory=dict)
    #: Each limit's `max` and each rate limit's (max, per seconds) as the choice saw them: what the guard
    #: goes by for a limit the cache no longer holds (deleted while the claim awaited MongoDB).
    maxima: dict[str, int] = field(default_factory=dict)
    rate_defs: dict[str, tuple[int, int]] = field(default_factory=dict)


def check_key(value: str, field_name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(field_name, f"{field_name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise Invalid(
            field_name, f"{field_name} must be at most {MAX_ID_LENGTH} characters, got {len(value)}"
        )
    if store.SEP in value:
        raise Invalid(field_name, f"{field_name} must not contain control characters")
    return value


class Steering:
    """The limits and policies of one database, cached, and the claim's choice under them."""

    def __init__(
        self,
        db: Db,
        *,
        refresh_seconds: float = 1.0,
        max_groups: int = 64,
        max_limits: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.refresh_seconds = refresh_seconds
        self.max_groups = max_groups
        self.max_limits = max_limits
        self._clock = clock
        self._loaded_at = -float("inf")
        self._limits: dict[str, int] = {}
        self._policies: dict[str, Policy] = {}
        self._scoped: set[str] = set()  # the scopes with a workflow or key limit somewhere
        #: Start rate limits: limit id → (max starts, window seconds).
        self._rates: dict[str, tuple[int, int]] = {}
        #: Limit ids held by claims in flight in this process (see the module's tuning notes).
        self._in_flight: Counter[str] = Counter()
        #: When a fair claim here last served each (agent, group): the stored record may lag behind.
        self._served_here: dict[tuple[str, Any], dt.datetime] = {}
        #: The slots claims in flight here are taking, per limit.
        self._in_flight_slots: dict[str, set[int]] = {}
        #: Set when the claim in flight under a limit ends (one event per limit in flight).
        self._ended: dict[str, asyncio.Event] = {}
        #: Groups (agent, group) claims in flight here are serving.
        self._serving: Counter[tuple[str, Any]] = Counter()

    # ------------------------------------------------------------------ configuration

    async def refresh(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._loaded_at < self.refresh_seconds:
            return
        limits = await store.all_limits(self.db, self.max_limits)
        policies = await store.all_policies(self.db, self.max_limits)
        self._limits = {d["_id"]: int(d["max"]) for d in limits if isinstance(d.get("max"), int)}
        self._policies = {}
        for doc in policies:
            try:
                self._policies[doc["_id"]] = Policy(str(doc.get("policy")))
            except ValueError:
                continue
        rates = await store.all_rates(self.db, self.max_limits)
        self._rates = {
            d["_id"]: (int(d["max"]), int(d["per_seconds"]))
            for d in rates
            if isinstance(d.get("max"), int) and isinstance(d.get("per_seconds"), int)
        }
        self._scoped = {lid.partition(":")[0] for lid in (*self._limits, *self._rates)}
        self._loaded_at = now

    def policy(self, agent_name: str) -> Policy:
        return self._policies.get(agent_name, Policy.FIFO)

    async def applies(self, agent_name: str) -> bool:
        """Whether a claim for this agent must take the steered path (a limit or a fair policy)."""
        await self.refresh()
        if self.policy(agent_name) is not Policy.FIFO:
            return True
        agent = store.limit_id("agent", agent_name)
        return bool(self._scoped - {"agent"}) or agent in self._limits or agent in self._rates

    async def set_limit(self, scope: Scope, key: str, maximum: int, now: dt.datetime) -> LimitView:
        check_key(key, "key")
        check_own(scope, key)
        if not 1 <= maximum <= MAX_LIMIT:
            raise Invalid("max", f"max must be between 1 and {MAX_LIMIT}, got {maximum}")
        lid = store.limit_id(scope.value, key)
        if lid not in self._limits and await store.count_limits(self.db) >= self.max_limits:
            raise Invalid(
                "key", f"there are already {self.max_limits} concurrency limits (MAX_CONCURRENCY_LIMITS)"
            )
        await store.set_limit(self.db, scope.value, key, maximum, now)
        await self.refresh(force=True)
        return LimitView(scope, key, maximum, await store.running(self.db, scope.value, key))

    async def clear_limit(self, scope: Scope, key: str) -> bool:
        check_key(key, "key")
        check_own(scope, key)
        cleared = await store.clear_limit(self.db, scope.value, key)
        await self.refresh(force=True)
        return cleared

    async def set_policy(self, agent_name: str, policy: Policy, now: dt.datetime) -> None:
        check_key(agent_name, "agentName")
        check_own(Scope.AGENT, agent_name)
        await store.set_policy(self.db, agent_name, policy.value, now)
        await self.refresh(force=True)

    async def policy_of(self, agent_name: str) -> Policy:
        """The agent's claim policy as stored now (FIFO: none set, or a value this server does not know,
        as a claim reads it)."""
        check_key(agent_name, "agentName")
        stored = await store.policy(self.db, agent_name)
        try:
            return Policy(stored) if stored is not None else Policy.FIFO
        except ValueError:
            return Policy.FIFO

    async def limits(self) -> list[LimitView]:
        """Every limit with its running count (read afresh)."""
        await self.refresh(force=True)
        out = []
        for lid, maximum in sorted(self._limits.items()):
            scope, _, key = lid.partition(":")
            out.append(LimitView(Scope(scope), key, maximum, await store.running(self.db, scope, key)))
        return out

    async def queue(self, agent_name: str, now: dt.datetime, by: str, cap: int) -> AgentQueue:
        """The agent's queue depth, in total and per group (`by`: "workflow_id" or "concurrency_key"; the
        first `max_groups` groups with ready work, each count stopping at `cap`)."""
        check_key(agent_name, "agentName")
        await self.refresh(force=True)
        gate = _gate(now)
        ready = await store.count_claimable(self.db, agent_name, gate, {}, cap)
        groups: dict[Any, GroupQueue] = {}
        async for rank in store.priorities(self.db, agent_name, gate):
            heads = await store.group_heads(self.db, agent_name, by, rank, gate, (), self.max_groups)
            for head in heads:
                group = head.get(by)
                if group in groups or len(groups) >= self.max_groups:
                    continue
                scope = _scope_of(by)
                groups[group] = GroupQueue(
                    group=group,
                    ready=await store.count_claimable(self.db, agent_name, gate, {by: group}, cap),
                    running=0 if group is None else await store.running(self.db, scope, group),
                    limit=None if group is None else self._limits.get(store.limit_id(scope, group)),
                )
        agent_limit = self._limits.get(store.limit_id("agent", agent_name))
        running = await store.running(self.db, "agent", agent_name)
        if agent_limit is not None and running >= agent_limit:
            waiting = ready
        else:
            waiting = sum(g.ready for g in groups.values() if g.limit is not None and g.running >= g.limit)
        return AgentQueue(
            agent_name=agent_name,
            policy=self.policy(agent_name),
            ready=ready,
            running=running,
            limit=agent_limit,
            waiting_on_limits=waiting,
            groups=list(groups.values()),
            capped=ready >= cap or len(groups) >= self.max_groups,
        )

    # ------------------------------------------------------------------ the claim

    def limit_ids(self, state: Mapping[str, Any], known: Mapping[str, Any] | None = None) -> list[str]:
        """The limits (known here: concurrency limits, or those of `known`) a task runs under."""
        known = self._limits if known is None else known
        out = []
        for scope, name in store.SCOPE_FIELDS.items():
            value = state.get(name)
            if isinstance(value, str) and value:
                lid = store.limit_id(scope, value)
                if lid in known:
                    out.append(lid)
        return out

    async def set_rate(
        self, scope: Scope, key: str, maximum: int, per_seconds: int, now: dt.datetime
    ) -> RateView:
        """Set (or change) a start rate limit; the limit as stored, with its current window."""
        check_key(key, "key")
        check_own(scope, key)
        if not 1 <= maximum <= MAX_LIMIT:
            raise Invalid("max", f"max must be between 1 and {MAX_LIMIT}, got {maximum}")
        lid = store.limit_id(scope.value, key)
        # As for concurrency limits: each process loads at most `max_limits` of them (`refresh`), so one
        # more would be stored and never enforced.
        if lid not in self._rates and await store.count_rates(self.db) >= self.max_limits:
            raise Invalid(
                "key", f"there are already {self.max_limits} start rate limits (MAX_CONCURRENCY_LIMITS)"
            )
        await store.set_rate(self.db, scope.value, key, maximum, per_seconds, now)
        await self.refresh(force=True)
        window = _window(now, per_seconds)
        started = len(await store.window_starts(self.db, lid, window, maximum))
        return RateView(scope, key, maximum, per_seconds, started, _window_end(window, per_seconds))

    async def clear_rate(self, scope: Scope, key: str) -> bool:
        check_key(key, "key")
        check_own(scope, key)
        cleared = await store.clear_rate(self.db, scope.value, key)
        await self.refresh(force=True)
        return cleared

    async def rates(self, now: dt.datetime) -> list[RateView]:
        """Every start rate limit, with the starts of its current window and when the next one opens."""
        await self.refresh(force=True)
        out = []
        for lid, (maximum, per) in sorted(self._rates.items()):
            scope, _, key = lid.partition(":")
            window = _window(now, per)
            started = len(await store.window_starts(self.db, lid, window, maximum))
            out.append(RateView(Scope(scope), key, maximum, per, started, _window_end(window, per)))
        return out

    async def sample(self, now: dt.datetime, cap: int, seconds: float) -> SteeringSample:
        """The limits' visible state for `/metrics`, read afresh within `seconds` in all: the first `cap`
        concurrency limits and start rate limits (by scope, then key) with, for each limit, the tasks in
        progress and claimable now under it, and for each rate limit the starts of its current window.

        At most three commands: one aggregation for the limits and rates set (`store.sample_settings`), one
        over the tasks under the listed limits (`store.sample_counts`: it reads their unfinished tasks, so
        `/metrics` samples it at most every METRICS_SAMPLE_SECONDS), one over the listed rates' windows
        (`store.sample_starts`); the last two only when there is such a limit."""
        with store.sampling(seconds):
            limit_docs, limits_set, rate_docs, rates_set = await store.sample_settings(self.db, cap)
            limits: list[tuple[Scope, str, int]] = []
            for doc in limit_docs:
                name, _, key = str(doc["_id"]).partition(":")
                if name in _SCOPES and isinstance(doc.get("max"), int):  # foreign documents are left out
                    limits.append((Scope(name), key, int(doc["max"])))
            keys: dict[str, list[str]] = {}
            for scope, key, _ in limits:
                keys.setdefault(scope.value, []).append(key)
            counts = await store.sample_counts(self.db, keys, now)
            rates: list[tuple[str, int, int]] = []
            for doc in rate_docs:
                lid, maximum, per = str(doc["_id"]), doc.get("max"), doc.get("per_seconds")
                if (
                    lid.partition(":")[0] in _SCOPES
                    and isinstance(maximum, int)
                    and isinstance(per, int)
                    and per > 0
                ):
                    rates.append((lid, maximum, per))
            starts = await store.sample_starts(self.db, {lid: _window(now, per) for lid, _, per in rates})
        return SteeringSample(
            limits=[
                LimitSample(scope, key, maximum, *counts.get(store.limit_id(scope.value, key), (0, 0)))
                for scope, key, maximum in limits
            ],
            rates=[
                RateView(
                    Scope(lid.partition(":")[0]),
                    lid.partition(":")[2],
                    maximum,
                    per,
                    starts.get(lid, 0),
                    _window_end(_window(now, per), per),
                )
                for lid, maximum, per in rates
            ],
            limits_set=limits_set,
            rates_set=rates_set,
        )

    def release(self, pick: Pick | None, agent_name: str) -> None:
        """A claim attempt ended (committed, retried or failed): its slots are no longer in flight here."""
        if pick is None or pick.state is None:
            return
        for lid, slot in pick.slots.items():
            self._in_flight_slots.get(lid, set()).discard(slot)
            if not self._in_flight_slots.get(lid, True):
                del self._in_flight_slots[lid]
        pick.slots = {}
        for rid, number in pick.rate_slots.items():
            self._in_flight_slots.get(_RATE + rid, set()).discard(number)
        pick.rate_slots = {}
        for lid in [*pick.limits, *(_RATE + rid for rid in pick.rates)]:
            self._in_flight[lid] -= 1
            if self._in_flight[lid] <= 0:
                del self._in_flight[lid]
                ended = self._ended.pop(lid, None)
                if ended is not None:
                    ended.set()
        key = (agent_name, pick.group)
        self._serving[key] -= 1
        if self._serving[key] <= 0:
            del self._serving[key]

    async def pick(
        self,
        session: AsyncClientSession,
        agent_name: str,
        now: dt.datetime,
        *,
        workflow_id: str | None,
        task_kinds: list[str] | None,
        exclude: list[str],
        skipped: Callable[[Mapping[str, Any]], bool],
        spread: bool,
    ) -> Pick:
        """Choose the task to claim under the limits and the agent's policy, and take its slots (the
        guard write). The caller releases the answer with `release` once the attempt ends."""
        for _ in range(3):
            pick = await self._choose(
                session, agent_name, now, workflow_id, task_kinds, exclude, skipped, spread
            )
            if pick.state is None:
                return pick
            try:
                guarded = await self._guard(session, pick)
            except BaseException:  # e.g. a write conflict with another claim: the caller never sees it
                self.release(pick, agent_name)
                raise
            if guarded:
                return pick
            self.release(pick, agent_name)  # a limit was lowered meanwhile: choose again under it
        return Pick(None, reason="concurrency limits changed while claiming; try again")

    async def served(self, pick: Pick | None, agent_name: str, now: dt.datetime) -> None:
        """Record that a fair claim served its group, once it committed. Not in the claim's transaction:
        every claim of a group would write one document, and claims of the same group would conflict;
        a lost record only makes the rotation a little less even."""
        if pick is None or pick.state is None or self.policy(agent_name) is Policy.FIFO:
            return
        self._served_here[(agent_name, pick.group)] = now
        await store.mark_served(self.db, agent_name, pick.group, now, None)

    async def settled(self, busy: list[str], within: float) -> None:
        """Wait (at most `within` seconds) until one of the claims in flight here under these limits ends."""
        events = [self._ended[lid] for lid in busy if lid in self._ended]
        if not events:
            return
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _count(
        self,
        session: AsyncClientSession,
        lid: str,
        maximum: int,
        counts: dict[str, int],
        held: dict[str, list[Any]],
    ) -> None:
        """The slots held under a limit in this snapshot (up to max + 1 of them), and so its count."""
        scope, _, key = lid.partition(":")
        held[lid] = await store.slots(self.db, scope, key, maximum + 1, session)
        counts[lid] = len(held[lid])

    async def _guard(self, session: AsyncClientSession, pick: Pick) -> bool:
        """Take a slot under each limit over the pick, free in this transaction's snapshot, and write its
        guard document (conflicting with any other claim taking it); False when a limit has none free."""
        assert pick.state is not None
        fields: dict[str, Any] = dict.fromkeys(store.SLOT_FIELDS.values())
        for lid in pick.limits:
            scope = lid.partition(":")[0]
            # The limit as it is now if it still exists (lowered meanwhile: the lower one binds), else as
            # the choice saw it (deleted meanwhile: as if deleted just after this claim).
            maximum = self._limits.get(lid, pick.maxima[lid])
            held = pick.held[lid]
            if len(held) >= maximum:
                return False
            used = {v for v in held if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < maximum}
            bottom = len(held) - len(used)  # tasks holding no slot take them from the bottom
            here = self._in_flight_slots.get(lid, set())
            free = [n for n in _draws(bottom, maximum) if n not in used and n not in here]
            if not free:
                free = [n for n in range(bottom, maximum) if n not in used and n not in here]
            if not free:
                return False
            slot = free[0]
            pick.slots[lid] = slot
            self._in_flight_slots.setdefault(lid, set()).add(slot)
            fields[store.SLOT_FIELDS[scope]] = slot
            try:
                await store.touch_slot(self.db, lid, slot, session)
            except OperationFailure as exc:
                if exc.code == WRITE_CONFLICT:  # another process's claim took this slot: retried at once,
                    # so back off a moment first rather than spin against its open transaction
                    await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS))
                raise
        for rid, (window, taken) in pick.rates.items():
            maximum, per = self._rates.get(rid, pick.rate_defs[rid])
            here = self._in_flight_slots.get(_RATE + rid, set())
            free = [n for n in _draws(0, maximum) if n not in taken and n not in here]
            free = free or [n for n in range(maximum) if n not in taken and n not in here]
            if not free:
                return False
            pick.rate_slots[rid] = free[0]
            self._in_flight_slots.setdefault(_RATE + rid, set()).add(free[0])
            expire = _window_end(window, per) + dt.timedelta(seconds=per)
            try:
                await store.take_start(self.db, rid, window, free[0], expire, session)
            except OperationFailure as exc:
                if exc.code == WRITE_CONFLICT:
                    await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS))
                raise
        pick.fields = fields
        return True

    async def _choose(
        self,
        session: AsyncClientSession,
        agent_name: str,
        now: dt.datetime,
        workflow_id: str | None,
        task_kinds: list[str] | None,
        exclude: list[str],
        skipped: Callable[[Mapping[str, Any]], bool],
        spread: bool,
    ) -> Pick:
        """FIFO: the first few tasks in claim order, the first one no limit holds back; only when they
        are all held back, the groups (one index probe each). Fair: the groups, least recently served
        first. Limits are counted lazily, for the candidates looked at.

        The limits are read once, here: a refresh of the cache while this choice awaits MongoDB (a limit
        set or deleted meanwhile) replaces `_limits` and `_rates`, and a choice must not see two versions
        (a limit it found over a task would be gone when it looks up its `max`)."""
        maxima, rate_defs = self._limits, self._rates
        counts: dict[str, int] = {}
        pick_slots: dict[str, list[Any]] = {}
        windows: dict[str, tuple[int, set[int]]] = {}
        next_start: dict[str, dt.datetime] = {}
        blocked: set[str] = set()
        busy: set[str] = set()

        async def verdict(state: Doc) -> tuple[bool, list[str], list[str]]:
            """(usable, its limits, the limits that hold it back: full or taken here)."""
            limits = self.limit_ids(state, maxima)
            held: list[str] = []
            for lid in limits:
                if lid not in counts:
                    await self._count(session, lid, maxima[lid], counts, pick_slots)
                if counts[lid] >= maxima[lid]:
                    held.append(lid)
                    blocked.add(lid)
                elif counts[lid] + self._in_flight[lid] >= maxima[lid]:
                    held.append(lid)  # its free slots are being taken here: wait for those claims
                    busy.add(lid)
            for rid in self.limit_ids(state, rate_defs):
                maximum, per = rate_defs[rid]
                if rid not in windows:
                    window = _window(now, per)
                    windows[rid] = (window, await store.window_starts(self.db, rid, window, maximum, session))
                started = len(windows[rid][1])
                if started >= maximum:
                    held.append(rid)
                    next_start[rid] = _window_end(windows[rid][0], per)
                elif started + self._in_flight[_RATE + rid] >= maximum:
                    held.append(rid)
                    busy.add(_RATE + rid)
            usable = (
                not held
                and not skipped(state)
                and sm.has_attempts_left(state)
                and not sm.is_expired(state, now)
            )
            return usable, limits, held

        agent_limit = store.limit_id("agent", agent_name)
        if agent_limit in maxima:
            await self._count(session, agent_limit, maxima[agent_limit], counts, pick_slots)
            if counts[agent_limit] >= maxima[agent_limit]:
                return Pick(None, reason=self._reason([agent_limit], counts, maxima))
            if counts[agent_limit] + self._in_flight[agent_limit] >= maxima[agent_limit]:
                return Pick(None, busy=[agent_limit])
        policy = self.policy(agent_name)
        group_field = "concurrency_key" if policy is Policy.FAIR_BY_KEY else "workflow_id"
        if policy is Policy.FIFO and "key" in self._scoped and "workflow" not in self._scoped:
            group_field = "concurrency_key"

        def chosen(state: Doc, limits: list[str]) -> Pick:
            group = state.get(group_field)
            rates = {rid: windows[rid] for rid in self.limit_ids(state, rate_defs)}
            for lid in [*limits, *(_RATE + rid for rid in rates)]:
                self._in_flight[lid] += 1
                self._ended.setdefault(lid, asyncio.Event())
            self._serving[(agent_name, group)] += 1
            held = {lid: pick_slots[lid] for lid in limits}
            return Pick(
                state,
                limits=limits,
                group=group,
                held=held,
                rates=rates,
                maxima={lid: maxima[lid] for lid in limits},
                rate_defs={rid: rate_defs[rid] for rid in rates},
            )

        if policy is Policy.FIFO:
            heads = await state_store.claimable(
                self.db,
                agent_name,
                now,
                workflow_id=workflow_id,
                task_kinds=task_kinds,
                exclude=exclude,
                limit=FIFO_LOOKAHEAD,
                session=session,
            )
            top = heads[0].get("priority_rank") if heads else None
            order = [h for h in heads if h.get("priority_rank") == top]
            if spread and len(order) > 1:  # collided with another process: rarely twice on the same pick
                random.shuffle(order)
            for state in order:
                usable, limits, _ = await verdict(state)
                if usable:
                    return chosen(state, limits)
            if len(heads) < FIFO_LOOKAHEAD and all(h.get("priority_rank") == top for h in heads):
                return self._nothing(blocked, busy, counts, maxima, rate_defs, next_start)

        gate = _gate(now)
        if task_kinds:
            gate["task_kind"] = {"$in": task_kinds}
        if workflow_id is not None and group_field != "workflow_id":
            gate["workflow_id"] = workflow_id
        async for rank in store.priorities(self.db, agent_name, gate, session):
            if workflow_id is not None and group_field == "workflow_id":
                heads = await store.group_next(
                    self.db, agent_name, group_field, workflow_id, rank, gate, exclude, 1, session
                )
            else:
                heads = await store.group_heads(
                    self.db, agent_name, group_field, rank, gate, exclude, self.max_groups, session
                )
            for head in await self._order(session, agent_name, policy, group_field, heads, spread):
                candidates = [head]
                looked_further = False
                while candidates:
                    state = candidates.pop(0)
                    usable, limits, held = await verdict(state)
                    if usable:
                        return chosen(state, limits)
                    own = store.limit_id(_scope_of(group_field), state.get(group_field) or "")
                    if own in held:  # the whole group waits on its own limit
                        break
                    if not looked_further:  # held back by another limit, or stale here: look further
                        looked_further = True
                        candidates = [
                            d
                            for d in await store.group_next(
                                self.db,
                                agent_name,
                                group_field,
                                head.get(group_field),
                                rank,
                                gate,
                                exclude,
                                GROUP_LOOKAHEAD,
                                session,
                            )
                            if d["_id"] != head["_id"]
                        ]
        return self._nothing(blocked, busy, counts, maxima, rate_defs, next_start)

    def _nothing(
        self,
        blocked: set[str],
        busy: set[str],
        counts: Mapping[str, int],
        maxima: Mapping[str, int],
        rate_defs: Mapping[str, tuple[int, int]],
        next_start: Mapping[str, dt.datetime] | None = None,
    ) -> Pick:
        if busy:
            return Pick(None, busy=sorted(busy))
        reasons = [self._reason(sorted(blocked), counts, maxima)] if blocked else []
        if next_start:
            soonest = min(next_start.values())
            names = ", ".join(
                f"{rid} ({rate_defs[rid][0]} per {rate_defs[rid][1]} s)" for rid in sorted(next_start)[:10]
            )
            reasons.append(
                f"claimable tasks wait on start rate limits: {names}; the next start is allowed at"
                f" {soonest.isoformat()}"
            )
        return Pick(None, reason="; ".join(reasons) or None)

    async def _order(
        self,
        session: AsyncClientSession,
        agent_name: str,
        policy: Policy,
        group_field: str,
        heads: list[Doc],
        spread: bool,
    ) -> list[Doc]:
        """Group heads in the order a claim tries them: FIFO oldest first; fair, the group least recently
        served first (never served: first of all), a group a claim here is serving right now last."""

        def age(state: Doc) -> tuple[Any, ...]:
            return (_time(state.get("created_at")), str(state["_id"]))

        if policy is Policy.FIFO:
            ordered = sorted(heads, key=age)
        else:
            served = await store.served(self.db, agent_name, [s.get(group_field) for s in heads], session)

            def fairness(state: Doc) -> tuple[Any, ...]:
                group = state.get(group_field)
                last = max(
                    _time(served.get(group, {}).get("served_at")),
                    _time(self._served_here.get((agent_name, group))),
                )
                return (self._serving[(agent_name, group)], last, *age(state))

            ordered = sorted(heads, key=fairness)
        if spread and len(ordered) > 1:  # collided with another process: rarely twice on the same pick
            first = random.randrange(min(3, len(ordered)))
            ordered.insert(0, ordered.pop(first))
        return ordered

    def _reason(self, blocked: list[str], counts: Mapping[str, int], maxima: Mapping[str, int]) -> str:
        parts = [f"{lid} ({counts.get(lid, '?')}/{maxima.get(lid, '?')})" for lid in blocked[:10]]
        more = f" and {len(blocked) - 10} more" if len(blocked) > 10 else ""
        plural = "s" if len(blocked) != 1 else ""
        return (
            f"claimable tasks wait on {len(blocked)} full concurrency limit{plural}: {', '.join(parts)}{more}"
        )


_SCOPES = frozenset(scope.value for scope in Scope)

#: Prefix of a start rate limit's entries among the limits in flight here.
_RATE = "rate|"


def _window(now: dt.datetime, per: int) -> int:
    """The fixed window `now` falls in (its number since the epoch, in windows of `per` seconds)."""
    return int(now.timestamp()) // per


def _window_end(window: int, per: int) -> dt.datetime:
    return dt.datetime.fromtimestamp((window + 1) * per, dt.UTC)


def _draws(low: int, high: int, tries: int = 4) -> list[int]:
    """A few slots drawn at random in [low, high) (a claim in another process rarely draws the same)."""
    return [random.randrange(low, high) for _ in range(tries)] if low < high else []


def _gate(now: dt.datetime) -> Doc:
    """The claim query's conditions past agent and status: the claim gate and the expiry."""
    return {
        "not_before": {"$not": {"$gt": now}},
        "next_attempt_at": {"$not": {"$gt": now}},
        "$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}, {"expires_at": {"$type": "string"}}],
    }


def _scope_of(group_field: str) -> str:
    return "workflow" if group_field == "workflow_id" else "key"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return _EPOCH
