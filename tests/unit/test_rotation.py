"""Unit tests: app.signing.rotation's per-process gate on how often the schedule is checked."""

from __future__ import annotations

import threading
import time

from app.signing.rotation import RotationScheduler


def test_schedule_checks_at_most_once_per_interval():
    scheduler = RotationScheduler(60)
    assert scheduler.claim() is True
    assert scheduler.claim() is False


def test_the_next_interval_may_claim_again():
    scheduler = RotationScheduler(0.05)
    assert scheduler.claim() is True
    assert scheduler.claim() is False
    time.sleep(0.06)
    assert scheduler.claim() is True


def test_zero_interval_checks_on_every_request():
    scheduler = RotationScheduler(0)
    assert [scheduler.claim() for _ in range(3)] == [True, True, True]


def test_racing_threads_get_one_claim():
    scheduler = RotationScheduler(60)
    barrier = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def claim():
        barrier.wait(timeout=10)
        won = scheduler.claim()
        with lock:
            results.append(won)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results) == [False] * 7 + [True]
