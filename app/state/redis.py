"""The optional Redis that holds state every instance shares.

Without REDIS_URL, shared state (revocation deny-list, assertion replay
cache, failure counters) lives in the database; never in process memory
alone. `create_app` calls `connect` once and hands the client (or None) to
the stores that can use it (app/state/jti.py, app/state/failures.py).
"""

from __future__ import annotations

import redis


def connect(url: str | None) -> redis.Redis | None:
    """A Redis client for `url` (no connection is opened yet), or None without one.

    Short timeouts: a Redis that stops answering must cost a request about a
    second (then 503 or fail-open), not a hung worker.
    """
    if not url:
        return None
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=1,
        socket_timeout=1,
        health_check_interval=30,
    )
