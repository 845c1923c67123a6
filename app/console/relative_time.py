"""Times as people read them in a list: "3 min ago", "in 2 days"; pure, for the console's tables.

The exact UTC time goes beside it (a `title`), so nothing is lost by rounding:
each unit is counted down (floor), never up, so "59 min ago" is not "1 hour ago"
before the hour is full.
"""

from __future__ import annotations

from datetime import datetime

_UNITS = (
    (365 * 86400, "year", "years"),
    (30 * 86400, "month", "months"),
    (86400, "day", "days"),
    (3600, "hour", "hours"),
    (60, "min", "min"),
)


def relative_time(value: datetime, now: datetime) -> str:
    """`value` seen from `now`: "just now", "N min ago", "in N days", ... (both timezone-aware)."""
    seconds = (value - now).total_seconds()
    future = seconds > 0
    span = abs(seconds)
    if span < 60:
        return "in under a minute" if future else "just now"
    for size, one, many in _UNITS:
        if span >= size:
            count = int(span // size)
            words = f"{count} {one if count == 1 else many}"
            return f"in {words}" if future else f"{words} ago"
    raise AssertionError("unreachable: a span of a minute or more has a unit")
