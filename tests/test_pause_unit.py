"""Pause and resume in the pure state machine (issue 21 part 5): every status, the no-ops, the refusals,
what a pause request does to the end of a running attempt, and expiry while paused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.lifecycle import state_machine as sm

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def state(status: str, **fields: Any) -> dict[str, Any]:
    return {"_id": "t", "agent_name": "A", "status": status, "attempts": 1, "version": 3, **fields}


@pytest.mark.parametrize("status", ["pending", "retrying", "awaiting_dependency"])
def test_pause_keeps_the_status_to_restore(status: str) -> None:
    t = sm.pause(state(status, next_attempt_at=NOW), NOW, "why", "root")
    assert t.to_status == "paused"
    assert t.set_fields["paused_from"] == status and t.set_fields["paused_at"] == NOW
    assert "next_attempt_at" not in t.set_fields  # kept as it is
    assert [kind for kind, _ in t.events] == ["STATUS_CHANGED", "TASK_PAUSED"]
    assert t.events[1][1] == {
        "task_id": "t",
        "from_status": status,
        "to_status": "paused",
        "reason": "why",
        "root_task_id": "root",
    }


def test_pausing_a_running_task_requests_it() -> None:
    t = sm.pause(state("in_progress", lease_holder="w", lease_expires_at=NOW), NOW)
    assert t.to_status == "in_progress" and t.set_fields["pause_requested"] is True
    assert "lease_holder" not in t.set_fields  # the worker keeps its lease: not fenced
    assert [kind for kind, _ in t.events] == ["TASK_PAUSED"] and t.events[0][1]["pause_requested"] is True


@pytest.mark.parametrize("doc", [state("paused"), state("in_progress", pause_requested=True)])
def test_pausing_again_is_a_no_op(doc: dict[str, Any]) -> None:
    with pytest.raises(sm.NoOp) as noop:
        sm.pause(doc, NOW)
    assert noop.value.reason == "ALREADY_PAUSED"


@pytest.mark.parametrize("status", ["pending", "retrying", "awaiting_dependency", "in_progress"])
def test_resuming_what_is_not_paused_is_a_no_op(status: str) -> None:
    with pytest.raises(sm.NoOp) as noop:
        sm.resume(state(status), NOW)
    assert noop.value.reason == "NOT_PAUSED"


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
@pytest.mark.parametrize("action", [sm.pause, sm.resume])
def test_finished_tasks_are_refused(status: str, action: Any) -> None:
    with pytest.raises(sm.TransitionRefused) as refused:
        action(state(status), NOW)
    assert refused.value.current_status == status and f"a task that is {status}" in str(refused.value)


@pytest.mark.parametrize(
    ("paused_from", "met", "expected"),
    [
        ("pending", True, "pending"),
        ("pending", False, "awaiting_dependency"),
        ("awaiting_dependency", True, "pending"),
        ("awaiting_dependency", False, "awaiting_dependency"),
        ("retrying", False, "retrying"),
        (None, True, "pending"),  # a paused task this server did not write
    ],
)
def test_resume_restores(paused_from: str | None, met: bool, expected: str) -> None:
    doc = state("paused", paused_from=paused_from, paused_at=NOW - timedelta(hours=1), next_attempt_at=NOW)
    t = sm.resume(doc, NOW, "go", dependencies_met=met)
    assert t.to_status == expected
    assert t.set_fields["paused_from"] is None and t.set_fields["paused_at"] is None
    assert "next_attempt_at" not in t.set_fields  # a retry due during the pause is due now
    assert t.events[-1] == (
        "TASK_RESUMED",
        {
            "task_id": "t",
            "from_status": "paused",
            "to_status": expected,
            "reason": "go",
            "root_task_id": None,
        },
    )


def test_resume_withdraws_a_pause_request() -> None:
    t = sm.resume(state("in_progress", pause_requested=True), NOW)
    assert t.to_status == "in_progress" and t.set_fields["pause_requested"] is None


def test_the_deadline_hook_shifts_nothing_yet() -> None:
    assert sm.shift_deadlines(state("paused", next_attempt_at=NOW), timedelta(hours=1)) == {}


def test_a_requested_pause_holds_the_retry() -> None:
    running = state("in_progress", pause_requested=True, max_attempts=5, lease_expires_at=NOW - timedelta(1))
    failed = sm.fail(running, NOW, "boom", policy={"initial_interval": 10}, draw=0.5)
    assert failed.to_status == "paused"
    assert failed.set_fields["paused_from"] == "retrying" and failed.set_fields["pause_requested"] is None
    assert failed.set_fields["next_attempt_at"] == NOW + timedelta(seconds=10)  # kept for the resume
    assert failed.events[-1][1]["status"] == "paused"
    lapsed = sm.lapse(running, NOW)
    assert lapsed.to_status == "paused" and lapsed.set_fields["paused_from"] == "retrying"
    final = sm.fail(running, NOW, "boom", is_final=True)
    assert final.to_status == "failed" and final.set_fields["pause_requested"] is None
    done = sm.complete(running, NOW)
    assert done.to_status == "completed" and done.set_fields["pause_requested"] is None


def test_no_expiry_while_paused_and_cancel_clears_the_pause() -> None:
    doc = state("paused", paused_from="pending", paused_at=NOW, expires_at=NOW - timedelta(hours=1))
    assert not sm.is_expired(doc, NOW)
    with pytest.raises(sm.TransitionRefused):
        sm.expire(doc, NOW)
    assert sm.is_expired({**doc, "status": "pending"}, NOW)
    cancelled = sm.cancel(doc, NOW)
    assert cancelled.set_fields["paused_from"] is None and cancelled.set_fields["paused_at"] is None
    with pytest.raises(sm.TransitionRefused):
        sm.start(doc, NOW)
    with pytest.raises(sm.TransitionRefused):
        sm.release(doc, NOW)


# --- with the timeouts (issue 21 part 2) -------------------------------------------------------------

TIMEOUTS = {
    "schedule_to_start_timeout": 10.0,
    "start_to_close_timeout": 20.0,
    "schedule_to_close_timeout": 60.0,
}
S2S, STC, S2C = "schedule_to_start_deadline", "start_to_close_deadline", "schedule_to_close_deadline"


def test_a_pause_holds_the_deadlines_and_a_resume_moves_them_on() -> None:
    pending = state(
        "pending", **TIMEOUTS, **{S2S: NOW + timedelta(seconds=10), S2C: NOW + timedelta(seconds=60)}
    )
    paused = sm.pause(pending, NOW)
    assert S2S not in paused.set_fields and S2C not in paused.set_fields  # held as they are
    held = {**pending, **paused.set_fields}
    later = NOW + timedelta(hours=1)
    resumed = sm.resume(held, later)
    assert resumed.to_status == "pending"
    assert resumed.set_fields[S2S] == NOW + timedelta(hours=1, seconds=10)
    assert resumed.set_fields[S2C] == NOW + timedelta(hours=1, seconds=60)
    assert sm.shift_deadlines(held, timedelta(0)) == {}


def test_a_resume_from_awaiting_to_pending_is_a_release() -> None:
    waiting = state("awaiting_dependency", **TIMEOUTS, **{S2C: NOW + timedelta(seconds=60)})
    held = {**waiting, **sm.pause(waiting, NOW).set_fields}
    later = NOW + timedelta(minutes=5)
    resumed = sm.resume(held, later, dependencies_met=True)
    assert resumed.to_status == "pending"
    assert resumed.set_fields[S2S] == later + timedelta(seconds=10)  # schedulable from the resume
    assert resumed.set_fields[S2C] == NOW + timedelta(minutes=5, seconds=60)  # moved on by the pause


def test_an_attempt_ending_into_a_pause_changes_its_deadlines_as_a_retry() -> None:
    running = state(
        "in_progress", **TIMEOUTS, pause_requested=True, max_attempts=5, **{STC: NOW + timedelta(seconds=20)}
    )
    failed = sm.fail(running, NOW, "boom")
    assert failed.to_status == "paused"
    assert failed.set_fields[STC] is None and failed.set_fields[S2S] == NOW + timedelta(seconds=10)
