"""Integration: the failed-authentication limits as the console and the OAuth endpoints
call them (`check`, `record_failure`), on the app's own counters (database or Redis).
"""

from __future__ import annotations

import pytest

from app.oauth import throttle
from app.runtime import runtime
from app.state.failures import counter_key


@pytest.fixture
def app_config(backend_config) -> dict:
    return {
        **backend_config,
        "AUTH_FAILURE_LIMIT_CLIENT": 2,
        "AUTH_FAILURE_LIMIT_ADDRESS": 3,
        "AUTH_FAILURE_LIMIT_CLIENT_TOTAL": 4,
        "AUTH_FAILURE_WINDOW": 3600,
    }


def test_a_client_id_past_its_limit_from_one_address_is_refused_from_that_address_only(app):
    with app.app_context():
        throttle.check("c1", "192.0.2.1")
        throttle.record_failure("c1", "192.0.2.1")
        throttle.check("c1", "192.0.2.1")
        throttle.record_failure("c1", "192.0.2.1")
        with pytest.raises(throttle.RateLimited) as refused:
            throttle.check("c1", "192.0.2.1")
        assert refused.value.status_code == 429
        assert refused.value.error == "slow_down"
        assert 1 <= refused.value.retry_after <= 3600
        assert ("Retry-After", str(refused.value.retry_after)) in refused.value.get_headers()
        throttle.check("c1", "198.51.100.9")  # the same client from another address
        throttle.check("c2", "192.0.2.1")  # another client, an address below its limit


def test_a_client_id_past_its_total_limit_is_refused_from_any_address(app):
    with app.app_context():
        for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            throttle.record_failure("c1", address)
            throttle.check("c1", address)  # one failure per address: below both limits
        throttle.record_failure("c1", "192.0.2.4")
        for address in ("192.0.2.1", "198.51.100.9"):
            with pytest.raises(throttle.RateLimited):
                throttle.check("c1", address)
        throttle.check("c2", "192.0.2.1")


def test_an_address_past_its_limit_is_refused_for_any_client(app):
    with app.app_context():
        for client_id in ("a", "b", None):  # a failure without a client id counts too
            throttle.record_failure(client_id, "192.0.2.7")
        with pytest.raises(throttle.RateLimited):
            throttle.check("fresh", "192.0.2.7")
        with pytest.raises(throttle.RateLimited):
            throttle.check(None, "192.0.2.7")
        throttle.check("fresh", "192.0.2.8")
        throttle.check("a", "192.0.2.8")


@pytest.mark.parametrize(
    ("client_id", "address"),
    [
        ("c1:2001", "db8::1:5"),  # "client:address" joined by a colon
        ("5:c1", "2001:db8::1"),  # "address:client" joined by a colon
        ('c1","2001', "db8::1:5"),  # a JSON array written without escaping
    ],
)
def test_a_client_id_cannot_reach_another_pairs_count(app, client_id, address):
    """No separator in a client id names the pair of another client id and address."""
    with app.app_context():
        for _ in range(2):
            throttle.record_failure(client_id, address)
        with pytest.raises(throttle.RateLimited):
            throttle.check(client_id, address)
        throttle.check("c1", "2001:db8::1:5")


def test_limits_of_zero_turn_the_throttle_off(make_app):
    off = make_app(
        AUTH_FAILURE_LIMIT_CLIENT=0,
        AUTH_FAILURE_LIMIT_ADDRESS=0,
        AUTH_FAILURE_LIMIT_CLIENT_TOTAL=0,
    )
    with off.app_context():
        assert not runtime().throttle.enabled
        for _ in range(5):
            throttle.record_failure("c1", "192.0.2.1")
            throttle.check("c1", "192.0.2.1")
        counters = runtime().throttle.counters
        window_start = counters.window_start()
        keys = [counter_key("pair", "c1", "192.0.2.1"), "addr:192.0.2.1", "client:c1"]
        assert counters.store.counts(keys, window_start) == [0, 0, 0]


@pytest.mark.parametrize(
    ("off", "counted"),
    [
        ("AUTH_FAILURE_LIMIT_CLIENT", [0, 1, 1]),
        ("AUTH_FAILURE_LIMIT_ADDRESS", [1, 0, 1]),
        ("AUTH_FAILURE_LIMIT_CLIENT_TOTAL", [1, 1, 0]),
    ],
)
def test_a_limit_of_zero_turns_off_that_limit_alone(make_app, off, counted):
    one_off = make_app(**{off: 0})
    with one_off.app_context():
        throttle.record_failure("c1", "192.0.2.1")
        counters = runtime().throttle.counters
        keys = [counter_key("pair", "c1", "192.0.2.1"), "addr:192.0.2.1", "client:c1"]
        assert counters.store.counts(keys, counters.window_start()) == counted
