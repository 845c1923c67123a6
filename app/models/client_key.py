"""Client public keys for private_key_jwt (docs/api.md §2.3)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Model
from app.models.types import JSONType, UTCDateTime
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.models.client import Client


class ClientKey(Model):
    __tablename__ = "client_keys"
    __table_args__ = (sa.UniqueConstraint("client_id", "kid", name="uq_client_keys_client_id_kid"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    kid: Mapped[str] = mapped_column(sa.String(128))
    alg: Mapped[str] = mapped_column(sa.String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    client: Mapped[Client] = relationship(back_populates="keys")
