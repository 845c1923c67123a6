"""Integration (PostgreSQL): the autocommit executor survives killed connections
without a pre-ping, and without orphaning connections other threads hold.
"""

from __future__ import annotations

import gc

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.runtime import runtime


@pytest.fixture
def executor(app):
    with app.app_context():
        found = runtime().autocommit
    if found is None:
        pytest.skip("PostgreSQL only")
    return found


def kill_executor_connections(app) -> None:
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


def test_fetch_and_execute(executor):
    assert executor.fetch("SELECT %s::int + 1", (1,)) == [(2,)]
    assert executor.execute("SELECT 1 WHERE false", ()) is None


def test_killed_connections_are_replaced_and_the_statement_retried(app, executor):
    pool = executor.engine.pool
    invalidated: list[object] = []
    sa.event.listen(pool, "invalidate", lambda *args: invalidated.append(args[0]))
    idle, held = executor.engine.raw_connection(), executor.engine.raw_connection()
    idle.close()  # pooled; `held` stays checked out, as another thread's would
    kill_executor_connections(app)
    # The dead pooled connection fails the statement, which is tried again.
    assert executor.fetch("SELECT 2", ()) == [(2,)]
    assert len(invalidated) == 1
    # The pool was not swapped for a new one: what `held` returns to is live,
    # and it is replaced at its next checkout instead of failing a statement.
    assert executor.engine.pool is pool
    held.close()
    gc.collect()  # an orphaned, unclosed driver connection would warn here (as an error)
    for n in range(3, 6):
        assert executor.fetch("SELECT %s::int", (n,)) == [(n,)]
    assert len(invalidated) == 1


def test_a_statement_error_is_an_operational_error_and_spares_the_pool(executor):
    with pytest.raises(sa.exc.OperationalError):
        executor.fetch("SELECT 1 / 0", ())
    assert executor.fetch("SELECT 1", ()) == [(1,)]
