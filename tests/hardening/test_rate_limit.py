"""Integration tests: failed client authentications are limited (docs/api.md §3).

Every test runs on the database counters and, when TEST_REDIS_URL is set, on
Redis counters; all go through HTTP with real secrets.
"""

from __future__ import annotations

import math
import os
import time

import pytest

from app.runtime import runtime
from app.state.failures import counter_key
from tests.conftest import basic_auth

WINDOW = 2
TOKEN = {"grant_type": "client_credentials"}

BACKENDS = [
    "database",
    pytest.param(
        "redis",
        marks=pytest.mark.skipif(
            not os.environ.get("TEST_REDIS_URL"), reason="TEST_REDIS_URL is not set"
        ),
    ),
]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def limits() -> dict:
    """Override in a test with indirect values to change the limits."""
    return {}


@pytest.fixture
def app_config(base_config, migrated, backend, limits) -> dict:
    config = dict(base_config)
    config["REDIS_URL"] = os.environ.get("TEST_REDIS_URL") if backend == "redis" else None
    config.update(
        AUTH_FAILURE_WINDOW=WINDOW,
        AUTH_FAILURE_LIMIT_CLIENT=20,
        AUTH_FAILURE_LIMIT_ADDRESS=300,
        AUTH_FAILURE_LIMIT_CLIENT_TOTAL=1000,
        TRUSTED_PROXIES="",
    )
    config.update(limits)
    return config


def fresh_window(needed: float = 1.2) -> None:
    """Make sure `needed` seconds are left in the window, so a test's burst fits in one."""
    left = WINDOW - time.time() % WINDOW
    if left < needed:
        time.sleep(left + 0.02)


def stored_counts(app, keys: list[str]) -> list[int]:
    """The shared counts of `keys` in the current window."""
    with app.app_context():
        counters = runtime().throttle.counters
        return counters.store.counts(keys, counters.window_start())


def from_address(address: str) -> dict:
    """`environ_base` for a request whose peer is `address`."""
    return {"REMOTE_ADDR": address}


def assert_throttled(response) -> int:
    """The response is 429 slow_down in RFC 6749 shape; returns Retry-After."""
    assert response.status_code == 429, response.get_json()
    body = response.get_json()
    assert body["error"] == "slow_down"
    assert set(body) <= {"error", "error_description", "error_uri"}
    assert response.headers["Cache-Control"] == "no-store"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW
    return retry_after


def test_thousand_wrong_secrets_are_throttled_then_right_secret_works(client, factory):
    cid, secret = factory.client()
    statuses = []
    start = time.time()
    for i in range(1000):
        response = client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, f"wrong{i}"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert_throttled(response)
    end = time.time()
    assert set(statuses) <= {401, 429}
    windows = math.floor(end / WINDOW) - math.floor(start / WINDOW) + 1
    # At most the limit per window got a credential check; the rest were refused.
    assert statuses.count(401) <= 20 * windows
    assert statuses.count(429) >= 1000 - 20 * windows
    assert statuses[:20] == [401] * 20 or windows > 1

    # Whatever the attacker did, the client works again within one window.
    deadline = time.time() + WINDOW + 1
    while True:
        response = client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret))
        if response.status_code == 200:
            break
        time.sleep(assert_throttled(response))
        assert time.time() < deadline, "locked out for longer than the window"
    assert response.get_json()["token_type"] == "Bearer"


def test_limit_refuses_right_secret_and_ends_with_window(app, client, factory):
    cid, secret = factory.client()
    other_cid, other_secret = factory.client()
    fresh_window()
    for i in range(20):
        response = client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, f"x{i}"))
        assert response.status_code == 401
    # Past the limit even the right secret is refused, before it is checked.
    assert_throttled(client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret)))
    # client_secret_post names the same client id: the same limit holds.
    response = client.post(
        "/oauth2/token", data={**TOKEN, "client_id": cid, "client_secret": secret}
    )
    assert_throttled(response)
    # 429-answered attempts are not failures: the stored counts stay at 20.
    for i in range(30):
        assert_throttled(client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, f"y{i}")))
    keys = [counter_key("pair", cid, "127.0.0.1"), "addr:127.0.0.1", f"client:{cid}"]
    assert stored_counts(app, keys) == [20, 20, 20]
    # Another client from the same address is unaffected (address limit is 300).
    factory.token(other_cid, other_secret)

    time.sleep(WINDOW - time.time() % WINDOW + 0.02)
    assert factory.token(cid, secret)["access_token"]


def test_client_blocked_from_one_address_still_gets_tokens_from_another(app, client, factory):
    """Knowing a client id is not enough to lock the client out of its own addresses."""
    cid, secret = factory.client()
    attacker, home = from_address("203.0.113.66"), from_address("198.51.100.10")
    fresh_window()
    for i in range(20):
        response = client.post(
            "/oauth2/token", data=TOKEN, headers=basic_auth(cid, f"x{i}"), environ_base=attacker
        )
        assert response.status_code == 401
    refused = client.post(
        "/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret), environ_base=attacker
    )
    assert_throttled(refused)
    # From the client's own address: tokens, and a wrong secret is checked, not refused.
    for _ in range(3):
        response = client.post(
            "/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret), environ_base=home
        )
        assert response.status_code == 200
        assert response.get_json()["token_type"] == "Bearer"
    response = client.post(
        "/oauth2/token", data=TOKEN, headers=basic_auth(cid, "wrong"), environ_base=home
    )
    assert response.status_code == 401
    keys = [counter_key("pair", cid, "198.51.100.10"), f"client:{cid}"]
    assert stored_counts(app, keys) == [1, 21]


@pytest.mark.parametrize(
    "limits", [{"AUTH_FAILURE_LIMIT_CLIENT_TOTAL": 30, "TRUSTED_PROXIES": "10.0.0.0/8"}]
)
def test_client_wide_limit_blocks_the_client_from_every_address(app, client, factory):
    """Failures spread over addresses, each under its own limits, add up per client id."""
    cid, secret = factory.client()
    other_cid, other_secret = factory.client()
    paths = ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"]

    def attempt(path: str, address: str, client_id: str, password: str):
        # Through a trusted proxy, which names the client's address.
        data = TOKEN if path == "/oauth2/token" else {"token": "x"}
        headers = {**basic_auth(client_id, password), "X-Forwarded-For": address}
        return client.post(path, data=data, headers=headers, environ_base=from_address("10.0.0.1"))

    fresh_window(needed=1.6)
    # Ten addresses, three failures each, at all three endpoints: 30 in all.
    addresses = [f"192.0.2.{i}" for i in range(10)]
    for i, address in enumerate(addresses):
        for j in range(3):
            assert attempt(paths[(i + j) % 3], address, cid, "wrong").status_code == 401
    # Now refused from every address, the ones it failed from and new ones, even with
    # the right secret, at every endpoint.
    for address in (addresses[0], "198.51.100.77", "2001:db8::7"):
        for path in paths:
            assert_throttled(attempt(path, address, cid, secret))
    # The client-wide count does not reach other clients or block the addresses.
    assert attempt("/oauth2/token", addresses[0], other_cid, other_secret).status_code == 200
    # The refused attempts were not counted, neither for the client nor for their addresses.
    keys = [f"client:{cid}", "addr:198.51.100.77", counter_key("pair", cid, "198.51.100.77")]
    assert stored_counts(app, keys) == [30, 0, 0]

    # The block ends with the window.
    time.sleep(WINDOW - time.time() % WINDOW + 0.02)
    assert attempt("/oauth2/token", "198.51.100.77", cid, secret).status_code == 200


@pytest.mark.parametrize(
    "limits", [{"AUTH_FAILURE_LIMIT_CLIENT_TOTAL": 0, "AUTH_FAILURE_LIMIT_CLIENT": 3}]
)
def test_client_wide_limit_of_zero_leaves_the_per_address_limit(client, factory):
    cid, secret = factory.client()
    fresh_window()
    for i in range(10):
        for _ in range(2):  # under the per-address limit of 3 everywhere
            response = client.post(
                "/oauth2/token",
                data=TOKEN,
                headers=basic_auth(cid, "wrong"),
                environ_base=from_address(f"192.0.2.{i}"),
            )
            assert response.status_code == 401
    response = client.post(
        "/oauth2/token",
        data=TOKEN,
        headers=basic_auth(cid, secret),
        environ_base=from_address("192.0.2.0"),
    )
    assert response.status_code == 200


@pytest.mark.parametrize("limits", [{"AUTH_FAILURE_LIMIT_ADDRESS": 30}])
def test_address_rotating_client_ids_is_throttled_by_address(client, factory):
    cid, secret = factory.client()
    fresh_window()
    statuses = []
    for i in range(100):
        headers = basic_auth(f"guess-{i}-{os.urandom(3).hex()}", "wrong")
        response = client.post("/oauth2/token", data=TOKEN, headers=headers)
        statuses.append(response.status_code)
    assert statuses[:30] == [401] * 30
    assert statuses[30:] == [429] * 70
    # The address is blocked even for a good client; other addresses are not.
    assert_throttled(client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret)))
    response = client.post(
        "/oauth2/token",
        data=TOKEN,
        headers=basic_auth(cid, secret),
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "limits",
    [
        {
            "AUTH_FAILURE_LIMIT_ADDRESS": 5,
            "AUTH_FAILURE_LIMIT_CLIENT": 0,
            "TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32",
        }
    ],
)
def test_forwarded_for_is_honoured_only_from_trusted_proxies(client, factory):
    cid, secret = factory.client()
    fresh_window()

    def attempt(remote: str, forwarded: str | None, good: bool = False):
        headers = basic_auth(cid, secret if good else "wrong")
        if forwarded is not None:
            headers["X-Forwarded-For"] = forwarded
        return client.post(
            "/oauth2/token", data=TOKEN, headers=headers, environ_base={"REMOTE_ADDR": remote}
        )

    # Through a trusted proxy the address is the one the proxy saw, not the proxy's.
    for _ in range(5):
        assert attempt("10.0.0.1", "203.0.113.5").status_code == 401
    assert_throttled(attempt("10.0.0.2", "203.0.113.5", good=True))
    # A spoofed leftmost entry does not help: the proxy appended the real peer.
    assert_throttled(attempt("10.0.0.1", "192.0.2.99, 203.0.113.5", good=True))
    # Another client behind the same proxy is not blocked by its neighbour.
    assert attempt("10.0.0.1", "203.0.113.6", good=True).status_code == 200

    # From an untrusted peer the header is ignored: rotating it changes nothing.
    for i in range(5):
        assert attempt("192.0.2.1", f"198.51.100.{i}").status_code == 401
    assert_throttled(attempt("192.0.2.1", "198.51.100.200", good=True))
    assert attempt("192.0.2.2", None, good=True).status_code == 200


def test_introspection_and_revocation_share_the_limit(client, factory):
    cid, secret = factory.client()
    paths = ["/oauth2/introspect", "/oauth2/revoke"]
    for path in paths:
        probe = client.post(path, data={"token": "x"}, headers=basic_auth("nobody", "wrong"))
        assert probe.status_code == 401
    fresh_window()
    for i in range(20):
        path = paths[i % 2]
        response = client.post(path, data={"token": "x"}, headers=basic_auth(cid, "wrong"))
        assert response.status_code == 401
    for path in paths:
        assert_throttled(client.post(path, data={"token": "x"}, headers=basic_auth(cid, secret)))
    # Failures at those endpoints count for the token endpoint too.
    assert_throttled(client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret)))


def test_failed_assertions_count_against_the_asserted_client(client, factory):
    """private_key_jwt: the assertion's sub names the client whose count grows."""
    import uuid

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    cid, secret = factory.client()
    stranger = ec.generate_private_key(ec.SECP256R1())  # not a key of this client
    fresh_window()
    for _ in range(20):
        now = int(time.time())
        assertion = jwt.encode(
            {
                "iss": cid,
                "sub": cid,
                "aud": "http://localhost:5000/oauth2/token",
                "iat": now,
                "exp": now + 60,
                "jti": str(uuid.uuid4()),
            },
            stranger,
            algorithm="ES256",
        )
        response = client.post(
            "/oauth2/token",
            data={
                **TOKEN,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            },
        )
        assert response.status_code == 401
    assert_throttled(client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret)))
