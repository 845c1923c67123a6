"""Single statements on the token path, on a small pool of autocommit connections.

The OAuth endpoints' database work per request is one statement each: a
client record on a cache miss, the failure counters when their feed is
not ready, the revocation check, the replay cache's insert. Through
the app's SQLAlchemy pool a checkout adds the pre-ping, BEGIN and the
ROLLBACK on return: four round trips and about 0.5 ms of CPU around a query
that costs a tenth of that. Here a statement (a read, or a write that must
be visible to every instance at once) runs on a driver connection in
autocommit mode instead. Without the pre-ping a dead connection (database
restart) is noticed by the statement itself: every connection the pool
had then is replaced, and the statement tried once more on a new one.
Errors come out as SQLAlchemy's OperationalError, which the app answers
with 503.

PostgreSQL only: `create_app` makes one executor when the database is
PostgreSQL (`executor_for`), and the stores in app/state and
app/clients/records.py take their PostgreSQL backend when there is one.

Its connections commit without waiting for the WAL flush
(`synchronous_commit = off`, unless `DB_ASYNC_COMMIT=0`): the writes made
here are replay-cache entries and failure counters, which every other
session sees at commit all the same; what a PostgreSQL crash can lose is the
last fraction of a second of them (at most three `wal_writer_delay`s), the
durability Redis gives by default. A replay-cache insert then costs
PostgreSQL about half the CPU (docs/performance.md). Writes that must
survive a crash once acknowledged (a revocation, a token cut-off) go
through the app's engine instead.

`send` sends a statement and lets the request go on: its rows are read
when the caller asks for them (`SentStatement.rows`), after the work it
does meanwhile (verifying a signature, signing the token). On this 2-core
machine a request thread that blocks on the database costs about 150 µs of
CPU beyond the query itself (the switch away and back, and the caches it
comes back to), while an answer that is already there when it is read costs
none of that (docs/performance.md, "Where the time goes"). Every statement
sent inside a `statements()` scope is read, or drained, when the scope
ends, so no connection is left checked out; outside a scope `send` runs
the statement at once. A request holds at most one sent statement and one
blocking statement at a time, which the pool (`DB_POOL_SIZE`, threads + 1,
and as many again in overflow) has room for in every thread at once.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa
from psycopg import pq

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Pending(Protocol[T_co]):
    """An answer of the shared store that may still be on its way."""

    def result(self) -> T_co:
        """The answer, waiting for it if need be (raises what the blocking call would)."""
        ...


class Done(Generic[T]):
    """An answer that is already known (Redis, SQLite, or no statement needed)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def result(self) -> T:
        return self.value


#: The statements sent in the current scope and not read yet.
_unread: ContextVar[list[SentStatement] | None] = ContextVar("autocommit_unread", default=None)


@contextmanager
def statements() -> Iterator[None]:
    """A scope (one request) whose sent statements are all read, or drained, when it ends."""
    token = _unread.set([])
    try:
        yield
    finally:
        left = _unread.get() or []
        _unread.reset(token)
        for sent in left:
            sent.drain()


@lru_cache(maxsize=64)
def _numbered(query: str) -> bytes:
    """libpq's $1, $2, ... for our %s placeholders (no statement here holds a literal %)."""
    parts = query.split("%s")
    out = parts[0]
    for n, part in enumerate(parts[1:], 1):
        out += f"${n}{part}"
    return out.encode()


def _text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format; its type comes from where it is used."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().encode()
    return str(value).encode()


class AutocommitExecutor:
    """A pool of autocommit driver connections beside the app's engine."""

    def __init__(
        self,
        engine: sa.Engine,
        pool_size: int,
        max_overflow: int,
        pool_timeout: float,
        async_commit: bool = True,
    ) -> None:
        connect_args: dict[str, Any] = {"connect_timeout": 5}
        if async_commit:
            # A startup parameter, not a SET: it holds for these connections
            # alone, even through a pooler that hands server connections on.
            connect_args["options"] = "-c synchronous_commit=off"
        self.async_commit = async_commit
        self.engine = sa.create_engine(
            engine.url,
            isolation_level="AUTOCOMMIT",
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_reset_on_return=None,  # autocommit: no transaction to end
            hide_parameters=True,
            connect_args=connect_args,
        )
        # Tests and forks dispose the app's engine; this one goes with it.
        sa.event.listen(engine, "engine_disposed", lambda _engine: self.engine.dispose())
        self.dbapi_error = self.engine.dialect.loaded_dbapi.Error

    def fetch(self, query: str, params: tuple[Any, ...]) -> Sequence[Any]:
        """Every row of one statement: a read, or a write with RETURNING.

        The statement is PostgreSQL's SQL with %s placeholders and is
        committed as soon as it has run.
        """
        return self._run(query, params, True)

    def execute(self, query: str, params: tuple[Any, ...]) -> None:
        """Run one statement that returns no rows, committed as soon as it has run."""
        self._run(query, params, False)

    def send(self, query: str, params: tuple[Any, ...]) -> SentStatement:
        """Send one statement now and read its rows later (`SentStatement.rows`).

        Inside a `statements()` scope only; elsewhere it runs at once, as
        `fetch`. The rows come back as text (str or None per column), so
        statements sent this way return keys or constants.
        """
        sent = SentStatement(self, query, params)
        unread = _unread.get()
        if unread is None:
            sent.rows()
            return sent
        try:
            conn = self.engine.raw_connection()
        except self.dbapi_error as error:  # the database is down: 503 upstream
            raise sa.exc.OperationalError("connect", None, error) from error
        try:
            pgconn = conn.dbapi_connection.pgconn  # type: ignore[union-attr]
            pgconn.send_query_params(_numbered(query), [_text(p) for p in params])
            while pgconn.flush():
                select.select([], [pgconn.socket], [])
        except self.dbapi_error as error:
            # Likely a connection the database dropped: `rows` runs the statement
            # again the blocking way, which replaces it.
            self.engine.pool._invalidate(conn, error)
            conn.close()
            return sent
        sent.conn = conn
        unread.append(sent)
        return sent

    def _run(self, query: str, params: tuple[Any, ...], rows: bool) -> Sequence[Any]:
        for attempt in (1, 2):
            try:
                conn = self.engine.raw_connection()
            except self.dbapi_error as error:  # the database is down: 503 upstream
                raise sa.exc.OperationalError("connect", None, error) from error
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(query, params)
                    # Told by the caller, not inferred from cursor.description:
                    # psycopg builds that anew on each read (14 µs for a client
                    # record, 40% of the query).
                    return cursor.fetchall() if rows else []
                finally:
                    cursor.close()
            except self.dbapi_error as error:
                # A statement error leaves an autocommit connection usable.
                if not self._disconnect(error, conn):
                    raise sa.exc.OperationalError(query, None, error) from error
                # The other pooled connections died with it: as SQLAlchemy does
                # on a disconnect, every connection of this generation is
                # replaced at its next checkout. (Disposing of the pool instead
                # would orphan the connections other threads hold.)
                self.engine.pool._invalidate(conn, error)
                if attempt == 2:
                    raise sa.exc.OperationalError(query, None, error) from error
            finally:
                conn.close()  # back to the pool (a no-op once invalidated)
        raise AssertionError("unreachable")

    def _disconnect(self, error: Any, conn: Any) -> bool:
        # The driver connection is needed: psycopg's dialect judges by its state.
        return self.engine.dialect.is_disconnect(error, conn.dbapi_connection, None)


class _StatementFailed(Exception):
    """The database refused a sent statement; the connection is still good."""


class SentStatement:
    """A statement sent on a connection of the executor's pool, its rows not read yet."""

    def __init__(self, executor: AutocommitExecutor, query: str, params: tuple[Any, ...]) -> None:
        self.executor = executor
        self.query = query
        self.params = params
        self.conn: Any = None
        self._rows: list[tuple[str | None, ...]] | None = None

    def rows(self) -> list[tuple[str | None, ...]]:
        """Every row, as text; waits for the answer if it is not there yet.

        :raises sa.exc.OperationalError: the database refused the statement or is down.
        """
        if self._rows is not None:
            return self._rows
        conn, self.conn = self.conn, None
        if conn is None:
            # Never sent (outside a scope, or the send failed): run it now.
            found = self.executor.fetch(self.query, self.params)
            self._rows = [tuple(None if v is None else str(v) for v in row) for row in found]
            return self._rows
        executor = self.executor
        try:
            rows = _read(conn.dbapi_connection.pgconn)
        except _StatementFailed as failure:
            conn.close()
            raise sa.exc.OperationalError(self.query, None, failure) from failure
        except (executor.dbapi_error, OSError) as error:
            executor.engine.pool._invalidate(conn, error)
            conn.close()
            # As `fetch` does after a disconnect: once more, on a new connection.
            self.conn = None
            return self.rows()
        conn.close()
        self._rows = rows
        return rows

    def drain(self) -> None:
        """Read the answer nobody asked for, so the connection goes back clean."""
        if self.conn is None:
            return
        # The scope is ending; whoever needed the answer has failed already.
        with suppress(sa.exc.SQLAlchemyError):
            self.rows()


def _read(pgconn: Any) -> list[tuple[str | None, ...]]:
    """The one result of the statement sent on `pgconn`, waiting for it if need be."""
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        select.select([pgconn.socket], [], [])
    result = pgconn.get_result()
    while pgconn.get_result() is not None:
        pass
    if result is None:
        raise OSError("no result from the database")
    if result.status == pq.ExecStatus.FATAL_ERROR:
        if pgconn.status != pq.ConnStatus.OK:
            raise OSError(result.error_message.decode(errors="replace"))
        raise _StatementFailed(result.error_message.decode(errors="replace"))
    columns = range(result.nfields)
    return [
        tuple(
            None if (value := result.get_value(row, column)) is None else value.decode()
            for column in columns
        )
        for row in range(result.ntuples)
    ]


class Later(Generic[T]):
    """The answer a sent statement's rows will make (`transform`), read when asked for."""

    __slots__ = ("_sent", "_transform", "_value", "_read")

    def __init__(
        self, sent: SentStatement, transform: Callable[[list[tuple[str | None, ...]]], T]
    ) -> None:
        self._sent = sent
        self._transform = transform
        self._read = False

    def result(self) -> T:
        if not self._read:
            self._value = self._transform(self._sent.rows())
            self._read = True
        return self._value


def executor_for(
    engine: sa.Engine, options: Mapping[str, Any], async_commit: bool = True
) -> AutocommitExecutor | None:
    """An executor beside `engine` when it is PostgreSQL, else None.

    Sized like the app's pool (`options`: its SQLALCHEMY_ENGINE_OPTIONS),
    which it relieves.
    """
    if engine.dialect.name != "postgresql":
        return None
    size = int(options.get("pool_size", 5))
    return AutocommitExecutor(
        engine,
        size,
        int(options.get("max_overflow", size)),
        float(options.get("pool_timeout", 5)),
        async_commit,
    )
