"""Unit: the replay cache's combiner (app/state/jti.py) batches concurrent writes and never
answers "new" twice for one key.

The recording function here is an in-memory set with a delay, so that
threads pile up behind a write in flight; the real stores' races run in
tests/state/test_jti_store.py on SQLite, PostgreSQL and Redis.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from app.state.jti import Combiner

LATER = datetime(2100, 1, 1, tzinfo=UTC)


class SlowSet:
    def __init__(self, delay: float = 0.005) -> None:
        self.keys: set[str] = set()
        self.calls: list[list[str]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def record(self, rows):
        with self.lock:
            self.calls.append([key for key, _ in rows])
        time.sleep(self.delay)
        assert len({key for key, _ in rows}) == len(rows), "keys sent to the store are distinct"
        new = {key for key, _ in rows if key not in self.keys}
        self.keys |= new
        return new


def run_threads(count: int, target) -> list:
    results: list = [None] * count
    start = threading.Barrier(count)

    def work(index: int) -> None:
        start.wait()
        results[index] = target(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_one_caller_alone_is_sent_at_once():
    store = SlowSet(0)
    combiner = Combiner(store.record)
    assert combiner.use([("a", LATER)]) == [True]
    assert combiner.use([("a", LATER)]) == [False]
    assert store.calls == [["a"], ["a"]]


def test_concurrent_writes_share_round_trips_and_each_gets_its_own_answer():
    store = SlowSet()
    combiner = Combiner(store.record)
    results = run_threads(40, lambda i: combiner.use([(f"k{i}", LATER)]))
    assert results == [[True]] * 40
    assert sorted(k for call in store.calls for k in call) == sorted(f"k{i}" for i in range(40))
    # Threads queued behind a write in flight went out together.
    assert len(store.calls) < 40


def test_one_key_raced_by_many_threads_is_new_exactly_once():
    store = SlowSet()
    combiner = Combiner(store.record)
    results = run_threads(30, lambda i: combiner.use([("same", LATER), (f"own{i}", LATER)]))
    assert sum(r[0] for r in results) == 1
    assert all(r[1] for r in results)


def test_a_key_repeated_within_one_call_is_a_replay():
    combiner = Combiner(SlowSet(0).record)
    assert combiner.use([("x", LATER), ("x", LATER)]) == [True, False]


def test_a_failed_write_fails_every_caller_of_that_batch_and_the_next_batch_goes_on():
    calls = 0
    lock = threading.Lock()

    def flaky(rows):
        nonlocal calls
        with lock:
            calls += 1
            first = calls == 1
        time.sleep(0.01)
        if first:
            raise RuntimeError("store down")
        return {key for key, _ in rows}

    combiner = Combiner(flaky)

    def attempt(index: int):
        try:
            return combiner.use([(f"k{index}", LATER)])
        except RuntimeError:
            return "error"

    results = run_threads(20, attempt)
    assert "error" in results
    assert [True] in results
    # Nothing hangs and the combiner is usable afterwards.
    assert combiner.use([("after", LATER)]) == [True]


def test_an_error_reaches_a_lone_caller():
    def down(rows):
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        Combiner(down).use([("k", LATER)])
