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


# --- statements sent now, read later (`send`, `statements`) ---------------------------


def test_numbered_placeholders_and_text_parameters():
    from datetime import UTC, datetime

    from app.state.autocommit import _numbered, _text

    assert _numbered("SELECT %s, %s WHERE x = %s") == b"SELECT $1, $2 WHERE x = $3"
    assert _numbered("SELECT 1") == b"SELECT 1"
    assert _text(None) is None
    assert _text(12) == b"12"
    assert _text("k:é") == "k:é".encode()
    assert (
        _text(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == b"2026-01-02T03:04:05.000006+00:00"
    )


def test_a_sent_statement_is_read_later_and_its_connection_returned(executor):
    from datetime import UTC, datetime

    from app.state.autocommit import statements

    pool = executor.engine.pool
    with statements():
        sent = executor.send(
            "SELECT %s::text, %s::timestamptz", ("k", datetime(2026, 1, 2, tzinfo=UTC))
        )
        assert pool.checkedout() == 1  # sent, not read yet
        assert sent.rows() == [("k", "2026-01-02 00:00:00+00")]
        assert pool.checkedout() == 0
        assert sent.rows() == [("k", "2026-01-02 00:00:00+00")]  # read once, kept


def test_statements_nobody_read_are_drained_when_the_scope_ends(executor):
    from app.state.autocommit import statements

    pool = executor.engine.pool
    with pytest.raises(RuntimeError), statements():
        executor.send("SELECT pg_sleep(0.05)", ())
        executor.send("SELECT 1", ())
        assert pool.checkedout() == 2
        raise RuntimeError("the request failed before reading them")
    assert pool.checkedout() == 0
    # The drained connections are clean: the next statements get their own answers.
    assert executor.fetch("SELECT 7", ()) == [(7,)]
    with statements():
        assert executor.send("SELECT 8", ()).rows() == [("8",)]


def test_outside_a_scope_a_statement_runs_at_once(executor):
    sent = executor.send("SELECT 3", ())
    assert executor.engine.pool.checkedout() == 0
    assert sent.rows() == [("3",)]


def test_a_sent_statement_error_is_an_operational_error_and_spares_the_pool(executor):
    from app.state.autocommit import statements

    with statements():
        sent = executor.send("SELECT 1 / 0", ())
        with pytest.raises(sa.exc.OperationalError):
            sent.rows()
        assert executor.send("SELECT 4", ()).rows() == [("4",)]
    assert executor.engine.pool.checkedout() == 0


def test_a_statement_sent_on_a_killed_connection_is_run_again(app, executor):
    from app.state.autocommit import statements

    idle = executor.engine.raw_connection()
    idle.close()  # pooled
    kill_executor_connections(app)
    with statements():
        assert executor.send("SELECT %s::int", (5,)).rows() == [("5",)]
    assert executor.engine.pool.checkedout() == 0


def test_introspecting_a_forged_token_leaves_every_connection_clean(make_app, factory, executor):
    """The deny-list is asked before the signature is checked; a forgery never reads the answer.

    On an instance whose deny-list is in PostgreSQL (no REDIS_URL, whatever
    this run's TEST_REDIS_URL), so the question really is a sent statement.
    """
    from app.state.jti import PostgresJtiStore
    from tests.conftest import basic_auth

    instance = make_app(REDIS_URL=None)
    with instance.app_context():
        assert isinstance(runtime().jti, PostgresJtiStore)
        pool = runtime().autocommit.engine.pool
    # An unread answer left on a pooled connection would break the next
    # statement sent on it, and the connection would be thrown away.
    invalidated: list[object] = []
    sa.event.listen(pool, "invalidate", lambda *args: invalidated.append(args[0]))
    http = instance.test_client()
    cid, secret = factory.client()
    token = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic_auth(cid, secret)
    ).get_json()["access_token"]
    head, claims, signature = token.split(".")
    forged = f"{head}.{claims}.{signature[:-4]}AAAA"
    for candidate, active in ((forged, False), (token, True)):
        response = http.post(
            "/oauth2/introspect", data={"token": candidate}, headers=basic_auth(cid, secret)
        )
        assert response.status_code == 200
        assert response.get_json()["active"] is active
        assert pool.checkedout() == 0
    assert invalidated == []
