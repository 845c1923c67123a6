"""Unit tests: app.timeutil, the UTC clock and the RFC 3339 timestamps the API writes."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.timeutil import isoformat, utcnow

RFC3339_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def test_utcnow_is_aware_utc_and_now():
    now = utcnow()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert abs(now.timestamp() - time.time()) < 5


def test_isoformat_of_none_is_none():
    assert isoformat(None) is None


def test_isoformat_has_milliseconds_and_z():
    value = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    assert isoformat(value) == "2026-01-02T03:04:05.678Z"
    assert RFC3339_MILLIS.fullmatch(isoformat(utcnow()))


@pytest.mark.parametrize(
    ("microsecond", "expected"),
    [(0, ".000Z"), (999, ".000Z"), (1_000, ".001Z"), (123_999, ".123Z"), (999_999, ".999Z")],
)
def test_isoformat_truncates_to_milliseconds(microsecond, expected):
    """Truncated, never rounded: rounding 23:59:59.9999 up would change the second."""
    value = datetime(2026, 12, 31, 23, 59, 59, microsecond, tzinfo=UTC)
    assert isoformat(value) == "2026-12-31T23:59:59" + expected


def test_naive_datetimes_are_taken_as_utc():
    """SQLite hands back naive datetimes; they were stored as UTC."""
    assert isoformat(datetime(2026, 5, 6, 7, 8, 9)) == "2026-05-06T07:08:09.000Z"


def test_other_offsets_are_converted_to_utc():
    plus_two = timezone(timedelta(hours=2))
    value = datetime(2026, 1, 1, 1, 30, 0, tzinfo=plus_two)
    assert isoformat(value) == "2025-12-31T23:30:00.000Z"


def test_isoformat_reads_back_to_the_same_instant_within_a_millisecond():
    now = utcnow()
    back = datetime.fromisoformat(isoformat(now).replace("Z", "+00:00"))
    assert timedelta(0) <= now - back < timedelta(milliseconds=1)
