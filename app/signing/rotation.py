"""Signing-key rotation without a human: a schedule every instance checks.

There is no separate cron process. Each instance, at most once per
KEY_SCHEDULE_INTERVAL seconds, checks on its next request whether the current
key has been current for KEY_ROTATION_INTERVAL seconds (default 30 days) and
whether a retired key has outlived every token it signed. Both checks are a
cheap read; only when something is due does the instance take the key lock
(PostgreSQL advisory lock, SQLite write lock), re-check, and act. So any
number of instances may find the rotation due at the same moment and exactly
one rotation happens.
"""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa
from flask import Flask, current_app

from app.extensions import db
from app.runtime import runtime
from app.signing import keys as service

log = logging.getLogger(__name__)

#: The audit actor of rotations the schedule makes.
SCHEDULER_ACTOR = "scheduler"


class RotationScheduler:
    """Decides when this process next checks the rotation schedule."""

    def __init__(self, check_interval: float) -> None:
        self.check_interval = check_interval
        self._next_check = 0.0
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """True for at most one caller per check interval in this process."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        with self._lock:
            if now < self._next_check:
                return False
            self._next_check = now + self.check_interval
            return True


def run_schedule() -> dict[str, object]:
    """Rotate if due and purge expired retired keys; commits. Returns what it did."""
    cfg = current_app.config
    try:
        rotated = service.rotate_if_due(
            cfg["SIGNING_ALG"],
            cfg["KEYS_DIR"],
            cfg["KEYS_PASSPHRASE"],
            float(cfg.get("KEY_ROTATION_INTERVAL", 0)),
            SCHEDULER_ACTOR,
        )
    except service.SigningKeysUnreadable as refused:
        # The current key keeps signing; an operator has to act, and this
        # line repeats every KEY_SCHEDULE_INTERVAL until one does.
        db.session.rollback()
        log.error("scheduled rotation refused: %s", refused.detail)
        rotated = None
    db.session.commit()
    purged: list[str] = []
    if service.expired_keys_exist():
        purged = service.purge_expired_keys(cfg["KEYS_DIR"])
        db.session.commit()
    if rotated is not None or purged:
        runtime().keyring.invalidate()
    if rotated is not None:
        log.info("scheduled rotation: current signing key is now %s", rotated.kid)
    if purged:
        log.info("purged expired signing keys: %s", ", ".join(purged))
    return {"rotated": rotated.kid if rotated is not None else None, "purged": purged}


class KeySchedule:
    """Request observer (app.http.pipeline): run the schedule when this process's turn comes."""

    def __init__(self, scheduler: RotationScheduler) -> None:
        self.scheduler = scheduler

    def before(self, _request: object) -> None:
        if not self.scheduler.claim():
            return
        try:
            run_schedule()
        except sa.exc.SQLAlchemyError:
            # Another instance holding the lock too long, or the database is
            # down: the request goes on; the next check retries.
            db.session.rollback()
            log.warning("signing-key schedule check failed; retrying later", exc_info=True)


def init_app(app: Flask) -> KeySchedule:
    """The observer that checks the schedule on a request at most once per KEY_SCHEDULE_INTERVAL.

    create_app hands it to the request pipeline.
    """
    return KeySchedule(RotationScheduler(float(app.config.get("KEY_SCHEDULE_INTERVAL", 60))))
