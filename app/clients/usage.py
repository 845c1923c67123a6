"""Throttled last_used_at updates for secrets, keys and federated credentials.

A write per token request would serialize the token endpoint on the row
lock, so authentications are noted in memory and written in one batched
UPDATE per table at most every LAST_USED_RESOLUTION seconds per process.
A daemon thread per process (started with the first note, restarted in a
forked worker) writes the notes once they are due, so a use is written
within that resolution even when no later request comes; a request that
finds notes due writes them too. last_used_at is therefore accurate to
that resolution, and a process that dies loses at most that window of notes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime

import sqlalchemy as sa

from app.extensions import db
from app.models import ClientKey, ClientSecret, FederatedCredential
from app.models.types import UTCDateTime
from app.timeutil import utcnow

log = logging.getLogger(__name__)
#: The flusher never wakes more often than this, whatever the resolution.
MIN_INTERVAL = 0.05


class UsageTracker:
    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self._secrets: dict[str, datetime] = {}
        self._keys: dict[tuple[str, str], datetime] = {}
        self._federated: dict[str, datetime] = {}
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        # (pid, flusher): a forked worker inherits no thread, so it starts its own.
        self._flusher: tuple[int, _Flusher] | None = None

    def secret_used(self, secret_id: str) -> None:
        self._secrets[secret_id] = utcnow()
        self._wake()

    def key_used(self, client_id: str, kid: str) -> None:
        self._keys[(client_id, kid)] = utcnow()
        self._wake()

    def federated_used(self, credential_id: str) -> None:
        self._federated[credential_id] = utcnow()
        self._wake()

    def pending(self) -> bool:
        return bool(self._secrets or self._keys or self._federated)

    def due(self) -> bool:
        return self.pending() and self.wait_time() <= 0

    def wait_time(self) -> float:
        """Seconds until a flush is due."""
        return self._last_flush + self.resolution - time.monotonic()

    def flush(self, engine: sa.Engine) -> None:
        """Write pending notes in one transaction; safe to call from any thread."""
        with self._lock:
            secrets, self._secrets = self._secrets, {}
            keys, self._keys = self._keys, {}
            federated, self._federated = self._federated, {}
            self._last_flush = time.monotonic()
        if not secrets and not keys and not federated:
            return
        # Several processes write their own notes in any order: a row only
        # ever moves forward in time.
        with engine.begin() as conn:
            if secrets:
                used = sa.bindparam("used", type_=UTCDateTime())
                conn.execute(
                    sa.update(ClientSecret)
                    .where(
                        ClientSecret.id == sa.bindparam("sid"),
                        sa.or_(
                            ClientSecret.last_used_at.is_(None), ClientSecret.last_used_at < used
                        ),
                    )
                    .values(last_used_at=used),
                    [{"sid": k, "used": v} for k, v in sorted(secrets.items())],
                )
            if keys:
                used = sa.bindparam("used", type_=UTCDateTime())
                conn.execute(
                    sa.update(ClientKey)
                    .where(
                        ClientKey.client_id == sa.bindparam("cid"),
                        ClientKey.kid == sa.bindparam("k"),
                        sa.or_(ClientKey.last_used_at.is_(None), ClientKey.last_used_at < used),
                    )
                    .values(last_used_at=used),
                    [{"cid": c, "k": k, "used": v} for (c, k), v in sorted(keys.items())],
                )
            if federated:
                used = sa.bindparam("used", type_=UTCDateTime())
                conn.execute(
                    sa.update(FederatedCredential)
                    .where(
                        FederatedCredential.id == sa.bindparam("fid"),
                        sa.or_(
                            FederatedCredential.last_used_at.is_(None),
                            FederatedCredential.last_used_at < used,
                        ),
                    )
                    .values(last_used_at=used),
                    [{"fid": k, "used": v} for k, v in sorted(federated.items())],
                )

    def flusher(self) -> _Flusher | None:
        """This process's flusher thread, or None when none has started."""
        current = self._flusher
        if current is None or current[0] != os.getpid():
            return None
        return current[1]

    def stop(self) -> None:
        """Stop this process's flusher (unwritten notes stay for a later flush)."""
        flusher = self.flusher()
        if flusher is not None:
            flusher.stop()

    def _wake(self) -> None:
        flusher = self.flusher()
        if flusher is None or flusher.stopped:
            flusher = self._start()
        flusher.wake()

    def _start(self) -> _Flusher:
        pid = os.getpid()
        with self._lock:
            current = self._flusher
            if current is not None and current[0] == pid and not current[1].stopped:
                return current[1]
            # Called while a request is served, so the app's engine is at hand;
            # the thread needs no app context beyond it.
            engine = db.engine
            flusher = _Flusher(self, engine)
            self._flusher = (pid, flusher)
        flusher.start()
        # Tests and forks dispose the app's engine; the flusher goes with it.
        sa.event.listen(engine, "engine_disposed", lambda _engine: flusher.stop())
        return flusher


class _Flusher:
    """A daemon thread that writes a tracker's notes once they are due."""

    def __init__(self, tracker: UsageTracker, engine: sa.Engine) -> None:
        self.tracker = tracker
        self.engine = engine
        self._noted = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ccserver-last-used", daemon=True)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        if not self._noted.is_set():  # the token endpoint's hot path: no lock when set
            self._noted.set()

    def stop(self) -> None:
        self._stop.set()
        self._noted.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        tracker = self.tracker
        while True:
            # Idle until something is noted: an unused process never wakes.
            self._noted.wait()
            if self._stop.wait(max(tracker.wait_time(), MIN_INTERVAL)):
                return
            self._noted.clear()
            if not tracker.pending():
                continue
            try:
                tracker.flush(self.engine)
            except Exception:  # noqa: BLE001 - last_used_at is best effort; notes of the batch are lost
                log.warning("could not write last_used_at")
            if tracker.pending():
                self._noted.set()
