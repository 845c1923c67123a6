"""State every instance shares about token ids: revoked access tokens and used assertions.

Both are keyed by a `jti` and live exactly as long as the JWT they name
could still be accepted, so neither grows without bound:

- the deny-list (RFC 7009): a revoked access token's `jti` until its `exp`;
- the replay cache (RFC 7523 §3, RFC 7521 §5.2): a client assertion's
  `client_id:jti` until the assertion's `exp`.

With REDIS_URL set they are Redis keys with a TTL; without it, rows in
`revoked_tokens` and `used_assertions`, purged after expiry. Nothing is held
in process memory, so a revocation or a used assertion counts on every
instance at once. Issuing a token writes nothing here.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime

import redis
import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.errors import ServiceUnavailable
from app.extensions import db
from app.models import RevokedToken, UsedAssertion
from app.state.autocommit import postgres_reader
from app.state.redis import redis_client
from app.timeutil import utcnow

log = logging.getLogger(__name__)

REVOKED_PREFIX = "ccs:revoked:"
ASSERTION_PREFIX = "ccs:assertion:"
# Expired rows are deleted by whichever request comes next after this many
# seconds, or after this many inserts, whichever is first.
PURGE_INTERVAL = 60.0
PURGE_EVERY = 100


class _Purger:
    """Decides when this process next deletes expired rows (opportunistic purge)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._inserts = 0

    def due(self) -> bool:
        with self._lock:
            self._inserts += 1
            now = time.monotonic()
            if self._inserts >= PURGE_EVERY or now - self._last >= PURGE_INTERVAL:
                self._inserts = 0
                self._last = now
                return True
            return False


def _purger() -> _Purger:
    return current_app.extensions.setdefault("ccserver.revocation", _Purger())


def _unavailable(exc: Exception) -> ServiceUnavailable:
    log.error("shared state (Redis) unavailable: %s", type(exc).__name__)
    return ServiceUnavailable(
        "Shared state is unavailable; retry later.", headers={"Retry-After": "1"}
    )


def _ttl(expires_at: datetime) -> int:
    return max(1, math.ceil((expires_at - utcnow()).total_seconds()))


def from_timestamp(value: int | float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def purge_expired(now: datetime | None = None) -> int:
    """Delete deny-list and replay-cache rows past their expiry; returns how many."""
    now = now or utcnow()
    with db.engine.begin() as conn:
        revoked = conn.execute(sa.delete(RevokedToken).where(RevokedToken.expires_at <= now))
        used = conn.execute(sa.delete(UsedAssertion).where(UsedAssertion.expires_at <= now))
    return (revoked.rowcount or 0) + (used.rowcount or 0)


def _maybe_purge() -> None:
    if _purger().due():
        try:
            purge_expired()
        except sa.exc.SQLAlchemyError:  # the purge is housekeeping; the next one retries
            log.warning("could not purge expired revocation rows")


# --- deny-list (RFC 7009) -----------------------------------------------------


def revoke(jti: str, client_id: str, expires_at: datetime) -> None:
    """Deny the token `jti` until `expires_at`; revoking twice is a no-op.

    Committed at once in its own transaction, so every instance sees it as
    soon as the response is sent.

    :raises ServiceUnavailable: Redis is configured but unreachable.
    """
    if expires_at <= utcnow():
        return
    client = redis_client()
    if client is not None:
        try:
            client.set(REVOKED_PREFIX + jti, client_id, ex=_ttl(expires_at))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return
    try:
        with db.engine.begin() as conn:
            conn.execute(
                sa.insert(RevokedToken).values(jti=jti, client_id=client_id, expires_at=expires_at)
            )
    except IntegrityError:
        pass  # already revoked
    _maybe_purge()


_PG_IS_REVOKED = "SELECT 1 FROM revoked_tokens WHERE jti = %s AND expires_at > %s"


def is_revoked(jti: str) -> bool:
    """Whether the token `jti` was revoked; asks the shared store every time.

    :raises ServiceUnavailable: Redis is configured but unreachable (fail closed).
    """
    client = redis_client()
    if client is not None:
        try:
            return bool(client.exists(REVOKED_PREFIX + jti))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
    reader = postgres_reader()
    if reader is not None:
        return bool(reader.fetch(_PG_IS_REVOKED, (jti, utcnow())))
    found = db.session.execute(
        sa.select(RevokedToken.jti).where(
            RevokedToken.jti == jti, RevokedToken.expires_at > utcnow()
        )
    ).first()
    return found is not None


# --- replay cache (RFC 7523 §3 item 7) ----------------------------------------

# One autocommit statement on PostgreSQL: a new jti is inserted, a row left by
# an expired assertion with the same jti is taken over, and a live row (a
# replay) returns nothing. The row lock of ON CONFLICT makes racing uses of
# one jti give exactly one success.
_PG_USE_ASSERTION = """
INSERT INTO used_assertions (key, expires_at) VALUES (%s, %s)
ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
 WHERE used_assertions.expires_at <= %s
RETURNING 1
"""


def use_assertion(client_id: str, jti: str, expires_at: datetime) -> bool:
    """Record an assertion's jti; False when it was already used and is unexpired.

    The insert commits in its own short transaction: the token endpoint never
    commits, and a second instance must see the jti at once.

    :raises ServiceUnavailable: Redis is configured but unreachable (fail closed).
    """
    key = f"{client_id}:{jti}"
    client = redis_client()
    if client is not None:
        try:
            return bool(client.set(ASSERTION_PREFIX + key, 1, nx=True, ex=_ttl(expires_at)))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
    now = utcnow()
    reader = postgres_reader()
    if reader is not None:
        fresh = bool(reader.fetch(_PG_USE_ASSERTION, (key, expires_at, now)))
        if fresh:
            _maybe_purge()
        return fresh
    for attempt in range(2):
        try:
            with db.engine.begin() as conn:
                conn.execute(sa.insert(UsedAssertion).values(key=key, expires_at=expires_at))
        except IntegrityError:
            if attempt:
                return False
            # A row left from an earlier, now expired, assertion with this jti
            # does not make this one a replay; drop it and try once more.
            with db.engine.begin() as conn:
                gone = conn.execute(
                    sa.delete(UsedAssertion).where(
                        UsedAssertion.key == key, UsedAssertion.expires_at <= now
                    )
                ).rowcount
            if not gone:
                return False
        else:
            _maybe_purge()
            return True
    return False
