"""Unit tests of `app.store.cursors`: signed opaque cursors and keyset conditions (no database)."""

from __future__ import annotations

import base64
import string
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from app.store.cursors import (
    CursorCodec,
    CursorError,
    SortSpec,
    after_filter,
    cursor_payload,
    sort_keys,
)

SECRET = b"s" * 32
NOT_OURS = "cursor was not issued by this server"
OTHER_ORDER = "cursor belongs to another ordering; start again without `after`"


@pytest.fixture
def codec() -> CursorCodec:
    return CursorCodec(SECRET)


# --- encoding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"s": "created_at:1", "v": datetime(2023, 10, 26, 14, 0, 0, 123000, tzinfo=UTC), "i": "task-1"},
        {"s": "_id:-1", "v": ObjectId("65f0c0ffee0000000000abcd"), "i": ObjectId("65f0c0ffee0000000000abcd")},
        {"s": "status:1", "v": None, "i": "t"},
        {"s": "x:1", "v": 2**40, "i": 1, "f": 1.5, "b": True, "u": "ünïcödé ✓", "l": [1, "a", None]},
    ],
)
def test_roundtrip_keeps_types(codec: CursorCodec, payload: dict[str, Any]) -> None:
    cursor = codec.encode(payload)
    assert isinstance(cursor, str)
    assert set(cursor) <= set(string.ascii_letters + string.digits + "-_")
    decoded = codec.decode(cursor)
    assert decoded == payload
    for key, value in payload.items():
        assert type(decoded[key]) is type(value)


def test_datetimes_come_back_timezone_aware_utc(codec: CursorCodec) -> None:
    naive = datetime(2023, 1, 2, 3, 4, 5, 6000)
    decoded = codec.decode(codec.encode({"v": naive}))
    assert decoded["v"] == naive.replace(tzinfo=UTC)
    assert decoded["v"].tzinfo is not None


def test_datetimes_keep_millisecond_precision_like_mongodb(codec: CursorCodec) -> None:
    value = datetime(2023, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert codec.decode(codec.encode({"v": value}))["v"] == value.replace(microsecond=123000)


def test_cursor_is_opaque_but_stable(codec: CursorCodec) -> None:
    payload = {"s": "status:1", "v": "ready", "i": "t1"}
    assert codec.encode(payload) == codec.encode(dict(reversed(payload.items())))
    assert "ready" not in codec.encode(payload)


def test_every_single_character_change_is_refused(codec: CursorCodec) -> None:
    cursor = codec.encode({"s": "created_at:-1", "v": datetime(2024, 5, 1, tzinfo=UTC), "i": ObjectId()})
    alphabet = string.ascii_letters + string.digits + "-_"
    for position in range(len(cursor)):
        replacement = alphabet[(alphabet.index(cursor[position]) + 1) % len(alphabet)]
        tampered = cursor[:position] + replacement + cursor[position + 1 :]
        with pytest.raises(CursorError) as info:
            codec.decode(tampered)
        assert str(info.value) == NOT_OURS


def test_forged_payload_with_reused_tag_is_refused(codec: CursorCodec) -> None:
    cursor = codec.encode({"s": "status:1", "v": "a", "i": "t1"})
    data = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    forged_body = b'{"i":"t9","s":"status:1","v":"a"}'
    forged = base64.urlsafe_b64encode(forged_body + data[-16:]).rstrip(b"=").decode()
    with pytest.raises(CursorError, match=NOT_OURS):
        codec.decode(forged)


def test_cursor_from_another_secret_is_refused(codec: CursorCodec) -> None:
    foreign = CursorCodec(b"another secret").encode({"s": "_id:1", "v": "a", "i": "a"})
    with pytest.raises(CursorError, match=NOT_OURS):
        codec.decode(foreign)


@pytest.mark.parametrize(
    "garbage",
    ["", "a", "abc", "!!!!", "not a cursor", "====", "YQ", "YWJj\n", "a" * 5000, "eyJzIjoiYSJ9", "Zm9v+/8="],
)
def test_garbage_is_refused(codec: CursorCodec, garbage: str) -> None:
    with pytest.raises(CursorError) as info:
        codec.decode(garbage)
    assert str(info.value) == NOT_OURS


def test_non_string_is_refused(codec: CursorCodec) -> None:
    with pytest.raises(CursorError, match=NOT_OURS):
        codec.decode(None)  # type: ignore[arg-type]


def test_signed_non_object_is_refused() -> None:
    codec = CursorCodec(SECRET)
    body = b"[1,2]"
    token = base64.urlsafe_b64encode(body + codec._tag(body)).rstrip(b"=").decode()
    with pytest.raises(CursorError, match="cursor is malformed"):
        codec.decode(token)
    body = b"{not json"
    token = base64.urlsafe_b64encode(body + codec._tag(body)).rstrip(b"=").decode()
    with pytest.raises(CursorError, match="cursor is malformed"):
        codec.decode(token)


def test_secret_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="non-empty bytes"):
        CursorCodec(b"")


def test_cursor_error_is_a_value_error() -> None:
    assert issubclass(CursorError, ValueError)


# --- keyset helpers -------------------------------------------------------------------------------------


def test_sort_spec_validates_direction() -> None:
    with pytest.raises(ValueError, match="sort direction must be 1 or -1"):
        SortSpec("created_at", 0)
    with pytest.raises(ValueError, match="sort direction must be 1 or -1"):
        SortSpec("created_at", True)


def test_sort_keys() -> None:
    assert sort_keys(SortSpec("_id", 1)) == [("_id", 1)]
    assert sort_keys(SortSpec("_id", -1)) == [("_id", -1)]
    assert sort_keys(SortSpec("created_at", 1)) == [("created_at", 1), ("_id", 1)]
    assert sort_keys(SortSpec("status", -1)) == [("status", -1), ("_id", -1)]


def test_cursor_payload() -> None:
    when = datetime(2023, 10, 26, 14, tzinfo=UTC)
    assert cursor_payload(SortSpec("created_at", -1), {"_id": "t1", "created_at": when}) == {
        "s": "created_at:-1",
        "v": when,
        "i": "t1",
    }
    assert cursor_payload(SortSpec("created_at", 1), {"_id": "t2"}) == {
        "s": "created_at:1",
        "v": None,
        "i": "t2",
    }
    assert cursor_payload(SortSpec("_id", 1), {"_id": "t3"}) == {"s": "_id:1", "v": "t3", "i": "t3"}
    assert (
        cursor_payload(SortSpec("last_error.timestamp", 1), {"_id": "t4", "last_error": {"timestamp": when}})[
            "v"
        ]
        == when
    )


def test_after_filter_on_id() -> None:
    assert after_filter(SortSpec("_id", 1), {"s": "_id:1", "v": "a", "i": "a"}) == {"_id": {"$gt": "a"}}
    assert after_filter(SortSpec("_id", -1), {"s": "_id:-1", "v": "a", "i": "a"}) == {"_id": {"$lt": "a"}}


def test_after_filter_with_a_value() -> None:
    when = datetime(2023, 10, 26, 14, tzinfo=UTC)
    asc = SortSpec("created_at", 1)
    assert after_filter(asc, {"s": "created_at:1", "v": when, "i": "t5"}) == {
        "$or": [{"created_at": {"$gt": when}}, {"created_at": when, "_id": {"$gt": "t5"}}]
    }
    desc = SortSpec("created_at", -1)
    assert after_filter(desc, {"s": "created_at:-1", "v": when, "i": "t5"}) == {
        "$or": [
            {"created_at": {"$lt": when}},
            {"created_at": when, "_id": {"$lt": "t5"}},
            {"created_at": None},
        ]
    }


def test_after_filter_with_null_value() -> None:
    asc = SortSpec("priority", 1)
    assert after_filter(asc, {"s": "priority:1", "v": None, "i": "t5"}) == {
        "$or": [{"priority": None, "_id": {"$gt": "t5"}}, {"priority": {"$ne": None}}]
    }
    desc = SortSpec("priority", -1)
    assert after_filter(desc, {"s": "priority:-1", "v": None, "i": "t5"}) == {
        "priority": None,
        "_id": {"$lt": "t5"},
    }
    # A payload without "v" (a document missing the field) behaves like null.
    assert after_filter(desc, {"s": "priority:-1", "i": "t5"}) == {"priority": None, "_id": {"$lt": "t5"}}


def test_after_filter_refuses_another_ordering() -> None:
    payload = {"s": "created_at:1", "v": None, "i": "t1"}
    for sort in (SortSpec("created_at", -1), SortSpec("updated_at", 1), SortSpec("_id", 1)):
        with pytest.raises(CursorError) as info:
            after_filter(sort, payload)
        assert str(info.value) == OTHER_ORDER


def test_after_filter_refuses_malformed_payloads() -> None:
    for payload in ({}, {"s": "_id:1"}, {"i": "x"}):
        with pytest.raises(CursorError, match="cursor is malformed"):
            after_filter(SortSpec("_id", 1), payload)


def test_full_cycle_through_the_codec(codec: CursorCodec) -> None:
    sort = SortSpec("created_at", 1)
    oid = ObjectId()
    when = datetime(2023, 10, 26, 14, 0, 0, 500000, tzinfo=UTC)
    cursor = codec.encode(cursor_payload(sort, {"_id": oid, "created_at": when, "status": "x"}))
    assert after_filter(sort, codec.decode(cursor)) == {
        "$or": [{"created_at": {"$gt": when}}, {"created_at": when, "_id": {"$gt": oid}}]
    }
