"""Limits on failed client authentications (contract section 3).

Failures are counted per claimed client id and per client address (see
`app.http.client_address`) in fixed windows of AUTH_FAILURE_WINDOW seconds. Once either
count reaches its limit (AUTH_FAILURE_LIMIT_CLIENT, AUTH_FAILURE_LIMIT_ADDRESS;
0 turns a limit off) every request naming that client or coming from that
address is refused with `429 slow_down` and a `Retry-After` header until the
window ends, before its credentials are checked: even correct credentials
are refused, so the limit cannot be used to confirm a guessed secret.
Refused attempts are not counted, so when the window ends the counts start
from zero and no attacker can lock a client out for longer than one window.

`slow_down` is the token-endpoint error registered by RFC 8628 §3.5 (OAuth
Extensions Error Registry, RFC 6749 §8.5) for "polling too fast".

Counters are shared by every instance: in Redis (INCR + EXPIRE) when
REDIS_URL is set, else in the `auth_failures` table (an atomic upsert; rows
past their expiry are purged now and then). The pre-check itself reads
neither while the process's feed is up: `app.state.failure_feed` keeps a local
copy of the keys over a limit, pushed by the store as they cross it. When Redis is configured but
unreachable the limiter fails open: requests are served without limits and a
warning is logged, because refusing every client while Redis is down would
turn a Redis outage into a full outage. Redis is then not tried again for a
few seconds so that each request does not pay a connection timeout.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import jwt
import redis
import sqlalchemy as sa
from authlib.oauth2.rfc6749 import OAuth2Error
from flask import Flask, current_app
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db
from app.http.client_address import client_address
from app.models import AuthFailure
from app.state import failure_feed
from app.state.autocommit import postgres_reader
from app.state.failure_feed import Blocks, Feed
from app.state.redis import redis_client

log = logging.getLogger(__name__)

# After a Redis error, serve without limits for this long before trying again.
REDIS_RETRY_AFTER = 5.0
# Expired auth_failures rows are deleted at most this often per process.
PURGE_INTERVAL = 60.0


class RateLimited(OAuth2Error):
    """429 slow_down with Retry-After: too many failed client authentications."""

    error = "slow_down"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            description="Too many failed client authentications; retry later.",
            status_code=429,
        )
        self.retry_after = retry_after

    def get_headers(self):
        headers = super().get_headers()
        headers.append(("Retry-After", str(self.retry_after)))
        return headers


def _key(kind: str, value: str) -> str:
    # Ids and addresses from the request are untrusted: keep readable ones as
    # they are and hash anything long or odd (PostgreSQL refuses NUL in text).
    if len(value) <= 128 and value.isascii() and value.isprintable():
        return f"{kind}:{value}"
    return f"{kind}#" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def claimed_client_id(request) -> str | None:
    """The client id a token, introspection or revocation request claims, unverified."""
    from app.oauth.requests import parse_basic_credentials

    data = request.payload.data
    header = request.headers.get("Authorization")
    if header:
        credentials = parse_basic_credentials(header)
        return credentials[0] if credentials else None
    assertion = data.get("client_assertion")
    if assertion:
        try:
            # Only to name the counter: the assertion is verified elsewhere.
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}
        subject = claims.get("sub") if isinstance(claims, dict) else None
        if isinstance(subject, str) and subject:
            return subject
    client_id = data.get("client_id")
    return client_id or None


class _RedisCounters:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @staticmethod
    def _name(key: str, window_start: int) -> str:
        return f"authfail:{window_start}:{key}"

    def counts(self, keys: list[str], window_start: int) -> list[int]:
        values = self.client.mget([self._name(k, window_start) for k in keys])
        return [int(v or 0) for v in values]

    def increment(self, limits: dict[str, int], window_start: int, window: int) -> list[int]:
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
            # Every process's feed learns of the block (ratelimit_feed); a feed
            # that subscribes later finds it in the window's hash.
            blocked = failure_feed.REDIS_BLOCKED.format(window_start=window_start)
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(blocked, mapping=dict(over))
            pipe.expire(blocked, window + 5)
            for key, n in over:
                pipe.publish(failure_feed.CHANNEL, failure_feed.payload(window_start, n, key))
            pipe.execute()
        return counts


# Built once: the expanding IN takes one or two keys, so each request only
# binds values and SQLAlchemy reuses the compiled form from its cache.
_COUNTS = sa.select(AuthFailure.key, AuthFailure.count).where(
    AuthFailure.key.in_(sa.bindparam("keys", expanding=True)),
    AuthFailure.window_start == sa.bindparam("window_start"),
)


def _pg_counts(n: int) -> str:
    """The same query in PostgreSQL's own SQL, for the autocommit reader (app/pgread.py)."""
    # One placeholder per key (one or two): plain text parameters cost the
    # driver less to send than an array, and the driver prepares each form once.
    marks = ", ".join(["%s"] * n)
    return f"SELECT key, count FROM auth_failures WHERE key IN ({marks}) AND window_start = %s"  # noqa: S608


_PG_COUNTS = {n: _pg_counts(n) for n in (1, 2, 3)}


class _DatabaseCounters:
    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def counts(self, keys: list[str], window_start: int) -> list[int]:
        # Not the request's session: the reads go back to the pool at once,
        # and a failure is counted even though the request ends in an error.
        reader = postgres_reader()
        if reader is not None:
            query = _PG_COUNTS.get(len(keys)) or _pg_counts(len(keys))
            rows = reader.fetch(query, (*keys, window_start))
        else:
            with db.engine.connect() as conn:
                rows = conn.execute(_COUNTS, {"keys": keys, "window_start": window_start}).all()
        found = dict(rows)
        return [found.get(key, 0) for key in keys]

    def increment(self, limits: dict[str, int], window_start: int, window: int) -> list[int]:
        expires_at = datetime.fromtimestamp(window_start + window, UTC) + timedelta(seconds=5)
        on_postgres = db.engine.dialect.name == "postgresql"
        insert = postgresql.insert if on_postgres else sqlite.insert
        rows = [
            {"key": key, "window_start": window_start, "count": 1, "expires_at": expires_at}
            for key in sorted(limits)  # one lock order for every writer
        ]
        stmt = insert(AuthFailure).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[AuthFailure.key, AuthFailure.window_start],
            set_={"count": AuthFailure.count + 1},
        )
        counts = [0] * len(limits)
        with db.engine.begin() as conn:
            if on_postgres:
                found = dict(conn.execute(stmt.returning(AuthFailure.key, AuthFailure.count)).all())
                counts = [found.get(key, 0) for key in limits]
                for key, n in zip(limits, counts, strict=True):
                    if n >= limits[key]:
                        # Delivered to every feed when this transaction commits.
                        message = failure_feed.payload(window_start, n, key)
                        conn.execute(sa.select(sa.func.pg_notify(failure_feed.CHANNEL, message)))
            else:
                conn.execute(stmt)
            if self.limiter.purge_due():
                conn.execute(
                    sa.delete(AuthFailure).where(AuthFailure.expires_at < datetime.now(UTC))
                )
        return counts


class RateLimiter:
    """Counts failed client authentications and refuses clients past the limit."""

    def __init__(
        self, limit_client: int, limit_address: int, window: int, use_feed: bool = True
    ) -> None:
        self.limit_client = limit_client
        self.limit_address = limit_address
        self.window = max(1, window)
        self.use_feed = use_feed
        self._lock = threading.Lock()
        self._redis_down_until = 0.0
        self._next_purge = 0.0
        # (pid, feed): a forked worker starts its own; None where there is no feed.
        self._feed: tuple[int, Feed | None] | None = None

    def feed(self) -> Feed | None:
        """This process's block feed (started on first use), or None on SQLite or when off."""
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

    def _start_feed(self) -> Feed | None:
        if not self.use_feed:
            return None
        app = current_app._get_current_object()
        engine = db.engine
        limits = [n for n in (self.limit_client, self.limit_address) if n > 0]
        if app.config.get("REDIS_URL"):
            client = redis_client()  # the feed's thread has no app context to ask in
            source = failure_feed.RedisSource(lambda: client)
        elif engine.dialect.name == "postgresql":
            conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            source = failure_feed.PostgresSource(conninfo, min(limits))
        else:
            return None
        feed = Feed(source, lambda: self._window()[0]).start()
        # Tests and forks dispose the app's engine; the feed goes with it.
        sa.event.listen(engine, "engine_disposed", lambda _engine: feed.stop())
        return feed

    def blocks(self) -> Blocks | None:
        """The local copy of the blocks when there is a feed; it may not be trusted yet."""
        feed = self.feed()
        return feed.blocks if feed is not None else None

    @classmethod
    def from_config(cls, config) -> RateLimiter:
        return cls(
            int(config["AUTH_FAILURE_LIMIT_CLIENT"]),
            int(config["AUTH_FAILURE_LIMIT_ADDRESS"]),
            int(config["AUTH_FAILURE_WINDOW"]),
            bool(config.get("AUTH_FAILURE_FEED", True)),
        )

    @property
    def enabled(self) -> bool:
        return self.limit_client > 0 or self.limit_address > 0

    def purge_due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next_purge:
                return False
            self._next_purge = now + PURGE_INTERVAL
            return True

    def _keys(self, request) -> list[tuple[str, int]]:
        keys = []
        client_id = claimed_client_id(request)
        if client_id and self.limit_client > 0:
            keys.append((_key("client", client_id), self.limit_client))
        if self.limit_address > 0:
            keys.append((_key("addr", client_address()), self.limit_address))
        return keys

    def _counters(self) -> _RedisCounters | _DatabaseCounters | None:
        """The shared store, or None while a configured Redis is failing (fail open)."""
        if not current_app.config.get("REDIS_URL"):
            return _DatabaseCounters(self)
        if time.monotonic() < self._redis_down_until:
            return None
        return _RedisCounters(redis_client())

    def _redis_failed(self, error: Exception) -> None:
        with self._lock:
            self._redis_down_until = time.monotonic() + REDIS_RETRY_AFTER
        log.warning(
            "rate limits off for %ss: Redis unavailable (%s)",
            REDIS_RETRY_AFTER,
            type(error).__name__,
        )

    def _window(self) -> tuple[int, float]:
        now = time.time()
        return int(now // self.window) * self.window, now

    def check(self, request) -> None:
        """Refuse the request if its client id or address is past its limit.

        :raise RateLimited: 429 with the seconds left in the window.
        """
        if not self.enabled:
            return
        keys = self._keys(request)
        if not keys:
            return
        window_start, now = self._window()
        blocks = self.blocks()
        if blocks is not None and blocks.trusted(window_start):
            # No I/O: the feed keeps this copy current (app/state/failure_feed.py).
            counts = [blocks.count(key, window_start) for key, _ in keys]
        else:
            counters = self._counters()
            if counters is None:
                return
            try:
                counts = counters.counts([key for key, _ in keys], window_start)
            except redis.RedisError as error:
                self._redis_failed(error)
                return
        if any(count >= limit for count, (_, limit) in zip(counts, keys, strict=True)):
            retry_after = max(1, math.ceil(window_start + self.window - now))
            raise RateLimited(retry_after)

    def record_failure(self, request, client_id: str | None = None) -> None:
        """Count one failed client authentication for its client id and address."""
        if not self.enabled:
            return
        keys = self._keys(request)
        if client_id and not claimed_client_id(request) and self.limit_client > 0:
            keys.append((_key("client", client_id), self.limit_client))
        counters = self._counters()
        if not keys or counters is None:
            return
        window_start, _ = self._window()
        limits = dict(keys)
        try:
            counts = counters.increment(limits, window_start, self.window)
        except redis.RedisError as error:
            self._redis_failed(error)
            return
        blocks = self.blocks()
        if blocks is not None:
            # This process refuses at once; the others hear it from their feeds.
            for (key, limit), count in zip(limits.items(), counts, strict=True):
                if count >= limit:
                    blocks.add(window_start, count, key)


def _stopped(feed: Feed | None) -> bool:
    return feed is not None and feed.stopped


def init_app(app: Flask) -> RateLimiter:
    """Attach the limiter to the app's authorization server."""
    limiter = RateLimiter.from_config(app.config)
    server = app.extensions["ccserver.oauth"]
    server.rate_limiter = limiter
    server.on_auth_failure = limiter.record_failure
    app.extensions["ccserver.ratelimit"] = limiter
    return limiter
