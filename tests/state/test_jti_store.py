"""Integration: the jti store (deny-list and replay cache) behaves alike on every backend.

Each test runs on real SQL (SQLite or PostgreSQL), PostgreSQL autocommit and
Redis backends (see tests/state/backends.py).
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.errors import ServiceUnavailable
from app.models import RevokedToken, UsedAssertion
from app.state import jti
from app.state.redis import connect
from app.timeutil import utcnow
from tests.state.backends import BACKENDS, backend_for

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(params=BACKENDS)
def backend(request, app):
    found = backend_for(request.param, app)
    yield found
    if found.redis is not None:
        found.redis.close()


@pytest.fixture
def store(backend) -> jti.JtiStore:
    if backend.name == "redis":
        return jti.RedisJtiStore(backend.redis)
    if backend.name == "postgres":
        return jti.PostgresJtiStore(backend.executor, backend.engine)
    return jti.SqlJtiStore(backend.engine)


def fresh() -> str:
    return uuid.uuid4().hex


def test_store_for_picks_redis_then_postgres_then_sql(backend):
    chosen = jti.store_for(backend.redis, backend.executor, backend.engine)
    expected = {
        "redis": jti.RedisJtiStore,
        "postgres": jti.PostgresJtiStore,
        "sql": jti.PostgresJtiStore if backend.executor is not None else jti.SqlJtiStore,
    }[backend.name]
    assert type(chosen) is expected


def test_revoke_then_is_revoked(store):
    token, other = fresh(), fresh()
    later = utcnow() + timedelta(minutes=5)
    assert store.is_revoked(token) is False
    store.revoke(token, "client-a", later)
    assert store.is_revoked(token) is True
    assert store.is_revoked(other) is False
    store.revoke(token, "client-a", later)  # twice is a no-op
    assert store.is_revoked(token) is True


def test_revoking_an_expired_token_stores_nothing(store):
    token = fresh()
    store.revoke(token, "client-a", utcnow() - timedelta(seconds=1))
    assert store.is_revoked(token) is False


def test_use_once_admits_a_key_once_while_it_lives(store):
    key = f"client-a:{fresh()}"
    later = utcnow() + timedelta(minutes=5)
    assert store.use_once(key, later) is True
    assert store.use_once(key, later) is False
    assert store.use_once(f"client-b:{key}", later) is True


def test_use_once_admits_exactly_one_of_racing_callers(store):
    key = f"client-a:{fresh()}"
    later = utcnow() + timedelta(minutes=5)
    results: list[bool] = []
    start = threading.Barrier(8)

    def use() -> None:
        start.wait()
        results.append(store.use_once(key, later))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_use_once_many_answers_each_key_in_order_in_one_call(store):
    used, new_a, new_b = (f"c:{fresh()}" for _ in range(3))
    later = utcnow() + timedelta(minutes=5)
    assert store.use_once(used, later) is True
    answers = store.use_once_many([(new_a, later), (used, later), (new_b, later), (new_a, later)])
    # A key repeated within one call is a replay of itself.
    assert answers == [True, False, True, False]
    assert store.use_once(new_a, later) is False
    assert store.use_once(new_b, later) is False
    assert store.use_once_many([]) == []


def test_use_once_many_admits_exactly_one_of_racing_callers(store):
    shared = f"c:{fresh()}"
    later = utcnow() + timedelta(minutes=5)
    results: list[list[bool]] = []
    start = threading.Barrier(8)

    def use() -> None:
        start.wait()
        results.append(store.use_once_many([(f"c:{fresh()}", later), (shared, later)]))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(own for own, _ in results)
    assert sorted(second for _, second in results) == [False] * 7 + [True]


def test_use_once_many_takes_over_an_expired_entry(store, backend):
    if backend.name == "redis":
        return  # Redis drops keys at their TTL itself
    past = utcnow() - timedelta(seconds=1)
    with backend.engine.begin() as conn:
        conn.execute(sa.insert(UsedAssertion), [{"key": "c:stale", "expires_at": past}])
    later = utcnow() + timedelta(minutes=1)
    assert store.use_once_many([("c:stale", later), ("c:other", later)]) == [True, True]
    assert store.use_once_many([("c:stale", later)]) == [False]


def test_a_cut_off_denies_the_clients_earlier_tokens_only(store):
    cid, other = fresh(), fresh()
    later = utcnow() + timedelta(minutes=5)
    assert store.is_revoked(fresh(), cid, 1_000) is False
    store.cut_off(cid, 1_000, later)
    assert store.is_revoked(fresh(), cid, 999) is True
    assert store.is_revoked(fresh(), cid, 1_000) is False
    assert store.is_revoked(fresh(), other, 999) is False
    # Without its client and iat a token is asked about its own jti only.
    assert store.is_revoked(fresh()) is False
    # A revoked token stays revoked after its client's cut-off.
    token = fresh()
    store.revoke(token, cid, later)
    assert store.is_revoked(token, cid, 2_000) is True


def test_a_later_cut_off_wins_and_an_earlier_one_never_undoes_it(store):
    cid = fresh()
    soon, later = utcnow() + timedelta(minutes=1), utcnow() + timedelta(minutes=5)
    store.cut_off(cid, 2_000, later)
    store.cut_off(cid, 1_000, soon)
    assert store.is_revoked(fresh(), cid, 1_500) is True
    store.cut_off(cid, 3_000, soon)
    assert store.is_revoked(fresh(), cid, 2_500) is True
    assert store.is_revoked(fresh(), cid, 3_000) is False


def test_a_cut_off_past_its_expiry_denies_nothing(store, backend):
    cid = fresh()
    if backend.name == "redis":
        store.cut_off(cid, 1_000, utcnow() + timedelta(seconds=1))
        assert backend.redis.ttl(jti.CUTOFF_PREFIX + cid) <= 1
        return
    with backend.engine.begin() as conn:
        conn.execute(
            sa.insert(RevokedToken),
            [
                {
                    "jti": jti.CUTOFF_JTI + cid,
                    "client_id": cid,
                    "expires_at": utcnow() - timedelta(seconds=1),
                    "not_before": 1_000,
                }
            ],
        )
    assert store.is_revoked(fresh(), cid, 999) is False


def test_database_rows_past_expiry_count_for_nothing_and_are_purged(store, backend):
    if backend.name == "redis":
        assert store.purge_expired() == 0  # Redis drops keys at their TTL itself
        return
    past = utcnow() - timedelta(seconds=1)
    with backend.engine.begin() as conn:
        conn.execute(
            sa.insert(RevokedToken), [{"jti": "old", "client_id": "c", "expires_at": past}]
        )
        conn.execute(sa.insert(UsedAssertion), [{"key": "c:old", "expires_at": past}])
    assert store.is_revoked("old") is False
    # A row left by an expired entry does not make a new use a replay.
    assert store.use_once("c:old", utcnow() + timedelta(minutes=1)) is True
    store.revoke("kept", "c", utcnow() + timedelta(hours=1))
    with backend.engine.begin() as conn:
        conn.execute(sa.insert(UsedAssertion), [{"key": "c:gone", "expires_at": past}])
    assert store.purge_expired() == 2  # "old" revoked, "c:gone" used
    with backend.engine.connect() as conn:
        assert conn.scalars(sa.select(RevokedToken.jti)).all() == ["kept"]
        assert conn.scalars(sa.select(UsedAssertion.key)).all() == ["c:old"]


def test_unreachable_redis_fails_closed():
    client = connect(CLOSED_PORT_REDIS)
    store = jti.RedisJtiStore(client)
    later = utcnow() + timedelta(minutes=5)
    try:
        for call in (
            lambda: store.is_revoked("x"),
            lambda: store.use_once("c:x", later),
            lambda: store.use_once_many([("c:x", later)]),
            lambda: store.revoke("x", "c", later),
            lambda: store.is_revoked("x", "c", 1),
            lambda: store.cut_off("c", 1, later),
        ):
            with pytest.raises(ServiceUnavailable):
                call()
    finally:
        client.close()
