"""The timeouts as pure functions (issue 21 part 2): which moves arm and clear which deadline, what firing
each kind does, and that the names are stated once (state machine, store, GraphQL enum)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from app.api.types.events import TimeoutKind
from app.lifecycle import state_machine as sm
from app.lifecycle import timeouts
from app.lifecycle.documents import new_state_doc
from app.lifecycle.errors import Invalid
from app.lifecycle.events import EventType
from app.store.collections import AGENT_TASK_STATES

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
S2S, STC, S2C = (
    k.deadline_field
    for k in (timeouts.SCHEDULE_TO_START, timeouts.START_TO_CLOSE, timeouts.SCHEDULE_TO_CLOSE)
)


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def state(status: str, **extra: Any) -> dict[str, Any]:
    return {"_id": "t1", "status": status, "attempts": 0, "agent_name": "A", "max_attempts": 3, **extra}


TIMEOUTS = {
    "schedule_to_start_timeout": 10.0,
    "start_to_close_timeout": 20.0,
    "schedule_to_close_timeout": 60.0,
}


def test_the_names_are_stated_once() -> None:
    assert sm.TIMEOUT_DEADLINE_FIELDS == (S2C, S2S, STC)
    assert all(AGENT_TASK_STATES.fields[f] == "datetime" for f in sm.TIMEOUT_DEADLINE_FIELDS)
    assert all(AGENT_TASK_STATES.fields[f] == "float" for f in timeouts.FIELDS)
    indexed = {keys for index in AGENT_TASK_STATES.indexes for keys in [index.keys]}
    for name in sm.TIMEOUT_DEADLINE_FIELDS:
        assert (("status", 1), (name, 1)) in indexed
    assert sorted(k.value for k in TimeoutKind) == sorted(timeouts.KIND_NAMES)
    assert EventType.TASK_TIMED_OUT == "TASK_TIMED_OUT"
    # Every kind names its statuses; none of them runs in a status it does not name (a pause, say).
    assert timeouts.SCHEDULE_TO_START.statuses == ("pending", "retrying")
    assert timeouts.START_TO_CLOSE.statuses == ("in_progress",)
    assert "paused" not in {s for k in timeouts.KINDS for s in k.statuses}


def test_a_new_task_takes_its_own_timeouts_else_the_server_s_and_arms_them() -> None:
    defaults = {
        "schedule_to_start_timeout": 5.0,
        "start_to_close_timeout": 0.0,
        "schedule_to_close_timeout": 0.0,
    }
    doc = new_state_doc(
        "t1", "standalone", None, {"schedule_to_close_timeout": 60}, [], "pending", NOW, defaults
    )
    assert doc["schedule_to_start_timeout"] == 5.0 and doc["schedule_to_close_timeout"] == 60.0
    assert "start_to_close_timeout" not in doc  # default 0: none, not stored
    assert doc[S2S] == at(5) and doc[S2C] == at(60) and STC not in doc
    # 0 given says "none" over a default; a delayed start's schedule-to-start runs from its notBefore.
    doc = new_state_doc(
        "t1",
        "standalone",
        None,
        {"schedule_to_start_timeout": 0, "not_before": at(100)},
        [],
        "pending",
        NOW,
        defaults,
    )
    assert doc["schedule_to_start_timeout"] == 0.0 and S2S not in doc
    doc = new_state_doc("t1", "standalone", None, {"not_before": at(100)}, [], "pending", NOW, defaults)
    assert doc[S2S] == at(105)
    # Awaiting a dependency is not schedulable: no schedule-to-start until it is released.
    doc = new_state_doc("t1", "standalone", None, dict(TIMEOUTS), [], "awaiting_dependency", NOW)
    assert S2S not in doc and doc[S2C] == at(60)
    released = sm.release(doc, at(3))
    assert released.set_fields[S2S] == at(13)


@pytest.mark.parametrize("value", [-1, 365 * 24 * 3600 + 1, float("inf"), "10", True])
def test_bad_values_are_refused_naming_the_field_and_the_limit(value: Any) -> None:
    with pytest.raises(Invalid) as info:
        new_state_doc("t1", "standalone", None, {"start_to_close_timeout": value}, [], "pending", NOW)
    assert info.value.field == "input.start_to_close_timeout"
    assert "start_to_close_timeout must be" in info.value.message


def test_each_move_arms_or_clears_its_deadlines() -> None:
    pending = {**state("pending"), **TIMEOUTS, S2S: at(10), S2C: at(60)}
    started = sm.start(pending, at(2), lease_seconds=30)
    assert started.set_fields[S2S] is None and started.set_fields[STC] == at(22)
    assert S2C not in started.set_fields  # the whole task's keeps running
    running = {**pending, **started.set_fields}
    failed = sm.fail(running, at(5), "x", policy={"initial_interval": 3.0})
    assert failed.to_status == "retrying"
    # The retry is schedulable once its backoff ends: its schedule-to-start runs from then.
    assert failed.set_fields[STC] is None and failed.set_fields[S2S] == at(5 + 3 + 10)
    done = sm.complete({**running}, at(6))
    assert done.set_fields[STC] is None and done.set_fields[S2C] is None  # (S2S was cleared at the start)
    # A failure of a task not started yet is a retry too: schedulable again from its new time.
    early = sm.fail(pending, at(1), "x", policy={"initial_interval": 4.0})
    assert early.to_status == "retrying" and early.set_fields[S2S] == at(1 + 4 + 10)
    blocked = sm.block(pending, at(1))
    assert blocked.set_fields[S2S] is None and S2C not in blocked.set_fields
    # A manual retry schedules the task anew: both schedule timeouts run again from then.
    retried = sm.retry({**state("failed", attempts=3), **TIMEOUTS}, at(100))
    assert retried.set_fields[S2S] == at(110) and retried.set_fields[S2C] == at(160)
    # Rescheduling moves the schedule-to-start with the new start time.
    moved = sm.reschedule(pending, at(1), at(50))
    assert moved.set_fields[S2S] == at(60)
    # A task without timeouts writes no deadline fields at all.
    assert not set(sm.start(state("pending"), NOW).set_fields) & set(sm.TIMEOUT_DEADLINE_FIELDS)


def test_start_is_refused_once_a_final_timeout_passed() -> None:
    late = {**state("pending"), **TIMEOUTS, S2S: at(10), S2C: at(60)}
    with pytest.raises(sm.TransitionRefused) as info:
        sm.start(late, at(10))
    assert "SCHEDULE_TO_START timeout passed" in info.value.message
    assert sm.start(late, at(9)).to_status == "in_progress"


def test_schedule_to_start_fails_the_task_for_good() -> None:
    doc = {**state("retrying", attempts=1), **TIMEOUTS, S2S: at(10), S2C: at(60), "next_attempt_at": at(0)}
    with pytest.raises(sm.TransitionRefused):
        sm.time_out(doc, at(9), "SCHEDULE_TO_START")  # not yet
    t = sm.time_out(doc, at(10), "SCHEDULE_TO_START", policy={"initial_interval": 1.0})
    assert t.to_status == "failed"
    assert t.set_fields["last_error"]["error_type"] == "TimedOut:SCHEDULE_TO_START"
    assert t.set_fields[S2S] is None and t.set_fields[S2C] is None and t.set_fields["next_attempt_at"] is None
    assert t.events == [
        ("STATUS_CHANGED", {"task_id": "t1", "from_status": "retrying", "to_status": "failed"}),
        (
            "TASK_TIMED_OUT",
            {
                "task_id": "t1",
                "kind": "SCHEDULE_TO_START",
                "timeout_seconds": 10.0,
                "deadline": at(10).isoformat(),
                "attempt": 1,
                "status": "failed",
            },
        ),
    ]
    json.dumps(t.events)
    # Fired once: the deadline is cleared, so a second firing is refused.
    with pytest.raises(sm.TransitionRefused):
        sm.time_out({**doc, **t.set_fields}, at(11), "SCHEDULE_TO_START")


def test_start_to_close_fails_the_attempt_and_the_retry_policy_applies() -> None:
    doc = {
        **state("in_progress", attempts=1),
        **TIMEOUTS,
        STC: at(20),
        S2C: at(60),
        "lease_expires_at": at(30),
    }
    t = sm.time_out(doc, at(21), "START_TO_CLOSE", policy={"initial_interval": 2.0})
    assert t.to_status == "retrying"
    assert t.set_fields["next_attempt_at"] == at(23)
    assert t.set_fields[STC] is None and t.set_fields[S2S] == at(33)  # schedulable again from its retry
    assert t.set_fields["lease_expires_at"] is None  # the attempt's lease goes with it (fenced)
    assert t.events[-1][1] | {} == {
        "task_id": "t1",
        "kind": "START_TO_CLOSE",
        "timeout_seconds": 20.0,
        "deadline": at(20).isoformat(),
        "attempt": 1,
        "status": "retrying",
        "next_attempt_at": at(23).isoformat(),
    }
    # Attempts used up, or the policy names the timeout non-retryable: failed for good.
    assert sm.time_out({**doc, "attempts": 3}, at(21), "START_TO_CLOSE").to_status == "failed"
    policy = {"non_retryable_error_types": ["TimedOut:START_TO_CLOSE"]}
    assert sm.time_out(doc, at(21), "START_TO_CLOSE", policy=policy).to_status == "failed"


def test_schedule_to_close_runs_in_the_named_statuses_only() -> None:
    for status in ("pending", "retrying", "awaiting_dependency", "in_progress"):
        doc = {**state(status, attempts=1), **TIMEOUTS, S2C: at(60)}
        t = sm.time_out(doc, at(60), "SCHEDULE_TO_CLOSE")
        assert (
            t.to_status == "failed"
            and t.set_fields["last_error"]["error_type"] == "TimedOut:SCHEDULE_TO_CLOSE"
        )
    for status in ("paused", "completed", "failed", "cancelled"):
        doc = {**state(status), **TIMEOUTS, S2C: at(60), S2S: at(1), STC: at(1)}
        assert sm.due_timeouts(doc, at(100)) == []
        with pytest.raises(sm.TransitionRefused):
            sm.time_out(doc, at(100), "SCHEDULE_TO_CLOSE")
    with pytest.raises(sm.InvalidInput):
        sm.time_out(state("pending"), NOW, "HEARTBEAT")  # the lease's: `lapse`


def test_a_heartbeat_timeout_named_non_retryable_fails_for_good() -> None:
    doc = {
        **state("in_progress", attempts=1),
        "lease_holder": "w",
        "lease_expires_at": at(0),
        "started_at": at(-30),
    }
    t = sm.lapse(doc, at(1), policy={"non_retryable_error_types": ["TimedOut:HEARTBEAT"]})
    assert t.to_status == "failed"
    assert [kind for kind, _ in t.events] == ["STATUS_CHANGED", "LEASE_EXPIRED", "TASK_TIMED_OUT"]
    assert t.events[-1][1]["timeout_seconds"] == 30.0 and t.events[-1][1]["kind"] == "HEARTBEAT"


def test_an_edit_moves_the_running_deadline() -> None:
    running = {
        **state("in_progress", attempts=1),
        **TIMEOUTS,
        "started_at": at(0),
        STC: at(20),
        S2C: at(60),
        "created_at": at(-5),
    }
    assert sm.retimed(running, {"start_to_close_timeout": 50.0}, at(10)) == {STC: at(50)}
    assert sm.retimed(running, {"start_to_close_timeout": 0.0}, at(10)) == {STC: None}
    assert sm.retimed(running, {"schedule_to_start_timeout": 5.0}, at(10)) == {}  # not running in progress
    fresh = {**state("pending"), "created_at": at(-5)}
    assert sm.retimed(
        fresh, {"schedule_to_close_timeout": 60.0, "schedule_to_start_timeout": 5.0}, at(10)
    ) == {
        S2C: at(55),
        S2S: at(15),
    }
