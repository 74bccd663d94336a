"""Unit tests of the lifecycle state machine: pure functions, no database."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app.lifecycle import state_machine as sm
from app.lifecycle.state_machine import InvalidInput, Transition, TransitionRefused

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
PAST = NOW - timedelta(hours=1)
FUTURE = NOW + timedelta(hours=1)


def state(status: str | None = "pending", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": "t1", "agent_name": "A", "attempts": 0, "version": 4, **fields}
    if status is not None:
        doc["status"] = status
    return doc


ACTIONS: dict[str, Callable[[dict[str, Any]], Transition]] = {
    "start": lambda s: sm.start(s, NOW),
    "progress": lambda s: sm.report_progress(s, NOW, 50),
    "complete": lambda s: sm.complete(s, NOW),
    "fail": lambda s: sm.fail(s, NOW, "boom"),
    "retry": lambda s: sm.retry(s, NOW),
    "cancel": lambda s: sm.cancel(s, NOW),
    "expire": lambda s: sm.expire({**s, "expires_at": PAST}, NOW),
    "release": lambda s: sm.release(s, NOW),
    "block": lambda s: sm.block(s, NOW),
}

ALLOWED: dict[str, dict[str, str]] = {
    "start": {"pending": "in_progress", "retrying": "in_progress"},
    "progress": {"in_progress": "in_progress"},
    "complete": {"in_progress": "completed"},
    "fail": {"in_progress": "retrying", "pending": "retrying", "retrying": "retrying"},
    "retry": {"failed": "retrying", "cancelled": "retrying"},
    "cancel": {s: "cancelled" for s in sm.ACTIVE},
    "expire": {s: "failed" for s in sm.ACTIVE - {"paused"}},  # (a paused task does not expire)
    "release": {"awaiting_dependency": "pending"},
    "block": {"pending": "awaiting_dependency", "retrying": "awaiting_dependency"},
}

PAIRS = [(action, status) for action in ACTIONS for status in sm.STATUSES]


def test_constants() -> None:
    assert set(sm.STATUSES) == {
        "pending",
        "in_progress",
        "awaiting_dependency",
        "completed",
        "failed",
        "retrying",
        "paused",
        "cancelled",
    }
    assert frozenset({"completed", "failed", "cancelled"}) == sm.TERMINAL
    assert frozenset(sm.STATUSES) - sm.TERMINAL == sm.ACTIVE
    assert sm.DEFAULT_MAX_ATTEMPTS == 3


@pytest.mark.parametrize(("action", "from_status"), PAIRS)
def test_transition_table(action: str, from_status: str) -> None:
    doc = state(from_status, attempts=1)
    expected = ALLOWED[action].get(from_status)
    if expected is None:
        with pytest.raises(TransitionRefused) as info:
            ACTIONS[action](doc)
        assert info.value.action == action
        assert info.value.current_status == from_status
        assert from_status in str(info.value)
        assert str(info.value) == info.value.message
    else:
        t = ACTIONS[action](doc)
        assert (t.action, t.from_status, t.to_status) == (action, from_status, expected)
        assert t.set_fields["status"] == expected
        assert t.set_fields["updated_at"] == NOW
        assert "version" not in t.set_fields
        assert "_id" not in t.set_fields
        json.dumps(t.events)  # payloads are JSON-friendly
        if from_status != expected:
            assert t.events[0] == (
                "STATUS_CHANGED",
                {"task_id": "t1", "from_status": from_status, "to_status": expected},
            )
        else:
            assert all(name != "STATUS_CHANGED" for name, _ in t.events)


def test_refusal_messages() -> None:
    with pytest.raises(TransitionRefused) as info:
        sm.start(state("awaiting_dependency"), NOW)
    assert (
        info.value.message
        == "task t1 cannot start: its dependencies are not met (status awaiting_dependency)"
    )
    with pytest.raises(TransitionRefused) as info:
        sm.start(state("in_progress"), NOW)
    assert info.value.message == "cannot start a task that is in_progress"
    with pytest.raises(TransitionRefused, match="task has expired") as info:
        sm.start(state("pending", expires_at=PAST), NOW)
    assert info.value.current_status == "pending"
    with pytest.raises(TransitionRefused, match=r"no attempts left \(3 of 3 used\)") as info:
        sm.start(state("retrying", attempts=3), NOW)
    assert info.value.current_status == "retrying"


def test_start_fields_and_events() -> None:
    doc = state(
        "retrying",
        attempts=1,
        started_at=PAST,
        completed_at=PAST,
        execution_time_seconds=5.0,
        progress_percentage=70,
        current_step="old",
        last_error={"timestamp": PAST, "message": "x", "details": None},
    )
    t = sm.start(doc, NOW)
    assert t.set_fields == {
        "status": "in_progress",
        "updated_at": NOW,
        "attempts": 2,
        "started_at": NOW,
        "completed_at": None,
        "execution_time_seconds": None,
        "progress_percentage": 0,
        "current_step": None,
    }
    assert t.events == [
        ("STATUS_CHANGED", {"task_id": "t1", "from_status": "retrying", "to_status": "in_progress"})
    ]


def test_start_tolerates_missing_fields() -> None:
    t = sm.start({"_id": "t9"}, NOW)
    assert t.from_status == "pending"
    assert t.set_fields["attempts"] == 1


def test_progress_fields_and_events() -> None:
    t = sm.report_progress(state("in_progress", attempts=1), NOW, 42.6, "step 2")
    assert t.set_fields == {
        "status": "in_progress",
        "updated_at": NOW,
        "progress_percentage": 43,
        "current_step": "step 2",
    }
    assert isinstance(t.set_fields["progress_percentage"], int)
    assert t.events == [
        (
            "TASK_PROGRESS",
            {"task_id": "t1", "status": "in_progress", "progress": pytest.approx(0.426), "details": "step 2"},
        )
    ]
    # No step given: the stored step is left alone.
    t = sm.report_progress(state("in_progress", current_step="keep"), NOW, 100)
    assert "current_step" not in t.set_fields
    assert t.events[0][1]["progress"] == 1.0
    assert t.events[0][1]["details"] is None
    assert sm.report_progress(state("in_progress"), NOW, 0).set_fields["progress_percentage"] == 0


@pytest.mark.parametrize("bad", [-1, 101, float("nan"), float("inf"), True, "50", None])
def test_progress_bounds(bad: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        sm.report_progress(state("in_progress"), NOW, bad)
    assert info.value.field == "percentage"


def test_progress_message_and_step_length() -> None:
    with pytest.raises(InvalidInput, match="progress must be between 0 and 100, got 140"):
        sm.report_progress(state("in_progress"), NOW, 140)
    sm.report_progress(state("in_progress"), NOW, 10, "x" * 1000)
    with pytest.raises(InvalidInput) as info:
        sm.report_progress(state("in_progress"), NOW, 10, "x" * 1001)
    assert info.value.field == "current_step"


def test_complete_fields_and_events() -> None:
    doc = state(
        "in_progress",
        attempts=1,
        started_at=NOW - timedelta(seconds=90),
        output_references={"a": 1, "b": 2},
        last_error={"timestamp": PAST, "message": "x", "details": None},
    )
    t = sm.complete(doc, NOW, result={"ok": True}, output_references={"b": 3, "c": 4})
    assert t.set_fields == {
        "status": "completed",
        "updated_at": NOW,
        "completed_at": NOW,
        "progress_percentage": 100,
        "execution_time_seconds": 90.0,
        "output_references": {"a": 1, "b": 3, "c": 4},
    }
    assert t.events == [
        ("STATUS_CHANGED", {"task_id": "t1", "from_status": "in_progress", "to_status": "completed"}),
        ("TASK_COMPLETED", {"task_id": "t1", "status": "completed", "result": {"ok": True}}),
    ]


def test_complete_execution_time() -> None:
    running = state("in_progress", attempts=1, started_at=NOW - timedelta(seconds=10))
    assert sm.complete(running, NOW, execution_time_seconds=2.5).set_fields["execution_time_seconds"] == 2.5
    assert sm.complete(running, NOW, execution_time_seconds=0).set_fields["execution_time_seconds"] == 0.0
    # Naive and ISO-string started_at are UTC; a start in the future (clock skew) clamps to 0.
    naive = state("in_progress", started_at=(NOW - timedelta(seconds=4)).replace(tzinfo=None))
    assert sm.complete(naive, NOW).set_fields["execution_time_seconds"] == 4.0
    iso = state("in_progress", started_at="2024-05-01T11:59:00Z")
    assert sm.complete(iso, NOW).set_fields["execution_time_seconds"] == 60.0
    assert (
        sm.complete(state("in_progress", started_at=FUTURE), NOW).set_fields["execution_time_seconds"] == 0.0
    )
    t = sm.complete(state("in_progress"), NOW)
    assert t.set_fields["execution_time_seconds"] is None
    assert "output_references" not in t.set_fields
    assert t.events[1][1]["result"] == {}


@pytest.mark.parametrize("bad", [-0.1, -5, float("nan"), float("inf"), True, "3"])
def test_complete_refuses_bad_execution_time(bad: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        sm.complete(state("in_progress"), NOW, execution_time_seconds=bad)
    assert info.value.field == "execution_time_seconds"


def test_complete_negative_message_and_bad_result() -> None:
    with pytest.raises(InvalidInput, match="execution time cannot be negative"):
        sm.complete(state("in_progress"), NOW, execution_time_seconds=-1)
    with pytest.raises(InvalidInput) as info:
        sm.complete(state("in_progress"), NOW, result=["not", "a", "dict"])  # type: ignore[arg-type]
    assert info.value.field == "result"


def test_fail_fields_and_events() -> None:
    t = sm.fail(state("in_progress", attempts=1), NOW, "boom", "trace")
    assert t.to_status == "retrying"
    assert t.set_fields == {
        "status": "retrying",
        "updated_at": NOW,
        "last_error": {"timestamp": NOW, "message": "boom", "details": "trace"},
    }
    assert t.events == [
        ("STATUS_CHANGED", {"task_id": "t1", "from_status": "in_progress", "to_status": "retrying"}),
        (
            "TASK_FAILED",
            {"task_id": "t1", "status": "retrying", "error": "boom", "is_final": False, "details": "trace"},
        ),
    ]
    final = sm.fail(state("in_progress", attempts=1), NOW, "boom", is_final=True)
    assert final.to_status == "failed"
    assert "completed_at" not in final.set_fields
    assert final.events[1] == (
        "TASK_FAILED",
        {"task_id": "t1", "status": "failed", "error": "boom", "is_final": True, "details": None},
    )
    # Failing before starting leaves attempts alone; retrying → retrying is not a status change.
    assert "attempts" not in sm.fail(state("pending"), NOW, "x").set_fields
    again = sm.fail(state("retrying", attempts=1), NOW, "x")
    assert [name for name, _ in again.events] == ["TASK_FAILED"]


@pytest.mark.parametrize(
    ("error", "details"),
    [("", None), ("   ", None), (None, None), (5, None), ("x" * 10_001, None), ("ok", 7)],
)
def test_fail_refuses_bad_error(error: Any, details: Any) -> None:
    with pytest.raises(InvalidInput):
        sm.fail(state("in_progress"), NOW, error, details)


def test_fail_accepts_longest_error() -> None:
    assert (
        sm.fail(state("in_progress"), NOW, "x" * 10_000).set_fields["last_error"]["message"] == "x" * 10_000
    )


def test_max_attempts_policy() -> None:
    assert sm.fail(state("in_progress", attempts=2), NOW, "x").to_status == "retrying"
    assert sm.fail(state("in_progress", attempts=3), NOW, "x").to_status == "failed"
    assert sm.fail(state("in_progress", attempts=3), NOW, "x").events[1][1]["is_final"] is True
    # The state's own max_attempts wins over the default; None means the default.
    assert sm.fail(state("in_progress", attempts=3, max_attempts=5), NOW, "x").to_status == "retrying"
    assert sm.fail(state("in_progress", attempts=1, max_attempts=1), NOW, "x").to_status == "failed"
    assert sm.fail(state("in_progress", attempts=3, max_attempts=None), NOW, "x").to_status == "failed"
    with pytest.raises(TransitionRefused, match=r"no attempts left \(5 of 5 used\)"):
        sm.start(state("retrying", attempts=5, max_attempts=5), NOW)
    assert sm.start(state("retrying", attempts=2), NOW).set_fields["attempts"] == 3


def test_retry_grants_one_more_attempt() -> None:
    exhausted = state("failed", attempts=3)
    t = sm.retry(exhausted, NOW)
    assert t.set_fields == {"status": "retrying", "updated_at": NOW, "max_attempts": 4}
    assert t.events == [
        ("STATUS_CHANGED", {"task_id": "t1", "from_status": "failed", "to_status": "retrying"})
    ]
    # Apply it, then the task may start exactly once more.
    retried = {**exhausted, **t.set_fields}
    started = sm.start(retried, NOW)
    assert started.set_fields["attempts"] == 4
    running = {**retried, **started.set_fields}
    assert sm.fail(running, NOW, "again").to_status == "failed"
    # With attempts left, retry leaves max_attempts alone.
    assert "max_attempts" not in sm.retry(state("cancelled", attempts=1), NOW).set_fields


def test_cancel() -> None:
    t = sm.cancel(state("in_progress", current_step="working"), NOW, "user asked")
    assert t.set_fields == {"status": "cancelled", "updated_at": NOW, "current_step": "cancelled: user asked"}
    assert t.events == [
        ("STATUS_CHANGED", {"task_id": "t1", "from_status": "in_progress", "to_status": "cancelled"})
    ]
    assert "current_step" not in sm.cancel(state("pending"), NOW).set_fields
    with pytest.raises(InvalidInput):
        sm.cancel(state("pending"), NOW, "x" * 1000)


def test_expire() -> None:
    doc = state("in_progress", attempts=1, expires_at=PAST)
    t = sm.expire(doc, NOW)
    message = f"task expired at {PAST.isoformat()}"
    details = "expires_at passed before the task finished"
    assert t.set_fields == {
        "status": "failed",
        "updated_at": NOW,
        "last_error": {"timestamp": NOW, "message": message, "details": details},
    }
    assert t.events == [
        ("STATUS_CHANGED", {"task_id": "t1", "from_status": "in_progress", "to_status": "failed"}),
        (
            "TASK_FAILED",
            {"task_id": "t1", "status": "failed", "error": message, "is_final": True, "details": details},
        ),
    ]
    # Not yet expired (or no expiry at all): refused, so a racing extension of expires_at is respected.
    for not_due in (state("in_progress", expires_at=FUTURE), state("in_progress")):
        with pytest.raises(TransitionRefused) as info:
            sm.expire(not_due, NOW)
        assert info.value.current_status == "in_progress"


def test_release_and_block_events() -> None:
    assert sm.release(state("awaiting_dependency"), NOW).events == [
        ("STATUS_CHANGED", {"task_id": "t1", "from_status": "awaiting_dependency", "to_status": "pending"})
    ]
    assert sm.block(state("retrying"), NOW).set_fields == {"status": "awaiting_dependency", "updated_at": NOW}


@pytest.mark.parametrize(
    ("expires_at", "expected"),
    [
        (None, False),
        (PAST, True),
        (NOW, True),
        (FUTURE, False),
        (PAST.replace(tzinfo=None), True),
        (FUTURE.replace(tzinfo=None), False),
        (PAST.astimezone(timezone(timedelta(hours=5))), True),
        (FUTURE.astimezone(timezone(timedelta(hours=-5))), False),
        ("2024-05-01T11:00:00Z", True),
        ("2024-05-01T11:00:00", True),
        ("2024-05-01T13:00:00+00:00", False),
        ("2024-05-01T13:00:00+02:00", True),
        ("not a date", False),
        (12345, False),
    ],
)
def test_is_expired(expires_at: Any, expected: bool) -> None:
    assert sm.is_expired(state("pending", expires_at=expires_at), NOW) is expected


def test_is_expired_only_while_active() -> None:
    for status in sm.TERMINAL:
        assert sm.is_expired(state(status, expires_at=PAST), NOW) is False
    assert sm.is_expired(state("In Progress", expires_at=PAST), NOW) is True
    # A naive `now` is UTC too.
    assert sm.is_expired(state("pending", expires_at=PAST), NOW.replace(tzinfo=None)) is True


def test_dependencies_met_and_initial_status() -> None:
    deps = [{"task_id": "a", "status_expected": "completed"}, {"task_id": "b", "status_expected": "Failed"}]
    doc = state("awaiting_dependency", dependencies=deps)
    assert sm.dependencies_met(doc, {"a": "completed", "b": "failed"}) is True
    assert sm.dependencies_met(doc, {"a": "Completed", "b": "FAILED"}) is True
    assert sm.dependencies_met(doc, {"a": "completed", "b": "in_progress"}) is False
    assert sm.dependencies_met(doc, {"a": "completed"}) is False  # missing id
    assert sm.dependencies_met(doc, {"a": "completed", "b": None}) is False
    # status_expected defaults to completed.
    assert sm.dependencies_met(state(dependencies=[{"task_id": "a"}]), {"a": "completed"}) is True
    assert sm.dependencies_met(state(dependencies=[{"task_id": "a"}]), {"a": "failed"}) is False
    assert sm.dependencies_met(state(), {}) is True
    assert sm.dependencies_met(state(dependencies=None), {}) is True
    assert sm.dependencies_met(state(dependencies=[{"status_expected": "completed"}]), {}) is False

    assert sm.initial_status([], {}) == "pending"
    assert sm.initial_status(deps, {"a": "completed", "b": "failed"}) == "pending"
    assert sm.initial_status(deps, {"a": "completed"}) == "awaiting_dependency"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("In Progress", "in_progress"),
        ("  PENDING ", "pending"),
        ("Awaiting Dependency", "awaiting_dependency"),
        ("in-progress", "in_progress"),
        ("Canceled", "cancelled"),
        ("Completed", "completed"),
        (None, "pending"),
        ("", "pending"),
    ],
)
def test_normalise_status(raw: Any, expected: str) -> None:
    assert sm.normalise_status(raw) == expected


def test_legacy_capitalised_status() -> None:
    doc = {"_id": "old", "status": "In Progress", "attempts": 1}
    t = sm.report_progress(doc, NOW, 10)
    assert t.from_status == "in_progress"
    assert sm.complete(doc, NOW).events[0] == (
        "STATUS_CHANGED",
        {"task_id": "old", "from_status": "in_progress", "to_status": "completed"},
    )
    with pytest.raises(TransitionRefused) as info:
        sm.start({"_id": "old", "status": "Completed"}, NOW)
    assert info.value.current_status == "completed"


@pytest.mark.parametrize(("action", "from_status"), [p for p in PAIRS if ALLOWED[p[0]].get(p[1])])
def test_input_not_mutated(action: str, from_status: str) -> None:
    doc = state(
        from_status,
        attempts=1,
        started_at=PAST,
        expires_at=PAST if action == "expire" else None,
        output_references={"a": 1},
        dependencies=[{"task_id": "x", "status_expected": "completed"}],
        last_error=None,
    )
    before = copy.deepcopy(doc)
    if action == "expire":
        sm.expire(doc, NOW)
    else:
        ACTIONS[action](doc)
    assert doc == before


def test_merge_does_not_mutate_references() -> None:
    refs = {"a": 1}
    t = sm.complete(state("in_progress", output_references=refs), NOW, output_references={"b": 2})
    assert refs == {"a": 1}
    assert t.set_fields["output_references"] == {"a": 1, "b": 2}
