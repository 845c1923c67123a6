"""Integration: failure counters (test / hit / resets_in) behave alike on every backend.

Each test runs on real SQL (SQLite or PostgreSQL), PostgreSQL and Redis
counter stores (see tests/state/backends.py); the block feed is off here and
tested on its own in test_failure_feed.py.
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.extensions import db
from app.state import failures
from app.state.redis import connect
from tests.state.backends import BACKENDS, backend_for

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"
# Long enough that no test straddles two windows in practice.
WINDOW = 3600


@pytest.fixture(params=BACKENDS)
def backend(request, app):
    found = backend_for(request.param, app)
    yield found
    if found.redis is not None:
        found.redis.close()


@pytest.fixture
def store(backend) -> failures.CounterStore:
    if backend.name == "redis":
        return failures.RedisCounters(backend.redis)
    if backend.name == "postgres":
        return failures.PostgresCounters(backend.executor, backend.engine)
    return failures.SqlCounters(backend.engine)


@pytest.fixture
def counters(store, backend) -> failures.FailureCounters:
    return failures.FailureCounters(store, WINDOW, backend.engine, min_limit=2, use_feed=False)


def fresh(kind: str = "client") -> str:
    return failures.counter_key(kind, uuid.uuid4().hex)


def test_store_for_picks_redis_then_postgres_then_sql(backend):
    chosen = failures.store_for(backend.redis, backend.executor, backend.engine)
    expected = {
        "redis": failures.RedisCounters,
        "postgres": failures.PostgresCounters,
        "sql": failures.PostgresCounters if backend.executor else failures.SqlCounters,
    }[backend.name]
    assert type(chosen) is expected


def test_increment_returns_and_stores_counts_per_key_and_window(store):
    a, b, unseen = fresh(), fresh("addr"), fresh()
    window_start = int(time.time() // 60) * 60
    assert store.increment({a: 3, b: 5}, window_start, 60) == [1, 1]
    assert store.increment({b: 5, a: 3}, window_start, 60) == [2, 2]
    assert store.increment({a: 3}, window_start, 60) == [3]
    assert store.counts([a, b, unseen], window_start) == [3, 2, 0]
    # Another window counts from zero.
    assert store.counts([a, b], window_start + 60) == [0, 0]
    assert store.increment({a: 3}, window_start + 60, 60) == [1]


def test_test_hit_and_resets_in(counters):
    key, other = fresh(), fresh("addr")
    assert counters.test({key: 2, other: 2}) is True
    counters.hit({key: 2})
    assert counters.test({key: 2, other: 2}) is True
    counters.hit({key: 2})
    # Past its limit, a key fails the test alone or with others.
    assert counters.test({key: 2}) is False
    assert counters.test({other: 2, key: 2}) is False
    assert counters.test({other: 2}) is True
    # The same count under a higher limit still passes.
    assert counters.test({key: 3}) is True
    assert 1 <= counters.resets_in() <= WINDOW


def test_counts_are_shared_between_counters_on_one_store(store, backend):
    """Two processes' counters over one store: a failure on one counts on the other."""
    first = failures.FailureCounters(store, WINDOW, backend.engine, use_feed=False)
    second = failures.FailureCounters(store, WINDOW, backend.engine, use_feed=False)
    key = fresh()
    first.hit({key: 2})
    second.hit({key: 2})
    assert first.test({key: 2}) is False
    assert second.test({key: 2}) is False


def test_resets_in_counts_down_the_window(backend, store):
    counters = failures.FailureCounters(store, 7, backend.engine, use_feed=False)
    left = 7 - time.time() % 7
    assert abs(counters.resets_in() - left) <= 1


class CountingRedisCounters(failures.RedisCounters):
    """The real Redis store, counting how often it is asked."""

    calls = 0

    def counts(self, keys, window_start):
        self.calls += 1
        return super().counts(keys, window_start)

    def increment(self, limits, window_start, window):
        self.calls += 1
        return super().increment(limits, window_start, window)


@pytest.mark.parametrize("first", ["test", "hit"])
def test_unreachable_redis_fails_open_then_rests(app, caplog, monkeypatch, first):
    client = connect(CLOSED_PORT_REDIS)
    store = CountingRedisCounters(client)
    with app.app_context():
        engine = db.engine
    counters = failures.FailureCounters(store, WINDOW, engine, use_feed=False)
    key = fresh()
    # Alembic's fileConfig (the session's migration) disables existing loggers.
    monkeypatch.setattr(logging.getLogger("app.state.failures"), "disabled", False)
    try:
        with caplog.at_level(logging.WARNING, logger="app.state.failures"):
            if first == "test":
                assert counters.test({key: 1}) is True  # allowed, not refused
            else:
                counters.hit({key: 1})  # nothing raised
        assert store.calls == 1
        assert any("rate limits off" in r.getMessage() for r in caplog.records)
        # Resting: for a few seconds Redis is not asked again.
        for _ in range(5):
            assert counters.test({key: 1}) is True
            counters.hit({key: 1})
        assert store.calls == 1
    finally:
        client.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc", "client:abc"),
        ("x" * 128, "client:" + "x" * 128),
    ],
)
def test_counter_key_keeps_readable_values(value, expected):
    assert failures.counter_key("client", value) == expected


@pytest.mark.parametrize("value", ["x" * 129, "a\x00b", "é", "tab\there"])
def test_counter_key_hashes_long_or_odd_values(value):
    key = failures.counter_key("addr", value)
    assert key.startswith("addr#") and len(key) == len("addr#") + 64
    assert key.isascii() and key.isprintable()


def test_counter_key_writes_a_pair_as_a_json_array():
    assert failures.counter_key("pair", "c1", "192.0.2.1") == 'pair:["c1","192.0.2.1"]'
    # Escaped, so still readable and safe for every store; long pairs are hashed.
    assert failures.counter_key("pair", "é\x00", "::1") == 'pair:["\\u00e9\\u0000","::1"]'
    long = failures.counter_key("pair", "x" * 120, "192.0.2.1")
    assert long.startswith("pair#") and len(long) == len("pair#") + 64


_ids = st.text(alphabet=st.sampled_from('ab:,"\\[] é\x00'), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.tuples(_ids, _ids), st.tuples(_ids, _ids))
def test_counter_key_tells_every_pair_apart(first, second):
    """No characters in a client id can make its pair's key another pair's (unit)."""
    if first != second:
        assert failures.counter_key("pair", *first) != failures.counter_key("pair", *second)
