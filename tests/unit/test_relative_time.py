"""The console's relative times: units counted down, past and future, singular and plural."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.console.relative_time import relative_time

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=-59), "just now"),
        (timedelta(seconds=59), "in under a minute"),
        (timedelta(minutes=-1), "1 min ago"),
        (timedelta(minutes=-3, seconds=-59), "3 min ago"),
        (timedelta(minutes=59, seconds=59), "in 59 min"),
        (timedelta(hours=-1), "1 hour ago"),
        (timedelta(hours=5, minutes=30), "in 5 hours"),
        (timedelta(hours=-23, minutes=-59), "23 hours ago"),
        (timedelta(days=1), "in 1 day"),
        (timedelta(days=2, hours=3), "in 2 days"),
        (timedelta(days=-29), "29 days ago"),
        (timedelta(days=30), "in 1 month"),
        (timedelta(days=-200), "6 months ago"),
        (timedelta(days=365), "in 1 year"),
        (timedelta(days=-3 * 365 - 10), "3 years ago"),
    ],
)
def test_relative_time(offset: timedelta, expected: str) -> None:
    assert relative_time(NOW + offset, NOW) == expected


def test_timezones_do_not_change_the_answer() -> None:
    other = (NOW - timedelta(minutes=3)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert relative_time(other, NOW) == "3 min ago"
