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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa


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
