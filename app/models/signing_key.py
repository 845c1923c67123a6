"""The server's signing keys: status here, private PEM under KEYS_DIR."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Model
from app.models.types import JSONType, UTCDateTime
from app.timeutil import utcnow

KEY_STATUSES = ("next", "current", "retired")


class SigningKey(Model):
    __tablename__ = "signing_keys"
    __table_args__ = (
        sa.CheckConstraint("status IN ('next', 'current', 'retired')", name="status"),
        # At most one current and one next key, enforced by the database so
        # two instances rotating at once cannot both win.
        sa.Index(
            "uq_signing_keys_one_current",
            "status",
            unique=True,
            sqlite_where=sa.text("status = 'current'"),
            postgresql_where=sa.text("status = 'current'"),
        ),
        sa.Index(
            "uq_signing_keys_one_next",
            "status",
            unique=True,
            sqlite_where=sa.text("status = 'next'"),
            postgresql_where=sa.text("status = 'next'"),
        ),
    )

    kid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a retired key leaves the JWKS: retirement + the longest token TTL.
    retires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
