"""Integration: the failed-authentication limits as the console and the OAuth endpoints
call them (`check`, `record_failure`), on the app's own counters (database or Redis).
"""

from __future__ import annotations

import pytest

from app.oauth import throttle
from app.runtime import runtime


@pytest.fixture
def app_config(backend_config) -> dict:
    return {
        **backend_config,
        "AUTH_FAILURE_LIMIT_CLIENT": 2,
        "AUTH_FAILURE_LIMIT_ADDRESS": 3,
        "AUTH_FAILURE_WINDOW": 3600,
    }


def test_a_client_id_past_its_limit_is_refused_from_any_address(app):
    with app.app_context():
        throttle.check("c1", "192.0.2.1")
        throttle.record_failure("c1", "192.0.2.1")
        throttle.check("c1", "192.0.2.1")
        throttle.record_failure("c1", "192.0.2.2")
        with pytest.raises(throttle.RateLimited) as refused:
            throttle.check("c1", "198.51.100.9")
        assert refused.value.status_code == 429
        assert refused.value.error == "slow_down"
        assert 1 <= refused.value.retry_after <= 3600
        assert ("Retry-After", str(refused.value.retry_after)) in refused.value.get_headers()
        throttle.check("c2", "192.0.2.1")  # another client, an address below its limit


def test_an_address_past_its_limit_is_refused_for_any_client(app):
    with app.app_context():
        for client_id in ("a", "b", None):  # a failure without a client id counts too
            throttle.record_failure(client_id, "192.0.2.7")
        with pytest.raises(throttle.RateLimited):
            throttle.check("fresh", "192.0.2.7")
        with pytest.raises(throttle.RateLimited):
            throttle.check(None, "192.0.2.7")
        throttle.check("fresh", "192.0.2.8")


def test_limits_of_zero_turn_the_throttle_off(make_app):
    off = make_app(AUTH_FAILURE_LIMIT_CLIENT=0, AUTH_FAILURE_LIMIT_ADDRESS=0)
    with off.app_context():
        for _ in range(5):
            throttle.record_failure("c1", "192.0.2.1")
            throttle.check("c1", "192.0.2.1")
        counters = runtime().throttle.counters
        window_start = counters.window_start()
        assert counters.store.counts(["client:c1", "addr:192.0.2.1"], window_start) == [0, 0]
