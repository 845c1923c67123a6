"""Failed authentications counted per key in fixed windows, shared by every instance.

`FailureCounters` has the shape of warehouse's RateLimiter over `limits`:
`test` (is every key below its limit in this window?), `hit` (count one
failure for each key) and `resets_in` (seconds until the window ends). A
key is any string; app/oauth/throttle.py counts client ids per address,
addresses and client ids from every address, and refuses with 429 whoever
is past a limit (see its docstring for the policy).

The counts live in a `CounterStore`, picked once by `create_app`
(`store_for`): Redis (INCR + EXPIRE) when REDIS_URL is set, else the
`auth_failures` table (an atomic upsert; rows past their expiry are purged
now and then), read on PostgreSQL by one autocommit statement. `test` itself
reads no store while the process's feed is up: `app.state.failure_feed` keeps
a local copy of the keys over a limit, pushed by the store as they cross it.

When Redis is configured but unreachable the counters fail open: `test`
allows and `hit` counts nothing, and a warning is logged, because refusing
every client while Redis is down would turn a Redis outage into a full
outage. Redis is then not tried again for a few seconds so that each request
does not pay a connection timeout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import redis
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.models import AuthFailure
from app.state import failure_feed
from app.state.autocommit import AutocommitExecutor
from app.state.failure_feed import Blocks, Feed

log = logging.getLogger(__name__)

# After a Redis error, serve without limits for this long before trying again.
REDIS_RETRY_AFTER = 5.0
# Expired auth_failures rows are deleted at most this often per process.
PURGE_INTERVAL = 60.0


class StoreUnavailable(Exception):
    """The counters' store cannot be reached; the counters fail open."""


def counter_key(kind: str, *values: str) -> str:
    """The key counting failures of one kind of value, or of a tuple of values.

    One value (a client id, an address) is kept as it is when readable; several
    (a client id and an address) are written as a JSON array, which no choice
    of characters in one value can make equal to another pair's. A kind is
    always used with the same number of values.
    """
    value = values[0] if len(values) == 1 else json.dumps(list(values), separators=(",", ":"))
    # Ids and addresses from the request are untrusted: keep readable ones as
    # they are and hash anything long or odd (PostgreSQL refuses NUL in text).
    if len(value) <= 128 and value.isascii() and value.isprintable():
        return f"{kind}:{value}"
    return f"{kind}#" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class CounterStore(Protocol):
    """Failure counts per key and window, and the feed that reports keys over a limit."""

    def counts(self, keys: Sequence[str], window_start: int) -> list[int]:
        """Each key's count in the window starting at `window_start` (0 if none).

        :raises StoreUnavailable: Redis is unreachable.
        """

    def increment(self, limits: Mapping[str, int], window_start: int, window: int) -> list[int]:
        """Count one failure for each key; returns the new counts in `limits`' order.

        A key whose count reaches its limit is announced to every process's
        feed (in the same transaction or pipeline as the count).

        :raises StoreUnavailable: Redis is unreachable.
        """

    def feed_source(self, min_limit: int) -> failure_feed.Source | None:
        """Where a feed hears of new blocks, or None when this store has no feed."""


def store_for(
    redis_client: redis.Redis | None, executor: AutocommitExecutor | None, engine: sa.Engine
) -> CounterStore:
    """The backend for this deployment: Redis if configured, else PostgreSQL, else SQL."""
    if redis_client is not None:
        return RedisCounters(redis_client)
    if executor is not None:
        return PostgresCounters(executor, engine)
    return SqlCounters(engine)


class RedisCounters:
    """`authfail:{window_start}:{key}` counters that expire with their window."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @staticmethod
    def _name(key: str, window_start: int) -> str:
        return f"authfail:{window_start}:{key}"

    def counts(self, keys: Sequence[str], window_start: int) -> list[int]:
        try:
            values = self.client.mget([self._name(k, window_start) for k in keys])
        except redis.RedisError as error:
            raise StoreUnavailable(type(error).__name__) from error
        return [int(v or 0) for v in values]

    def increment(self, limits: Mapping[str, int], window_start: int, window: int) -> list[int]:
        try:
            return self._increment(limits, window_start, window)
        except redis.RedisError as error:
            raise StoreUnavailable(type(error).__name__) from error

    def _increment(self, limits: Mapping[str, int], window_start: int, window: int) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        for key in limits:
            name = self._name(key, window_start)
            pipe.incr(name)
            # The key dies with its window (plus slack for clock skew).
            pipe.expire(name, window + 5)
        counts = [int(n) for n in pipe.execute()[::2]]
        over = [
            (key, n) for (key, limit), n in zip(limits.items(), counts, strict=True) if n >= limit
        ]
        if over:
            # Every process's feed learns of the block; a feed that subscribes
            # later finds it in the window's hash.
            blocked = failure_feed.REDIS_BLOCKED.format(window_start=window_start)
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(blocked, mapping=dict(over))
            pipe.expire(blocked, window + 5)
            for key, n in over:
                pipe.publish(failure_feed.CHANNEL, failure_feed.payload(window_start, n, key))
            pipe.execute()
        return counts

    def feed_source(self, min_limit: int) -> failure_feed.Source:
        client = self.client
        return failure_feed.RedisSource(lambda: client)


class _Purge:
    """Whether this process deletes expired auth_failures rows now (once per PURGE_INTERVAL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + PURGE_INTERVAL
            return True


def _expires_at(window_start: int, window: int) -> datetime:
    return datetime.fromtimestamp(window_start + window, UTC) + timedelta(seconds=5)


def _upsert_rows(limits: Mapping[str, int], window_start: int, window: int) -> list[dict]:
    expires_at = _expires_at(window_start, window)
    return [
        {"key": key, "window_start": window_start, "count": 1, "expires_at": expires_at}
        for key in sorted(limits)  # one lock order for every writer
    ]


_PURGE = sa.delete(AuthFailure).where(AuthFailure.expires_at < sa.bindparam("now"))

# Built once: the expanding IN takes one to three keys, so each request only
# binds values and SQLAlchemy reuses the compiled form from its cache.
_COUNTS = sa.select(AuthFailure.key, AuthFailure.count).where(
    AuthFailure.key.in_(sa.bindparam("keys", expanding=True)),
    AuthFailure.window_start == sa.bindparam("window_start"),
)


class SqlCounters:
    """`auth_failures` rows through SQLAlchemy Core, on SQLite or PostgreSQL; no feed.

    Not the request's session: the reads go back to the pool at once, and a
    failure is counted even though the request ends in an error.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._purge = _Purge()
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def counts(self, keys: Sequence[str], window_start: int) -> list[int]:
        with self.engine.connect() as conn:
            rows = conn.execute(_COUNTS, {"keys": list(keys), "window_start": window_start}).all()
        found = dict(rows)
        return [found.get(key, 0) for key in keys]

    def _upsert(self, limits: Mapping[str, int], window_start: int, window: int):
        stmt = self._insert(AuthFailure).values(_upsert_rows(limits, window_start, window))
        return stmt.on_conflict_do_update(
            index_elements=[AuthFailure.key, AuthFailure.window_start],
            set_={"count": AuthFailure.count + 1},
        )

    def increment(self, limits: Mapping[str, int], window_start: int, window: int) -> list[int]:
        stmt = self._upsert(limits, window_start, window)
        with self.engine.begin() as conn:
            conn.execute(stmt)
            counts = self._read_back(conn, limits, window_start)
            if self._purge.due():
                conn.execute(_PURGE, {"now": datetime.now(UTC)})
        return counts

    def _read_back(
        self, conn: sa.Connection, limits: Mapping[str, int], window_start: int
    ) -> list[int]:
        rows = conn.execute(_COUNTS, {"keys": list(limits), "window_start": window_start}).all()
        found = dict(rows)
        return [found.get(key, 0) for key in limits]

    def feed_source(self, min_limit: int) -> failure_feed.Source | None:
        # Several processes may share one SQLite file, and a local read is cheap there.
        return None


def _pg_counts(n: int) -> str:
    """`_COUNTS` in PostgreSQL's own SQL, for the autocommit executor."""
    # One placeholder per key (one to three): plain text parameters cost the
    # driver less to send than an array, and the driver prepares each form once.
    marks = ", ".join(["%s"] * n)
    return f"SELECT key, count FROM auth_failures WHERE key IN ({marks}) AND window_start = %s"  # noqa: S608


_PG_COUNTS = {n: _pg_counts(n) for n in (1, 2, 3)}


class PostgresCounters(SqlCounters):
    """`auth_failures` rows on PostgreSQL: one autocommit read; LISTEN/NOTIFY feed."""

    def __init__(self, executor: AutocommitExecutor, engine: sa.Engine) -> None:
        super().__init__(engine)
        self.executor = executor

    def counts(self, keys: Sequence[str], window_start: int) -> list[int]:
        query = _PG_COUNTS.get(len(keys)) or _pg_counts(len(keys))
        found = dict(self.executor.fetch(query, (*keys, window_start)))
        return [found.get(key, 0) for key in keys]

    def increment(self, limits: Mapping[str, int], window_start: int, window: int) -> list[int]:
        stmt = self._upsert(limits, window_start, window)
        with self.engine.begin() as conn:
            found = dict(conn.execute(stmt.returning(AuthFailure.key, AuthFailure.count)).all())
            counts = [found.get(key, 0) for key in limits]
            for key, n in zip(limits, counts, strict=True):
                if n >= limits[key]:
                    # Delivered to every feed when this transaction commits.
                    message = failure_feed.payload(window_start, n, key)
                    conn.execute(sa.select(sa.func.pg_notify(failure_feed.CHANNEL, message)))
            if self._purge.due():
                conn.execute(_PURGE, {"now": datetime.now(UTC)})
        return counts

    def feed_source(self, min_limit: int) -> failure_feed.Source:
        url = self.engine.url.set(drivername="postgresql")
        return failure_feed.PostgresSource(url.render_as_string(hide_password=False), min_limit)


class FailureCounters:
    """Failures per key in fixed windows of `window` seconds: test, hit, resets_in."""

    def __init__(
        self,
        store: CounterStore,
        window: int,
        engine: sa.Engine,
        min_limit: int = 1,
        use_feed: bool = True,
    ) -> None:
        """`min_limit`: the smallest limit `test` is given (the feed loads blocks from there up)."""
        self.store = store
        self.window = max(1, window)
        self.min_limit = max(1, min_limit)
        self.use_feed = use_feed
        # Tests and forks dispose the app's engine; the feed goes with it.
        self._engine = engine
        self._lock = threading.Lock()
        self._down_until = 0.0
        # (pid, feed): a forked worker starts its own; None where there is no feed.
        self._feed: tuple[int, Feed | None] | None = None

    def window_start(self) -> int:
        return int(time.time() // self.window) * self.window

    def test(self, limits: Mapping[str, int]) -> bool:
        """True when every key is below its limit in the current window.

        No I/O while this process's feed is up (app/state/failure_feed.py);
        True while the store is unreachable (fail open).
        """
        window_start = self.window_start()
        blocks = self.blocks()
        if blocks is not None and blocks.trusted(window_start):
            return all(blocks.count(key, window_start) < limit for key, limit in limits.items())
        if time.monotonic() < self._down_until:
            return True
        try:
            counts = self.store.counts(list(limits), window_start)
        except StoreUnavailable as error:
            self._failed(error)
            return True
        return all(count < limit for count, limit in zip(counts, limits.values(), strict=True))

    def nothing_blocked(self) -> bool:
        """True when this process's trusted feed holds no count for the window: no I/O, no keys.

        The common case of a request (nobody is failing): `test` would be
        True for every key, so callers may skip making the keys at all.
        """
        window_start = self.window_start()
        blocks = self.blocks()
        return blocks is not None and blocks.trusted(window_start) and blocks.empty(window_start)

    def hit(self, limits: Mapping[str, int]) -> None:
        """Count one failure for each key (of which `limits` gives the limit)."""
        if not limits or time.monotonic() < self._down_until:
            return
        window_start = self.window_start()
        try:
            counts = self.store.increment(limits, window_start, self.window)
        except StoreUnavailable as error:
            self._failed(error)
            return
        blocks = self.blocks()
        if blocks is not None:
            # This process refuses at once; the others hear it from their feeds.
            for (key, limit), count in zip(limits.items(), counts, strict=True):
                if count >= limit:
                    blocks.add(window_start, count, key)

    def resets_in(self) -> int:
        """Whole seconds until the current window ends (at least 1): a Retry-After."""
        now = time.time()
        return max(1, math.ceil(self.window_start() + self.window - now))

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self._down_until = time.monotonic() + REDIS_RETRY_AFTER
        log.warning(
            "rate limits off for %ss: Redis unavailable (%s)",
            REDIS_RETRY_AFTER,
            error,
        )

    # --- the feed ------------------------------------------------------------------

    def feed(self) -> Feed | None:
        """This process's block feed (started on first use), or None without one."""
        current = self._feed
        pid = os.getpid()
        if current is not None and current[0] == pid and not _stopped(current[1]):
            return current[1]
        with self._lock:
            current = self._feed
            # A disposed engine stopped the feed; the app may go on serving.
            if current is None or current[0] != pid or _stopped(current[1]):
                current = self._feed = (pid, self._start_feed())
        return current[1]

    def blocks(self) -> Blocks | None:
        """The local copy of the blocks when there is a feed; it may not be trusted yet."""
        feed = self.feed()
        return feed.blocks if feed is not None else None

    def _start_feed(self) -> Feed | None:
        source = self.store.feed_source(self.min_limit) if self.use_feed else None
        if source is None:
            return None
        feed = Feed(source, self.window_start).start()
        sa.event.listen(self._engine, "engine_disposed", lambda _engine: feed.stop())
        return feed


def _stopped(feed: Feed | None) -> bool:
    return feed is not None and feed.stopped
