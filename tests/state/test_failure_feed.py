"""Integration: the rate limiter's pre-check reads no shared store per request, yet a
block made on one instance holds on every other one (app/state/failure_feed.py).

Two or three app instances share one PostgreSQL database (and Redis for the
Redis backend); the feed runs on LISTEN/NOTIFY or Redis pub/sub for real. The
spy on the counters' read only counts calls and passes them through.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.runtime import Runtime
from app.state import failures
from app.state.failure_feed import APPLICATION_NAME, Blocks, parse_payload, payload
from tests.conftest import basic_auth

WINDOW = 6
LIMIT = 3
TOKEN = {"grant_type": "client_credentials"}


@pytest.fixture
def window() -> int:
    """The limit window in seconds; a test may parametrize a longer one."""
    return WINDOW


@pytest.fixture
def limit_total() -> int:
    """AUTH_FAILURE_LIMIT_CLIENT_TOTAL; a test may parametrize a smaller one."""
    return 300


@pytest.fixture
def app_config(backend_config, window, limit_total) -> dict:
    return {
        **backend_config,
        "AUTH_FAILURE_WINDOW": window,
        "AUTH_FAILURE_LIMIT_CLIENT": LIMIT,
        "AUTH_FAILURE_LIMIT_ADDRESS": 300,
        "AUTH_FAILURE_LIMIT_CLIENT_TOTAL": limit_total,
        "TRUSTED_PROXIES": "",
    }


@pytest.fixture
def on_postgres(app) -> bool:
    with app.app_context():
        return db.engine.dialect.name == "postgresql"


@pytest.fixture
def feeds(on_postgres, backend):
    if backend == "database" and not on_postgres:
        pytest.skip("the database feed is PostgreSQL's LISTEN/NOTIFY")


@pytest.fixture
def counter_reads(monkeypatch) -> list[int]:
    """How often any instance read the shared counters (the per-request fallback)."""
    calls = [0]
    for cls in (failures.SqlCounters, failures.PostgresCounters, failures.RedisCounters):
        real = cls.counts

        def spy(self, keys, window_start, real=real):
            calls[0] += 1
            return real(self, keys, window_start)

        monkeypatch.setattr(cls, "counts", spy)
    return calls


def runtime_of(app) -> Runtime:
    return app.extensions["ccserver"]


def limiter(app) -> failures.FailureCounters:
    return runtime_of(app).throttle.counters


def wait_trusted(app, seconds: float = 10) -> None:
    """Wait until the instance's feed has subscribed and loaded."""
    deadline = time.monotonic() + seconds
    with app.app_context():
        lim = limiter(app)
        while time.monotonic() < deadline:
            blocks = lim.blocks()
            assert blocks is not None
            if blocks.trusted(lim.window_start()):
                return
            time.sleep(0.02)
    raise AssertionError("the rate-limit feed never became ready")


def fresh_window(needed: float = 4, window: int = WINDOW) -> None:
    left = window - time.time() % window
    if left < needed:
        time.sleep(left + 0.05)


def fail_until_blocked(http, cid: str) -> None:
    for _ in range(LIMIT):
        assert (
            http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, "wrong")).status_code
            == 401
        )
    assert (
        http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, "wrong")).status_code == 429
    )


def token_status(http, cid: str, secret: str, address: str = "127.0.0.1") -> int:
    response = http.post(
        "/oauth2/token",
        data=TOKEN,
        headers=basic_auth(cid, secret),
        environ_base={"REMOTE_ADDR": address},
    )
    return response.status_code


def eventually(predicate, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_block_on_one_instance_holds_on_another_without_reads(
    app, client, factory, feeds, make_app, counter_reads
):
    cid, secret = factory.client()
    other = make_app()
    http = other.test_client()
    fresh_window()
    assert token_status(http, cid, secret) == 200  # starts the second instance's feed
    assert token_status(client, cid, secret) == 200
    wait_trusted(app)
    wait_trusted(other)
    reads_before = counter_reads[0]

    fail_until_blocked(client, cid)
    # The second instance hears of the block within milliseconds, not a window.
    assert eventually(lambda: token_status(http, cid, secret) == 429)
    refused = http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret))
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "slow_down"
    assert 1 <= int(refused.headers["Retry-After"]) <= WINDOW
    # The block is of this client id from this address: from another, it gets tokens.
    assert token_status(http, cid, secret, "198.51.100.4") == 200
    assert token_status(client, cid, secret, "198.51.100.4") == 200
    # Every pre-check above was answered from the local copy.
    assert counter_reads[0] == reads_before
    # Another client is untouched, and the block ends with the window.
    other_cid, other_secret = factory.client()
    assert token_status(http, other_cid, other_secret) == 200
    time.sleep(WINDOW - time.time() % WINDOW + 0.05)
    assert token_status(http, cid, secret) == 200
    assert token_status(client, cid, secret) == 200


def test_instance_started_during_a_block_loads_it(app, client, factory, feeds, make_app):
    cid, secret = factory.client()
    fresh_window()
    fail_until_blocked(client, cid)
    late = make_app()
    http = late.test_client()
    with late.app_context():
        limiter(late).feed()
    wait_trusted(late)
    assert token_status(http, cid, secret) == 429


@pytest.mark.parametrize("limit_total", [2])
def test_client_wide_block_holds_on_every_instance_and_address_without_reads(
    app, client, factory, feeds, make_app, counter_reads, limit_total
):
    """The client-wide limit (here below the per-address one) reaches every feed."""
    cid, secret = factory.client()
    other = make_app()
    http = other.test_client()
    fresh_window()
    assert token_status(http, cid, secret) == 200
    assert token_status(client, cid, secret) == 200
    wait_trusted(app)
    wait_trusted(other)
    reads_before = counter_reads[0]

    # One failure from each of two addresses: each pair is far below its limit.
    assert token_status(client, cid, "wrong", "192.0.2.1") == 401
    assert token_status(client, cid, "wrong", "192.0.2.2") == 401
    assert token_status(client, cid, secret, "192.0.2.3") == 429
    assert eventually(lambda: token_status(http, cid, secret, "198.51.100.5") == 429)
    assert token_status(http, cid, secret, "192.0.2.1") == 429
    other_cid, other_secret = factory.client()
    assert token_status(http, other_cid, other_secret, "192.0.2.1") == 200
    assert counter_reads[0] == reads_before

    # An instance started now loads the block, although its count (2) is under
    # the per-address limit (3): the feed loads from the smallest limit up.
    late = make_app()
    with late.app_context():
        limiter(late).feed()
    wait_trusted(late)
    assert token_status(late.test_client(), cid, secret, "203.0.113.9") == 429
    assert counter_reads[0] == reads_before


def _kill_feed_connections(app, backend: str) -> None:
    with app.app_context():
        if backend == "redis":
            runtime_of(app).redis.client_kill_filter(_type="pubsub")
        else:
            with db.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :name"
                    ),
                    {"name": APPLICATION_NAME},
                )


@pytest.mark.parametrize("window", [20])
def test_lost_feed_falls_back_to_reads_then_recovers(
    app, client, factory, feeds, backend, make_app, counter_reads, window
):
    cid, secret = factory.client()
    other = make_app()
    http = other.test_client()
    # Losing the feed, noticing it and reconnecting take a few seconds: all
    # of it must happen inside the one window whose block is being checked.
    fresh_window(needed=14, window=window)
    assert token_status(http, cid, secret) == 200
    wait_trusted(other)
    fail_until_blocked(client, cid)
    assert eventually(lambda: token_status(http, cid, secret) == 429)

    _kill_feed_connections(app, backend)
    with other.app_context():
        lim = limiter(other)
        window_start = lim.window_start()
        # The feed notices its dead connection within its poll interval...
        assert eventually(lambda: not lim.blocks().trusted(window_start), seconds=3)
    reads_before = counter_reads[0]
    # ...and meanwhile the pre-check reads the shared counters: still refused.
    assert token_status(http, cid, secret) == 429
    assert counter_reads[0] > reads_before
    # It reconnects, reloads the block that exists, and answers locally again.
    wait_trusted(other)
    reads_before = counter_reads[0]
    assert token_status(http, cid, secret) == 429
    assert counter_reads[0] == reads_before


def test_feed_can_be_turned_off(factory, feeds, make_app, counter_reads):
    app_off = make_app(AUTH_FAILURE_FEED=False)
    with app_off.app_context():
        assert limiter(app_off).feed() is None
    cid, secret = factory.client()
    reads_before = counter_reads[0]
    assert token_status(app_off.test_client(), cid, secret) == 200
    assert counter_reads[0] == reads_before + 1


def test_sqlite_has_no_feed(app, on_postgres, backend):
    if on_postgres or backend == "redis":
        pytest.skip("SQLite without Redis only")
    with app.app_context():
        assert limiter(app).feed() is None


# --- the local copy --------------------------------------------------------------


def test_blocks_are_per_window_and_only_grow():
    blocks = Blocks()
    assert not blocks.trusted(60)
    blocks.replace([(60, 5, "client:a")])
    assert blocks.trusted(60)
    assert blocks.count("client:a", 60) == 5
    blocks.add(60, 4, "client:a")  # a late, smaller count changes nothing
    assert blocks.count("client:a", 60) == 5
    blocks.add(0, 9, "client:b")  # about a window that is over: ignored
    assert blocks.count("client:b", 0) == 0
    blocks.add(120, 3, "addr:192.0.2.1")  # a new window starts empty
    assert blocks.count("client:a", 120) == 0
    assert blocks.count("client:a", 60) == 0
    assert blocks.count("addr:192.0.2.1", 120) == 3
    blocks.suspend()
    assert not blocks.trusted(120)


def test_blocks_say_when_a_window_holds_no_count():
    """What lets a request skip its counter keys: nothing counted in this window."""
    blocks = Blocks()
    blocks.replace([])
    assert blocks.empty(60)
    blocks.add(60, 5, "client:a")
    assert not blocks.empty(60)
    assert blocks.empty(120)  # a later window: nothing counted in it yet
    blocks.add(120, 1, "addr:192.0.2.1")
    assert not blocks.empty(120)


def test_blocks_over_capacity_are_not_trusted_for_that_window():
    blocks = Blocks(capacity=2)
    blocks.replace([])
    blocks.add(60, 3, "client:a")
    blocks.add(60, 3, "client:b")
    assert blocks.trusted(60)
    blocks.add(60, 3, "client:c")
    assert not blocks.trusted(60)  # the pre-check reads the store instead
    blocks.add(120, 3, "client:d")
    assert blocks.trusted(120)


@pytest.mark.parametrize(
    "text",
    ["", "60", "60 3", "60 3 ", "x 3 client:a", "60 y client:a"],
)
def test_malformed_notifications_are_ignored(text):
    assert parse_payload(text) is None


def test_notification_round_trip_keeps_spaces_in_keys():
    assert parse_payload(payload(60, 3, "client:a b")) == (60, 3, "client:a b")


def test_a_disposed_engine_stops_the_feed_and_the_next_check_starts_another(app, feeds):
    with app.app_context():
        lim = limiter(app)
        first = lim.feed()
        wait_trusted(app)
        db.engine.dispose()
        assert first.stopped
        assert not first.blocks.trusted(lim.window_start())
        second = lim.feed()
        assert second is not first
    wait_trusted(app)
    first.join(timeout=5)


def test_a_closed_copy_is_never_trusted_again():
    blocks = Blocks()
    blocks.close()
    blocks.replace([(60, 3, "client:a")])  # a load that finished after the stop
    assert not blocks.trusted(60)
