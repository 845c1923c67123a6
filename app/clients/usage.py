"""Throttled last_used_at updates for secrets and keys.

A write per token request would serialize the token endpoint on the row
lock, so authentications are noted in memory and written in one batched
UPDATE per table at most every LAST_USED_RESOLUTION seconds per process.
last_used_at is therefore accurate to that resolution, and a process that
dies loses at most that window of notes.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import sqlalchemy as sa

from app.models import ClientKey, ClientSecret
from app.models.types import UTCDateTime
from app.timeutil import utcnow


class UsageTracker:
    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self._secrets: dict[str, datetime] = {}
        self._keys: dict[tuple[str, str], datetime] = {}
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()

    def secret_used(self, secret_id: str) -> None:
        self._secrets[secret_id] = utcnow()

    def key_used(self, client_id: str, kid: str) -> None:
        self._keys[(client_id, kid)] = utcnow()

    def due(self) -> bool:
        return bool(self._secrets or self._keys) and (
            time.monotonic() - self._last_flush >= self.resolution
        )

    def flush(self, engine: sa.Engine) -> None:
        """Write pending notes in one transaction; safe to call from any thread."""
        with self._lock:
            secrets, self._secrets = self._secrets, {}
            keys, self._keys = self._keys, {}
            self._last_flush = time.monotonic()
        if not secrets and not keys:
            return
        with engine.begin() as conn:
            if secrets:
                conn.execute(
                    sa.update(ClientSecret)
                    .where(ClientSecret.id == sa.bindparam("sid"))
                    .values(last_used_at=sa.bindparam("used", type_=UTCDateTime())),
                    [{"sid": k, "used": v} for k, v in sorted(secrets.items())],
                )
            if keys:
                conn.execute(
                    sa.update(ClientKey)
                    .where(
                        ClientKey.client_id == sa.bindparam("cid"),
                        ClientKey.kid == sa.bindparam("k"),
                    )
                    .values(last_used_at=sa.bindparam("used", type_=UTCDateTime())),
                    [{"cid": c, "k": k, "used": v} for (c, k), v in sorted(keys.items())],
                )
