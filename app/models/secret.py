"""Client secrets (docs/api.md §2.2): only an HMAC of the secret is stored."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Model
from app.models.types import UTCDateTime
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.models.client import Client

#: The longest description a secret may carry (the column and the API schema).
SECRET_DESCRIPTION_MAX_LENGTH = 200


class ClientSecret(Model):
    __tablename__ = "client_secrets"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    secret_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    hint: Mapped[str] = mapped_column(sa.String(4))
    description: Mapped[str | None] = mapped_column(sa.String(SECRET_DESCRIPTION_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    client: Mapped[Client] = relationship(back_populates="secrets")

    def is_active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now
