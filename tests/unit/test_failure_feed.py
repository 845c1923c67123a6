"""Unit tests: app.state.failure_feed's block set (`Blocks`) and its notification format.

`Blocks` is each process's copy of the keys over a limit in the current
window; the feed that fills it from PostgreSQL or Redis is tested over real
connections in tests/state/test_failure_feed.py.
"""

from __future__ import annotations

import threading

import pytest

from app.state.failure_feed import Blocks, parse_payload, payload

# --- what the copy holds --------------------------------------------------------


def test_an_empty_copy_counts_nothing():
    blocks = Blocks()
    assert blocks.count("client:a", 60) == 0
    blocks.replace([])
    assert blocks.count("client:a", 60) == 0


def test_counts_are_per_key_and_for_their_window_only():
    blocks = Blocks()
    blocks.replace([(60, 20, "client:a"), (60, 300, "addr:192.0.2.1")])
    assert blocks.count("client:a", 60) == 20
    assert blocks.count("addr:192.0.2.1", 60) == 300
    assert blocks.count("client:b", 60) == 0
    # Asked about an earlier or a later window, the copy knows nothing.
    assert blocks.count("client:a", 0) == 0
    assert blocks.count("client:a", 120) == 0


def test_a_new_window_forgets_the_old_one():
    blocks = Blocks()
    blocks.replace([(60, 20, "client:a")])
    blocks.add(120, 21, "client:b")
    assert blocks.count("client:b", 120) == 21
    assert blocks.count("client:a", 120) == 0
    # A message about the window that just ended cannot bring it back.
    blocks.add(60, 25, "client:a")
    assert blocks.count("client:a", 60) == 0
    assert blocks.count("client:a", 120) == 0


@pytest.mark.parametrize("order", [[20, 23, 21], [23, 20, 21], [21, 20, 23]])
def test_out_of_order_counts_keep_the_largest(order):
    blocks = Blocks()
    blocks.replace([])
    for count in order:
        blocks.add(60, count, "client:a")
    assert blocks.count("client:a", 60) == 23


def test_replace_keeps_only_the_newest_window_it_is_given():
    blocks = Blocks()
    blocks.replace([(60, 20, "client:old"), (120, 20, "client:new"), (60, 30, "client:late")])
    assert blocks.count("client:new", 120) == 20
    assert blocks.count("client:old", 60) == 0
    assert blocks.count("client:late", 60) == 0


def test_replace_starts_over():
    blocks = Blocks()
    blocks.replace([(60, 20, "client:a")])
    blocks.replace([(60, 20, "client:b")])
    assert blocks.count("client:a", 60) == 0
    assert blocks.count("client:b", 60) == 20


# --- when the copy may be trusted -----------------------------------------------


def test_not_trusted_until_loaded():
    blocks = Blocks()
    blocks.add(60, 20, "client:a")  # a message before the load finished
    assert not blocks.trusted(60)
    blocks.replace([(60, 20, "client:a")])
    assert blocks.trusted(60)


def test_suspended_until_reloaded():
    blocks = Blocks()
    blocks.replace([])
    blocks.suspend()
    blocks.add(60, 20, "client:a")
    assert not blocks.trusted(60)
    blocks.replace([(60, 20, "client:a")])
    assert blocks.trusted(60)


def test_closed_for_good():
    blocks = Blocks()
    blocks.replace([])
    blocks.close()
    assert not blocks.trusted(60)
    blocks.replace([])
    assert not blocks.trusted(60)


def test_a_known_key_at_capacity_is_updated_not_dropped():
    blocks = Blocks(capacity=2)
    blocks.replace([(60, 20, "client:a"), (60, 20, "client:b")])
    blocks.add(60, 25, "client:a")
    assert blocks.count("client:a", 60) == 25
    assert blocks.trusted(60)


def test_over_capacity_only_that_window_is_untrusted():
    blocks = Blocks(capacity=1)
    blocks.replace([(60, 20, "client:a")])
    blocks.add(60, 20, "client:b")
    assert blocks.count("client:b", 60) == 0  # dropped, so the copy is incomplete
    assert not blocks.trusted(60)
    assert blocks.trusted(120)
    blocks.add(120, 20, "client:b")
    assert blocks.trusted(120)


def test_an_overflow_found_while_loading_is_kept():
    blocks = Blocks(capacity=1)
    blocks.replace([(60, 20, "client:a"), (60, 20, "client:b")])
    assert not blocks.trusted(60)
    blocks.replace([(60, 20, "client:a")])  # the next load fits again
    assert blocks.trusted(60)


def test_concurrent_adds_lose_no_key_and_keep_the_largest_count():
    blocks = Blocks()
    blocks.replace([])
    barrier = threading.Barrier(8)

    def feed(worker: int) -> None:
        barrier.wait(timeout=10)
        for count in range(20, 60):
            blocks.add(60, count + worker, f"client:{count % 10}")

    threads = [threading.Thread(target=feed, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    for key in range(10):
        # Largest count for key k: the last count in 20..59 with count % 10 == k, plus 7.
        assert blocks.count(f"client:{key}", 60) == 50 + key + 7


# --- notifications --------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["client:a", "addr:192.0.2.1", "addr:2001:db8::1", "client:a b  c", "client:é"]
)
def test_notification_round_trip(key):
    assert parse_payload(payload(1_767_225_600, 21, key)) == (1_767_225_600, 21, key)


@pytest.mark.parametrize("text", ["60 3", "60  client:a", "60 3.5 client:a", " 60 3 client:a"])
def test_notifications_that_are_not_three_fields_are_ignored(text):
    assert parse_payload(text) is None
