"""Unit tests of leases in the state machine and of fencing: pure functions, no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.lifecycle import state_machine as sm
from app.lifecycle.errors import LeaseLost
from app.lifecycle.state_machine import InvalidInput, TransitionRefused
from app.lifecycle.transitions import Lifecycle, check_lease, lease_guard
from app.settings import Settings

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
PAST = NOW - timedelta(seconds=5)
FUTURE = NOW + timedelta(seconds=30)
NO_LEASE = {"lease_holder": None, "lease_expires_at": None, "last_heartbeat_at": None}


def state(status: str = "in_progress", **fields: Any) -> dict[str, Any]:
    return {"_id": "t1", "agent_name": "A", "status": status, "attempts": 1, "version": 4, **fields}


def leased(status: str = "in_progress", **fields: Any) -> dict[str, Any]:
    lease = {"lease_holder": "w1", "lease_expires_at": FUTURE, "last_heartbeat_at": None}
    return state(status, **{**lease, **fields})


def test_start_takes_a_lease_held_by_the_worker_or_the_agent() -> None:
    t = sm.start(state("pending", attempts=0), NOW, lease_seconds=60, holder="w1")
    assert t.set_fields["attempts"] == 1
    assert t.set_fields["lease_holder"] == "w1"
    assert t.set_fields["lease_expires_at"] == NOW + timedelta(seconds=60)
    assert t.set_fields["last_heartbeat_at"] is None
    assert sm.start(state("retrying"), NOW, lease_seconds=1).set_fields["lease_holder"] == "A"
    # Without a lease (a bare call of the pure function), no lease field is written.
    assert not set(sm.LEASE_FIELDS) & set(sm.start(state("pending"), NOW).set_fields)
    for bad in (0, -1, float("nan"), "5"):
        with pytest.raises(InvalidInput) as info:
            sm.start(state("pending"), NOW, lease_seconds=bad)
        assert info.value.field == "lease_seconds"


def test_bare_heartbeat_extends_the_lease_and_writes_no_event() -> None:
    t = sm.heartbeat(leased(), NOW, 90)
    assert t.set_fields == {
        "status": "in_progress",
        "updated_at": NOW,
        "lease_holder": "w1",
        "lease_expires_at": NOW + timedelta(seconds=90),
        "last_heartbeat_at": NOW,
    }
    assert t.events == []
    # A task started before leases existed takes one, held by its agent.
    assert sm.heartbeat(state(), NOW, 10).set_fields["lease_holder"] == "A"


def test_heartbeat_with_progress_records_it_as_report_progress_does() -> None:
    doc = leased(progress_percentage=20, current_step="old")
    t = sm.heartbeat(doc, NOW, 30, percentage=40, current_step="step 2")
    progress = sm.report_progress(doc, NOW, 40, "step 2")
    assert t.events == progress.events
    assert t.events == [
        ("TASK_PROGRESS", {"task_id": "t1", "status": "in_progress", "progress": 0.4, "details": "step 2"})
    ]
    assert t.set_fields == {
        **progress.set_fields,
        "lease_holder": "w1",
        "lease_expires_at": NOW + timedelta(seconds=30),
        "last_heartbeat_at": NOW,
    }
    # A step alone keeps the stored percentage.
    step_only = sm.heartbeat(doc, NOW, 30, current_step="step 3")
    assert step_only.set_fields["progress_percentage"] == 20
    assert step_only.events[0][1]["progress"] == 0.2
    with pytest.raises(InvalidInput):
        sm.heartbeat(doc, NOW, 30, percentage=101)


@pytest.mark.parametrize("status", [s for s in sm.STATUSES if s != "in_progress"])
def test_heartbeat_only_in_progress(status: str) -> None:
    with pytest.raises(TransitionRefused) as info:
        sm.heartbeat(state(status), NOW, 30)
    assert info.value.message == f"cannot heartbeat a task that is {status}"
    with pytest.raises(TransitionRefused):
        sm.heartbeat(state(status), NOW, 30, percentage=10)


def test_lapse_returns_the_task_to_retrying_with_its_events() -> None:
    doc = leased(lease_expires_at=PAST, last_heartbeat_at=PAST - timedelta(seconds=1))
    t = sm.lapse(doc, NOW)
    message = f"lease held by w1 expired at {PAST.isoformat()} (attempt 1)"
    assert t.to_status == "retrying"
    assert t.set_fields == {
        "status": "retrying",
        "updated_at": NOW,
        "last_error": {
            "timestamp": NOW,
            "message": message,
            "details": "no heartbeat extended the lease before it ran out",
            "error_type": "TimedOut:HEARTBEAT",
        },
        **NO_LEASE,
    }
    assert t.events == [
        ("STATUS_CHANGED", {"task_id": "t1", "from_status": "in_progress", "to_status": "retrying"}),
        (
            "LEASE_EXPIRED",
            {
                "task_id": "t1",
                "holder": "w1",
                "attempt": 1,
                "lease_expires_at": PAST.isoformat(),
                "status": "retrying",
            },
        ),
        (  # the lease is the heartbeat timeout: its lapse is also a TASK_TIMED_OUT of kind HEARTBEAT
            "TASK_TIMED_OUT",
            {
                "task_id": "t1",
                "kind": "HEARTBEAT",
                "timeout_seconds": 1.0,
                "deadline": PAST.isoformat(),
                "attempt": 1,
                "status": "retrying",
            },
        ),
    ]
    json.dumps(t.events)


def test_lapse_with_the_attempts_used_up_fails_the_task() -> None:
    t = sm.lapse(leased(attempts=3, lease_expires_at=PAST), NOW)
    assert t.to_status == "failed"
    assert t.events[1][1]["status"] == "failed" and t.events[1][1]["attempt"] == 3
    assert sm.lapse(leased(attempts=1, max_attempts=1, lease_expires_at=NOW), NOW).to_status == "failed"


def test_lapse_is_refused_unless_the_lease_ran_out() -> None:
    for doc in (leased(), state(), leased(status="retrying", lease_expires_at=PAST)):
        with pytest.raises(TransitionRefused):
            sm.lapse(doc, NOW)


@pytest.mark.parametrize(
    "action",
    [
        lambda s: sm.complete(s, NOW),
        lambda s: sm.fail(s, NOW, "boom"),
        lambda s: sm.fail(s, NOW, "boom", is_final=True),
        lambda s: sm.cancel(s, NOW),
        lambda s: sm.expire({**s, "expires_at": PAST}, NOW),
    ],
)
def test_leaving_in_progress_clears_the_lease(action: Any) -> None:
    t = action(leased(last_heartbeat_at=PAST))
    assert t.to_status != "in_progress"
    assert {k: t.set_fields[k] for k in sm.LEASE_FIELDS} == NO_LEASE
    # Progress keeps it.
    assert not set(sm.LEASE_FIELDS) & set(sm.report_progress(leased(), NOW, 5).set_fields)


def test_lease_lapsed() -> None:
    assert sm.lease_lapsed(leased(lease_expires_at=NOW), NOW)
    assert sm.lease_lapsed(leased(lease_expires_at=PAST.isoformat()), NOW)  # another program's ISO string
    assert not sm.lease_lapsed(leased(), NOW)
    assert not sm.lease_lapsed(state(), NOW)  # no lease
    assert not sm.lease_lapsed(leased(status="retrying", lease_expires_at=PAST), NOW)


def test_check_lease_refuses_a_stale_attempt_naming_the_current_one() -> None:
    doc = leased(attempts=2, lease_holder="B")
    check_lease(doc, 2, NOW)
    check_lease(doc, None, NOW, "B")  # the holder naming itself needs no token
    check_lease(doc, None, NOW, require_holder=False)  # the old rule: only a given token is checked
    with pytest.raises(LeaseLost) as info:
        check_lease(doc, 1, NOW)
    assert (
        info.value.message
        == "attempt 1 no longer holds task 't1': it is in_progress under attempt 2, leased to B"
    )
    assert (info.value.current_attempt, info.value.current_holder, info.value.current_status) == (
        2,
        "B",
        "in_progress",
    )
    done = state("completed", attempts=2)
    with pytest.raises(LeaseLost) as info:
        check_lease(done, 2, NOW)
    assert info.value.message == "attempt 2 no longer holds task 't1': it is completed under attempt 2"
    assert info.value.current_holder is None and info.value.current_status == "completed"


def test_check_lease_refuses_a_lapsed_lease_with_or_without_the_token() -> None:
    doc = leased(lease_expires_at=PAST)
    for attempt in (1, None):
        with pytest.raises(LeaseLost) as info:
            check_lease(doc, attempt, NOW)
        assert info.value.message == (
            f"the lease of task 't1' held by w1 expired at {PAST.isoformat()} (attempt 1);"
            " the next sweep returns it to retrying"
        )
        assert info.value.current_holder is None and info.value.current_attempt == 1


def test_lease_guard_names_what_a_lapse_relies_on() -> None:
    assert lease_guard(leased()) == {"status": "in_progress", "attempts": 1, "lease_expires_at": FUTURE}


def test_lease_bounds_and_worker_ids() -> None:
    lifecycle = Lifecycle(db=None, lease_seconds=60, lease_bounds=(1, 3600))  # type: ignore[arg-type]
    assert lifecycle.lease(None) == 60 and lifecycle.lease(1) == 1 and lifecycle.lease(3600) == 3600
    for bad, message in ((0, "lease_seconds must be at least 1, got 0"), (3601, "at most 3600, got 3601")):
        with pytest.raises(Exception, match=message) as info:
            lifecycle.lease(bad)
        assert info.value.field == "lease_seconds"  # type: ignore[attr-defined]
    assert lifecycle.holder(None) is None and lifecycle.holder("w-1") == "w-1"
    for bad in ("", "  ", "x" * 201):
        with pytest.raises(Exception) as info:
            lifecycle.holder(bad)
        assert info.value.field == "worker_id"  # type: ignore[attr-defined]


def test_settings_keep_the_default_lease_within_its_bounds() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (defaults.lease_seconds, defaults.lease_seconds_min, defaults.lease_seconds_max) == (60, 1, 3600)
    with pytest.raises(ValueError, match="LEASE_SECONDS"):
        Settings(_env_file=None, lease_seconds=10, lease_seconds_min=20)  # type: ignore[call-arg]


def test_check_lease_without_a_token_wants_the_holder() -> None:
    """Fencing by default: the caller is its worker id, else the task's agent (a claim's default holder)."""
    doc = leased(attempts=2, lease_holder="B")
    for worker, attempt in ((None, None), ("C", None), ("C", 2)):
        with pytest.raises(LeaseLost) as info:
            check_lease(doc, attempt, NOW, worker)
        assert (info.value.current_attempt, info.value.current_holder) == (2, "B")
        assert "is not the lease holder" in info.value.message
    # A worker naming someone else is refused even under the old rule; silence is not.
    with pytest.raises(LeaseLost):
        check_lease(doc, None, NOW, "C", require_holder=False)
    check_lease(doc, None, NOW, None, require_holder=False)
    # Held by the agent itself (claimed without a worker id): a caller without a worker id is the holder.
    check_lease(leased(attempts=1, lease_holder=doc["agent_name"]), None, NOW)
    # No lease (a task started by another program, or pending): nothing is held, nothing is fenced.
    check_lease(state(), None, NOW, "C")
    check_lease(state("pending"), None, NOW, "C")
