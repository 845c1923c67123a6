"""Console sessions (docs/security.md#console): one row per signed-in browser.

The browser's cookie holds a random session token; the row is keyed by its
SHA-256, so a copy of this table (a dump, a replica, a backup) opens no
session. Rows end with their client or the secret used to sign in (ON DELETE
CASCADE), when the console finds them no longer valid, and at `expires_at`
(purged now and then, app/console/sessions.py).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Model
from app.models.types import UTCDateTime


class ConsoleSession(Model):
    __tablename__ = "console_sessions"

    #: hex SHA-256 of the session token in the cookie; never the token itself.
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    #: The secret the admin signed in with: deleting or expiring it ends the session.
    secret_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("client_secrets.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: created_at + CONSOLE_SESSION_LIFETIME: an absolute end, never extended.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
