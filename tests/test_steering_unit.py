"""The steering rules as pure functions (issue 21): the retry delay a failure schedules, the claim gate
`start` enforces, and `reschedule`."""

from __future__ import annotations

import datetime as dt

import pytest

from app.lifecycle import state_machine as sm

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def state(status: str, **extra: object) -> dict[str, object]:
    return {"_id": "t1", "status": status, "attempts": 1, "agent_name": "A", **extra}


def test_a_failure_schedules_the_policy_s_delay() -> None:
    policy = {"initial_interval": 2.0, "backoff_coefficient": 3.0, "maximum_interval": 10.0}
    t = sm.fail(state("in_progress", attempts=2), NOW, "x", policy=policy)
    assert t.set_fields["next_attempt_at"] == NOW + dt.timedelta(seconds=6)
    assert t.events[-1][1]["retry_delay_seconds"] == 6.0
    t = sm.fail(state("in_progress", attempts=9, max_attempts=0), NOW, "x", policy=policy)  # unlimited
    assert t.to_status == "retrying" and t.set_fields["next_attempt_at"] == NOW + dt.timedelta(seconds=10)
    t = sm.fail(
        state("in_progress"), NOW, "x", error_type="Bad", policy={"non_retryable_error_types": ["Bad"]}
    )
    assert t.to_status == "failed" and t.events[-1][1]["non_retryable"] is True
    t = sm.fail(state("in_progress"), NOW, "x", next_retry_delay=1.5, policy=policy)
    assert t.set_fields["next_attempt_at"] == NOW + dt.timedelta(seconds=1.5)
    with pytest.raises(sm.InvalidInput):
        sm.fail(state("in_progress"), NOW, "x", next_retry_delay=-1)


def test_start_waits_for_the_claim_gate() -> None:
    later = NOW + dt.timedelta(seconds=1)
    with pytest.raises(sm.TransitionRefused):
        sm.start(state("retrying", next_attempt_at=later), NOW)
    with pytest.raises(sm.TransitionRefused):
        sm.start(state("pending", not_before=later), NOW)
    started = sm.start(state("retrying", next_attempt_at=NOW), later)
    assert started.set_fields["next_attempt_at"] is None


def test_reschedule() -> None:
    later = NOW + dt.timedelta(hours=1)
    t = sm.reschedule(state("pending", not_before=NOW), NOW, later)
    assert t.set_fields["not_before"] == later and not t.changes_status
    assert t.events == [
        (
            "TASK_RESCHEDULED",
            {
                "task_id": "t1",
                "status": "pending",
                "not_before": later.isoformat(),
                "previous_not_before": NOW.isoformat(),
            },
        )
    ]
    with pytest.raises(sm.TransitionRefused):
        sm.reschedule(state("in_progress"), NOW, later)
