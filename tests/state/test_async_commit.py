"""PostgreSQL: the token path's autocommit connections commit asynchronously; revocations never do.

docs/security.md "Replay-cache durability": replay-cache inserts may skip
the WAL flush (`DB_ASYNC_COMMIT`), a revocation or cut-off the server has
acknowledged must not.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.runtime import runtime
from app.state import jti
from app.state.autocommit import executor_for
from app.timeutil import utcnow


@pytest.fixture
def pg(app):
    with app.app_context():
        executor = runtime().autocommit
        engine = db.engine
    if executor is None:
        pytest.skip("PostgreSQL only")
    return executor, engine


def test_executor_connections_commit_asynchronously(pg):
    executor, _ = pg
    assert executor.fetch("SHOW synchronous_commit", ()) == [("off",)]


def test_async_commit_off_makes_the_executor_wait_for_the_flush(pg):
    _, engine = pg
    waiting = executor_for(engine, {"pool_size": 1}, async_commit=False)
    assert waiting is not None
    try:
        assert waiting.fetch("SHOW synchronous_commit", ()) == [("on",)]
    finally:
        waiting.engine.dispose()


def _statements_on(engine: sa.Engine, seen: list[str]):
    def record(conn, cursor, statement, parameters, context, executemany):
        # The driver's own connection, so that this query does not come back here.
        setting = cursor.connection.execute("SHOW synchronous_commit").fetchone()[0]
        seen.append(f"{setting} {statement}")

    return record


def test_revocations_and_cut_offs_are_committed_durably(pg):
    executor, engine = pg
    store = jti.PostgresJtiStore(executor, engine)
    seen: list[str] = []
    listener = _statements_on(engine, seen)
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        later = utcnow() + timedelta(minutes=5)
        token = uuid.uuid4().hex
        store.revoke(token, "client-a", later)
        store.cut_off("client-a", 1, later)
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    writes = [s for s in seen if "INSERT INTO revoked_tokens" in s]
    # Both went through the app's engine, whose sessions wait for the flush.
    assert len(writes) == 2
    assert all(s.startswith("on ") for s in writes)
    assert store.is_revoked(token) is True


def test_replay_cache_uses_the_asynchronous_connections(pg):
    executor, engine = pg
    store = jti.PostgresJtiStore(executor, engine)
    seen: list[str] = []
    listener = _statements_on(engine, seen)
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        key = "dpop:" + uuid.uuid4().hex
        assert store.use_once(key, utcnow() + timedelta(minutes=1)) is True
        assert store.use_once(key, utcnow() + timedelta(minutes=1)) is False
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    assert not [s for s in seen if "used_assertions" in s]
