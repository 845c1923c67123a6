"""State every instance shares about token ids: revoked access tokens and used assertions.

Both are keyed by a `jti` and live exactly as long as the JWT they name
could still be accepted, so neither grows without bound:

- the deny-list (RFC 7009): a revoked access token's `jti` until its `exp`,
  and each client's token cut-off (docs/api.md §2.1 `revoke-tokens`): every
  token of that client issued before an instant (epoch milliseconds), until
  the longest token issued before it has expired;
- the replay cache (RFC 7523 §3, RFC 7521 §5.2, RFC 9449 §11.1): a key the
  caller makes unique (for assertions `client_id:jti`, for DPoP proofs
  `dpop:<key thumbprint>:jti`) until the JWT can no longer be accepted.
  `use_once_many` records several keys in one round trip, so a token request
  with both a client assertion and a DPoP proof asks the store once.

`use_once_many_later` and `is_revoked_later` are the same questions asked
early and answered when the caller reads them (`Pending.result`): on
PostgreSQL the statement is sent at once and the request goes on with its
signature work meanwhile (app/state/autocommit.py says why); the other
backends answer at once.

`JtiStore` is the interface; `create_app` picks one backend (`store_for`):

- `RedisJtiStore` with REDIS_URL: keys with a TTL;
- `PostgresJtiStore` on PostgreSQL: rows of `revoked_tokens` and
  `used_assertions`, one autocommit statement per call (app/state/autocommit.py);
  revocations and cut-offs are committed durably through the app's engine,
  replay-cache entries on the executor's asynchronous commits;
- `SqlJtiStore` elsewhere (SQLite): the same rows through SQLAlchemy Core.

The two database backends delete expired rows now and then. Nothing is held
in process memory, so a revocation or a used assertion counts on every
instance at once. Issuing a token writes nothing here.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import redis
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.errors import ServiceUnavailable
from app.models import RevokedToken, UsedAssertion
from app.state.autocommit import AutocommitExecutor, Done, Later, Pending
from app.timeutil import utcnow

log = logging.getLogger(__name__)

REVOKED_PREFIX = "ccs:revoked:"
CUTOFF_PREFIX = "ccs:cutoff:"
# A cut-off's key in the deny-list table: random jtis (URL-safe base64) never
# hold a ":".
CUTOFF_JTI = "cutoff:"
ASSERTION_PREFIX = "ccs:assertion:"
# Expired rows are deleted by whichever request comes next after this many
# seconds, or after this many inserts, whichever is first. A purge is a
# blocking statement on the request that triggers it: every 100 inserts cost
# about 20 µs per DPoP token at 1,500 tokens/s (docs/performance.md); every
# 1,000 bounds the table the same way (expired rows wait at most a minute).
PURGE_INTERVAL = 60.0
PURGE_EVERY = 1000


class JtiStore(Protocol):
    """The deny-list and the replay cache, shared by every instance."""

    def revoke(self, jti: str, client_id: str, expires_at: datetime) -> None:
        """Deny the token `jti` (issued to `client_id`) until `expires_at`; twice is a no-op.

        Visible to every instance as soon as this returns.

        :raises ServiceUnavailable: the store is configured but unreachable.
        """

    def cut_off(self, client_id: str, not_before: int, expires_at: datetime) -> None:
        """Deny every token of `client_id` issued before `not_before` (epoch ms) until `expires_at`.

        A later cut-off of the same client replaces an earlier one, never the
        other way round. Visible to every instance as soon as this returns.

        :raises ServiceUnavailable: the store is configured but unreachable.
        """

    def is_revoked(
        self, jti: str, client_id: str | None = None, issued_ms: int | None = None
    ) -> bool:
        """Whether the token `jti` is denied, or (given its client and issue time, ms) cut off.

        Both are asked in one round trip of the shared store, every time.

        :raises ServiceUnavailable: the store is unreachable (fail closed).
        """

    def use_once(self, key: str, expires_at: datetime) -> bool:
        """Record `key` until `expires_at`; False when it is already recorded and unexpired.

        Of several racing calls with one key exactly one gets True.

        :raises ServiceUnavailable: the store is unreachable (fail closed).
        """

    def use_once_many(self, entries: Sequence[tuple[str, datetime]]) -> list[bool]:
        """`use_once` for each (key, expires_at), in one round trip of the shared store.

        The answers are in the order given; a key repeated within `entries`
        is True at most once.

        :raises ServiceUnavailable: the store is unreachable (fail closed).
        """

    def use_once_many_later(self, entries: Sequence[tuple[str, datetime]]) -> Pending[list[bool]]:
        """`use_once_many`, sent now where the backend can, its answer read from the result."""

    def is_revoked_later(
        self, jti: str, client_id: str | None, issued_ms: int | None
    ) -> Pending[bool]:
        """`is_revoked`, sent now where the backend can, its answer read from the result."""

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete entries past their expiry; returns how many (Redis expires its own: 0)."""


class _AnswersNow:
    """The `*_later` questions of a backend that answers them at once."""

    def use_once_many_later(self, entries: Sequence[tuple[str, datetime]]) -> Pending[list[bool]]:
        return Done(self.use_once_many(entries))  # type: ignore[attr-defined]

    def is_revoked_later(
        self, jti: str, client_id: str | None, issued_ms: int | None
    ) -> Pending[bool]:
        return Done(self.is_revoked(jti, client_id, issued_ms))  # type: ignore[attr-defined]


def _first_of_each(entries: Sequence[tuple[str, datetime]]) -> list[bool]:
    """Which entries are the first with their key (a repeat within one call is a replay)."""
    seen: set[str] = set()
    first = []
    for key, _ in entries:
        first.append(key not in seen)
        seen.add(key)
    return first


def store_for(
    redis_client: redis.Redis | None, executor: AutocommitExecutor | None, engine: sa.Engine
) -> JtiStore:
    """The backend for this deployment: Redis if configured, else PostgreSQL, else SQL."""
    if redis_client is not None:
        return RedisJtiStore(redis_client)
    if executor is not None:
        return PostgresJtiStore(executor, engine)
    return SqlJtiStore(engine)


def from_timestamp(value: int | float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _ttl(expires_at: datetime) -> int:
    return max(1, math.ceil((expires_at - utcnow()).total_seconds()))


# A later cut-off wins; the key lives as long as the longest one set.
_REDIS_CUT_OFF = """
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('TTL', KEYS[1])
if tonumber(ARGV[1]) > old then redis.call('SET', KEYS[1], ARGV[1]) else ttl = math.max(ttl, 0) end
redis.call('EXPIRE', KEYS[1], math.max(tonumber(ARGV[2]), ttl))
return 1
"""


# --- Redis ------------------------------------------------------------------------


def _unavailable(exc: Exception) -> ServiceUnavailable:
    log.error("shared state (Redis) unavailable: %s", type(exc).__name__)
    return ServiceUnavailable(
        "Shared state is unavailable; retry later.", headers={"Retry-After": "1"}
    )


class RedisJtiStore(_AnswersNow):
    """Keys with a TTL: Redis drops each entry when the JWT it names expires."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def revoke(self, jti: str, client_id: str, expires_at: datetime) -> None:
        if expires_at <= utcnow():
            return
        try:
            self.client.set(REVOKED_PREFIX + jti, client_id, ex=_ttl(expires_at))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def cut_off(self, client_id: str, not_before: int, expires_at: datetime) -> None:
        try:
            self.client.eval(
                _REDIS_CUT_OFF, 1, CUTOFF_PREFIX + client_id, not_before, _ttl(expires_at)
            )
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def is_revoked(
        self, jti: str, client_id: str | None = None, issued_ms: int | None = None
    ) -> bool:
        try:
            if client_id is None or issued_ms is None:
                return bool(self.client.exists(REVOKED_PREFIX + jti))
            revoked, cutoff = self.client.mget(REVOKED_PREFIX + jti, CUTOFF_PREFIX + client_id)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return revoked is not None or (cutoff is not None and issued_ms < int(cutoff))

    def use_once(self, key: str, expires_at: datetime) -> bool:
        try:
            return bool(self.client.set(ASSERTION_PREFIX + key, 1, nx=True, ex=_ttl(expires_at)))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def use_once_many(self, entries: Sequence[tuple[str, datetime]]) -> list[bool]:
        first = _first_of_each(entries)
        try:
            # One pipeline (no MULTI: each SET NX is atomic on its own).
            pipe = self.client.pipeline(transaction=False)
            for (key, expires_at), fresh in zip(entries, first, strict=True):
                if fresh:
                    pipe.set(ASSERTION_PREFIX + key, 1, nx=True, ex=_ttl(expires_at))
            answers = iter(pipe.execute())
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return [bool(next(answers)) if fresh else False for fresh in first]

    def purge_expired(self, now: datetime | None = None) -> int:
        return 0


# --- the database backends ------------------------------------------------------


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


class _DatabaseJtiStore(_AnswersNow):
    """The purge both database backends share; a subclass says how to delete."""

    def __init__(self) -> None:
        self._purger = _Purger()

    def purge_expired(self, now: datetime | None = None) -> int:
        raise NotImplementedError

    def _maybe_purge(self) -> None:
        if self._purger.due():
            try:
                self.purge_expired()
            except sa.exc.SQLAlchemyError:  # the purge is housekeeping; the next one retries
                log.warning("could not purge expired revocation rows")


_PG_REVOKE = """
INSERT INTO revoked_tokens (jti, client_id, expires_at) VALUES (%s, %s, %s)
ON CONFLICT (jti) DO NOTHING
"""
_PG_IS_REVOKED = "SELECT 1 FROM revoked_tokens WHERE jti = %s AND expires_at > %s"
# The token's own row and its client's cut-off row in one statement.
_PG_IS_REVOKED_OR_CUT_OFF = """
SELECT 1 FROM revoked_tokens
 WHERE expires_at > %s AND (jti = %s OR (jti = %s AND not_before > %s))
 LIMIT 1
"""
_PG_CUT_OFF = """
INSERT INTO revoked_tokens (jti, client_id, expires_at, not_before) VALUES (%s, %s, %s, %s)
ON CONFLICT (jti) DO UPDATE
   SET not_before = GREATEST(revoked_tokens.not_before, EXCLUDED.not_before),
       expires_at = GREATEST(revoked_tokens.expires_at, EXCLUDED.expires_at)
"""
# A new key is inserted, a row left by an expired entry with the same key is
# taken over, and a live row (a replay) returns nothing; the keys it recorded
# come back. The row lock of ON CONFLICT makes racing uses of one key give
# exactly one success.
_PG_USE_MANY = """
INSERT INTO used_assertions (key, expires_at) VALUES {values}
ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
 WHERE used_assertions.expires_at <= %s
RETURNING key
"""
_PG_PURGE = """
WITH revoked AS (DELETE FROM revoked_tokens WHERE expires_at <= %s RETURNING 1),
     used AS (DELETE FROM used_assertions WHERE expires_at <= %s RETURNING 1)
SELECT (SELECT count(*) FROM revoked) + (SELECT count(*) FROM used)
"""


class PostgresJtiStore(_DatabaseJtiStore):
    """Rows in PostgreSQL, one autocommit statement per call.

    Reads and replay-cache inserts run on the executor. A revocation and a
    cut-off are answered as done, so they are committed through `engine`,
    which waits for the WAL flush: the executor's asynchronous commit could
    lose them to a crash (app/state/autocommit.py).
    """

    def __init__(self, executor: AutocommitExecutor, engine: sa.Engine) -> None:
        super().__init__()
        self.executor = executor
        self.engine = engine

    def _durable(self, query: str, params: tuple) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(query, params)

    def revoke(self, jti: str, client_id: str, expires_at: datetime) -> None:
        if expires_at <= utcnow():
            return
        self._durable(_PG_REVOKE, (jti, client_id, expires_at))
        self._maybe_purge()

    def cut_off(self, client_id: str, not_before: int, expires_at: datetime) -> None:
        self._durable(_PG_CUT_OFF, (CUTOFF_JTI + client_id, client_id, expires_at, not_before))

    def is_revoked(
        self, jti: str, client_id: str | None = None, issued_ms: int | None = None
    ) -> bool:
        return self.is_revoked_later(jti, client_id, issued_ms).result()

    def use_once(self, key: str, expires_at: datetime) -> bool:
        return self.use_once_many([(key, expires_at)])[0]

    def use_once_many(self, entries: Sequence[tuple[str, datetime]]) -> list[bool]:
        return self.use_once_many_later(entries).result()

    def use_once_many_later(self, entries: Sequence[tuple[str, datetime]]) -> Pending[list[bool]]:
        first = _first_of_each(entries)
        rows = [entry for entry, fresh in zip(entries, first, strict=True) if fresh]
        if not rows:
            return Done(first)
        # One statement: ON CONFLICT may touch each row once, hence the distinct keys.
        values = ", ".join(["(%s, %s)"] * len(rows))
        params: list = [value for row in rows for value in row]
        params.append(utcnow())
        sent = self.executor.send(_PG_USE_MANY.format(values=values), tuple(params))

        def answers(fetched: list[tuple[str | None, ...]]) -> list[bool]:
            recorded = {row[0] for row in fetched}
            if recorded:
                self._maybe_purge()
            return [
                fresh and key in recorded for (key, _), fresh in zip(entries, first, strict=True)
            ]

        return Later(sent, answers)

    def is_revoked_later(
        self, jti: str, client_id: str | None, issued_ms: int | None
    ) -> Pending[bool]:
        if client_id is None or issued_ms is None:
            sent = self.executor.send(_PG_IS_REVOKED, (jti, utcnow()))
        else:
            sent = self.executor.send(
                _PG_IS_REVOKED_OR_CUT_OFF, (utcnow(), jti, CUTOFF_JTI + client_id, issued_ms)
            )
        return Later(sent, bool)

    def purge_expired(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        return int(self.executor.fetch(_PG_PURGE, (now, now))[0][0])


class SqlJtiStore(_DatabaseJtiStore):
    """Rows through SQLAlchemy Core on the app's engine, each write in its own transaction.

    Never the request's session: a revocation or a used assertion must be
    committed (and so seen by every instance) even when the request ends in
    an error, and the token endpoint never commits.
    """

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__()
        self.engine = engine

    def revoke(self, jti: str, client_id: str, expires_at: datetime) -> None:
        if expires_at <= utcnow():
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(RevokedToken).values(
                        jti=jti, client_id=client_id, expires_at=expires_at
                    )
                )
        except IntegrityError:
            pass  # already revoked
        self._maybe_purge()

    def cut_off(self, client_id: str, not_before: int, expires_at: datetime) -> None:
        try:
            self._cut_off(client_id, not_before, expires_at)
        except IntegrityError:
            # A racing first cut-off inserted the row between our read and
            # insert; the second attempt updates it.
            self._cut_off(client_id, not_before, expires_at)

    def _cut_off(self, client_id: str, not_before: int, expires_at: datetime) -> None:
        key = CUTOFF_JTI + client_id
        with self.engine.begin() as conn:
            # Read and write in one transaction; SQLite serialises writers, so
            # two racing cut-offs cannot both read the old row.
            row = conn.execute(
                sa.select(RevokedToken.not_before, RevokedToken.expires_at).where(
                    RevokedToken.jti == key
                )
            ).first()
            if row is None:
                conn.execute(
                    sa.insert(RevokedToken).values(
                        jti=key, client_id=client_id, expires_at=expires_at, not_before=not_before
                    )
                )
            else:
                conn.execute(
                    sa.update(RevokedToken)
                    .where(RevokedToken.jti == key)
                    .values(
                        not_before=max(row.not_before or 0, not_before),
                        expires_at=max(row.expires_at, expires_at),
                    )
                )

    def is_revoked(
        self, jti: str, client_id: str | None = None, issued_ms: int | None = None
    ) -> bool:
        wanted = RevokedToken.jti == jti
        if client_id is not None and issued_ms is not None:
            wanted = sa.or_(
                wanted,
                sa.and_(
                    RevokedToken.jti == CUTOFF_JTI + client_id, RevokedToken.not_before > issued_ms
                ),
            )
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(RevokedToken.jti)
                .where(wanted, RevokedToken.expires_at > utcnow())
                .limit(1)
            ).first()
        return found is not None

    def use_once(self, key: str, expires_at: datetime) -> bool:
        now = utcnow()
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(UsedAssertion).values(key=key, expires_at=expires_at))
            except IntegrityError:
                if attempt:
                    return False
                # A row left by an earlier, now expired, entry with this key
                # does not make this one a replay; drop it and try once more.
                with self.engine.begin() as conn:
                    gone = conn.execute(
                        sa.delete(UsedAssertion).where(
                            UsedAssertion.key == key, UsedAssertion.expires_at <= now
                        )
                    ).rowcount
                if not gone:
                    return False
            else:
                self._maybe_purge()
                return True
        return False

    def use_once_many(self, entries: Sequence[tuple[str, datetime]]) -> list[bool]:
        # SQLite is a local file: a call per key costs no network round trip.
        first = _first_of_each(entries)
        return [
            fresh and self.use_once(key, expires_at)
            for (key, expires_at), fresh in zip(entries, first, strict=True)
        ]

    def purge_expired(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        with self.engine.begin() as conn:
            revoked = conn.execute(sa.delete(RevokedToken).where(RevokedToken.expires_at <= now))
            used = conn.execute(sa.delete(UsedAssertion).where(UsedAssertion.expires_at <= now))
        return (revoked.rowcount or 0) + (used.rowcount or 0)
