"""Shared short-lived state: revoked token ids, used assertion ids, auth failures.

Each row carries its own expiry and is purged after it, so none of these
tables grows without bound.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Model
from app.models.types import UTCDateTime


class RevokedToken(Model):
    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(sa.String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Set only on a client's cut-off row (jti "cutoff:" + client id): tokens of
    # that client issued before this instant (epoch milliseconds) are denied.
    not_before: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)


class UsedAssertion(Model):
    __tablename__ = "used_assertions"

    # client id + ":" + jti: one client's jti space never blocks another's.
    key: Mapped[str] = mapped_column(sa.String(400), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuthFailure(Model):
    """Failed client authentications per key (client id or address) and window."""

    __tablename__ = "auth_failures"

    key: Mapped[str] = mapped_column(sa.String(400), primary_key=True)
    window_start: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(sa.Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
