"""Single statements on the token path, on a small pool of autocommit connections.

The OAuth endpoints' database work per request is one statement each: a
client record on a cache miss, the rate limiter's counters when its feed is
not ready, the revocation check, the replay cache's insert. Through
the app's SQLAlchemy pool a checkout adds the pre-ping, BEGIN and the
ROLLBACK on return: four round trips and about 0.5 ms of CPU around a query
that costs a tenth of that. Here a query runs on a driver connection in
autocommit mode instead. Without the pre-ping a dead connection (database
restart) is noticed by the query itself: the pool is then emptied and the
query tried once more on a new connection. Errors come out as SQLAlchemy's
OperationalError, which the app answers with 503.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app.extensions import db

_EXTENSION = "ccserver.pgread"
_lock = threading.Lock()


class PostgresReader:
    """A pool of autocommit driver connections beside the app's engine."""

    def __init__(
        self, engine: sa.Engine, pool_size: int, max_overflow: int, pool_timeout: float
    ) -> None:
        self.engine = sa.create_engine(
            engine.url,
            isolation_level="AUTOCOMMIT",
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_reset_on_return=None,  # autocommit: no transaction to end
            hide_parameters=True,
            connect_args={"connect_timeout": 5},
        )
        # Tests and forks dispose the app's engine; this one goes with it.
        sa.event.listen(engine, "engine_disposed", lambda _engine: self.engine.dispose())
        self.dbapi_error = self.engine.dialect.loaded_dbapi.Error

    def fetch(self, query: str, params: tuple[Any, ...]) -> list[tuple]:
        """Every row of one statement (committed at once) in PostgreSQL's SQL, %s placeholders."""
        for attempt in (1, 2):
            try:
                conn = self.engine.raw_connection()
            except self.dbapi_error as error:  # the database is down: 503 upstream
                raise sa.exc.OperationalError("connect", None, error) from error
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(query, params)
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


def postgres_reader() -> PostgresReader | None:
    """The current app's reader, or None when its database is not PostgreSQL."""
    app = current_app._get_current_object()
    reader = app.extensions.get(_EXTENSION, False)
    if reader is False:
        with _lock:
            reader = app.extensions.get(_EXTENSION, False)
            if reader is False:
                engine = db.engine
                reader = None
                if engine.dialect.name == "postgresql":
                    # Sized like the app's pool (app/__init__.py), which it relieves.
                    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
                    size = int(options.get("pool_size", app.config.get("DB_POOL_SIZE") or 5))
                    reader = PostgresReader(
                        engine,
                        size,
                        int(options.get("max_overflow", size)),
                        float(options.get("pool_timeout", 5)),
                    )
                app.extensions[_EXTENSION] = reader
    return reader
