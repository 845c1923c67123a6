"""Access to the optional Redis used for state all instances share.

Without REDIS_URL, shared state (revocation deny-list, assertion replay
cache, rate-limit counters) lives in the database; never in process memory
alone. Modules that keep such state take `redis_client()` and fall back to
their database table when it returns None.
"""

from __future__ import annotations

import redis
from flask import current_app

_EXTENSION = "ccserver.redis"


def redis_client() -> redis.Redis | None:
    """The app's Redis client, or None when REDIS_URL is not set."""
    app = current_app._get_current_object()
    if _EXTENSION not in app.extensions:
        url = app.config.get("REDIS_URL")
        app.extensions[_EXTENSION] = (
            redis.Redis.from_url(
                url,
                socket_connect_timeout=1,
                socket_timeout=1,
                health_check_interval=30,
            )
            if url
            else None
        )
    return app.extensions[_EXTENSION]
