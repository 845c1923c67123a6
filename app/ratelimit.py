"""Limits on failed client authentications (contract section 3).

Failures are counted per claimed client id and per client address (see
`app.proxy`) in fixed windows of AUTH_FAILURE_WINDOW seconds. Once either
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
past their expiry are purged now and then). When Redis is configured but
unreachable the limiter fails open: requests are served without limits and a
warning is logged, because refusing every client while Redis is down would
turn a Redis outage into a full outage. Redis is then not tried again for a
few seconds so that each request does not pay a connection timeout.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta

import jwt
import redis
import sqlalchemy as sa
from authlib.oauth2.rfc6749 import OAuth2Error
from flask import Flask, current_app
from sqlalchemy.dialects import postgresql, sqlite

from .extensions import db
from .models import AuthFailure
from .proxy import client_address
from .state import redis_client

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
    from .oauth.server import parse_basic_credentials

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

    def increment(self, keys: list[str], window_start: int, window: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            name = self._name(key, window_start)
            pipe.incr(name)
            # The key dies with its window (plus slack for clock skew).
            pipe.expire(name, window + 5)
        pipe.execute()


# Built once: the expanding IN takes one or two keys, so each request only
# binds values and SQLAlchemy reuses the compiled form from its cache.
_COUNTS = sa.select(AuthFailure.key, AuthFailure.count).where(
    AuthFailure.key.in_(sa.bindparam("keys", expanding=True)),
    AuthFailure.window_start == sa.bindparam("window_start"),
)


def _pg_counts(n: int) -> str:
    """The same query in PostgreSQL's own SQL, for the raw driver connection below."""
    # One placeholder per key (one or two): plain text parameters cost the
    # driver less to send than an array, and the driver prepares each form once.
    marks = ", ".join(["%s"] * n)
    return f"SELECT key, count FROM auth_failures WHERE key IN ({marks}) AND window_start = %s"  # noqa: S608


_PG_COUNTS = {n: _pg_counts(n) for n in (1, 2, 3)}


class _PostgresReader:
    """The pre-check's own small pool of autocommit connections to PostgreSQL.

    The check runs on every token request, so it skips what the app's pool
    does per checkout: the pre-ping, BEGIN and the ROLLBACK on return (four
    round trips, about 0.5 ms of CPU) become one SELECT on a driver
    connection. Without the pre-ping a dead connection (database restart) is
    noticed by the query itself: the pool is then emptied and the query tried
    once more on a new connection.
    """

    def __init__(self, engine: sa.Engine, pool_size: int) -> None:
        self.engine = sa.create_engine(
            engine.url,
            isolation_level="AUTOCOMMIT",
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=5,
            pool_reset_on_return=None,  # autocommit: no transaction to end
            hide_parameters=True,
            connect_args={"connect_timeout": 5},
        )
        # Tests and forks dispose the app's engine; this one goes with it.
        sa.event.listen(engine, "engine_disposed", lambda _engine: self.engine.dispose())
        self.dbapi_error = self.engine.dialect.loaded_dbapi.Error

    def counts(self, keys: list[str], window_start: int) -> list[tuple[str, int]]:
        query = _PG_COUNTS.get(len(keys)) or _pg_counts(len(keys))
        for attempt in (1, 2):
            try:
                conn = self.engine.raw_connection()
            except self.dbapi_error as error:  # the database is down: 503 upstream
                raise sa.exc.OperationalError("connect", None, error) from error
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(query, (*keys, window_start))
                    return cursor.fetchall()
                finally:
                    cursor.close()
            except self.dbapi_error as error:
                conn.invalidate()
                self.engine.dispose()  # the other pooled connections died with it
                if attempt == 2 or not self._disconnect(error):
                    raise sa.exc.OperationalError(query, None, error) from error
            finally:
                conn.close()  # back to the pool (a no-op once invalidated)
        raise AssertionError("unreachable")

    def _disconnect(self, error: Exception) -> bool:
        return self.engine.dialect.is_disconnect(error, None, None)


class _DatabaseCounters:
    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def counts(self, keys: list[str], window_start: int) -> list[int]:
        # Not the request's session: the reads go back to the pool at once,
        # and a failure is counted even though the request ends in an error.
        reader = self.limiter.postgres_reader()
        if reader is not None:
            rows = reader.counts(keys, window_start)
        else:
            with db.engine.connect() as conn:
                rows = conn.execute(_COUNTS, {"keys": keys, "window_start": window_start}).all()
        found = dict(rows)
        return [found.get(key, 0) for key in keys]

    def increment(self, keys: list[str], window_start: int, window: int) -> None:
        expires_at = datetime.fromtimestamp(window_start + window, UTC) + timedelta(seconds=5)
        dialect = db.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        rows = [
            {"key": key, "window_start": window_start, "count": 1, "expires_at": expires_at}
            for key in sorted(keys)  # one lock order for every writer
        ]
        stmt = insert(AuthFailure).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[AuthFailure.key, AuthFailure.window_start],
            set_={"count": AuthFailure.count + 1},
        )
        with db.engine.begin() as conn:
            conn.execute(stmt)
            if self.limiter.purge_due():
                conn.execute(
                    sa.delete(AuthFailure).where(AuthFailure.expires_at < datetime.now(UTC))
                )


class RateLimiter:
    """Counts failed client authentications and refuses clients past the limit."""

    def __init__(self, limit_client: int, limit_address: int, window: int) -> None:
        self.limit_client = limit_client
        self.limit_address = limit_address
        self.window = max(1, window)
        self._lock = threading.Lock()
        self._redis_down_until = 0.0
        self._next_purge = 0.0

    def postgres_reader(self) -> _PostgresReader | None:
        """The pre-check's own PostgreSQL pool for this app, or None on other databases."""
        app = current_app._get_current_object()
        reader = app.extensions.get("ccserver.ratelimit.reader", False)
        if reader is False:
            with self._lock:
                reader = app.extensions.get("ccserver.ratelimit.reader", False)
                if reader is False:
                    engine = db.engine
                    reader = None
                    if engine.dialect.name == "postgresql":
                        size = int(app.config.get("DB_POOL_SIZE") or 5)
                        reader = _PostgresReader(engine, size)
                    app.extensions["ccserver.ratelimit.reader"] = reader
        return reader

    @classmethod
    def from_config(cls, config) -> RateLimiter:
        return cls(
            int(config["AUTH_FAILURE_LIMIT_CLIENT"]),
            int(config["AUTH_FAILURE_LIMIT_ADDRESS"]),
            int(config["AUTH_FAILURE_WINDOW"]),
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
        counters = self._counters()
        if not keys or counters is None:
            return
        window_start, now = self._window()
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
        try:
            counters.increment([key for key, _ in keys], window_start, self.window)
        except redis.RedisError as error:
            self._redis_failed(error)


def init_app(app: Flask) -> RateLimiter:
    """Attach the limiter to the app's authorization server."""
    limiter = RateLimiter.from_config(app.config)
    server = app.extensions["ccserver.oauth"]
    server.rate_limiter = limiter
    server.on_auth_failure = limiter.record_failure
    app.extensions["ccserver.ratelimit"] = limiter
    return limiter
