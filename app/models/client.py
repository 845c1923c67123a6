"""API clients (docs/api.md §2.1)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Model
from app.models.types import JSONType, UTCDateTime
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.models.client_key import ClientKey
    from app.models.secret import ClientSecret

CLIENT_TYPES = ("standard", "admin")


class Client(Model):
    __tablename__ = "clients"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "name", name="uq_clients_account_id_name"),
        sa.CheckConstraint("client_type IN ('standard', 'admin')", name="client_type"),
        sa.CheckConstraint("access_token_ttl BETWEEN 60 AND 86400", name="access_token_ttl"),
        # Keyset pagination walks (created_at, id), optionally within an account.
        sa.Index("ix_clients_created_at_id", "created_at", "id"),
        sa.Index("ix_clients_account_id_created_at_id", "account_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(63))
    friendly_name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str | None] = mapped_column(sa.String(2000))
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    client_type: Mapped[str] = mapped_column(sa.String(16), default="standard")
    owner: Mapped[str | None] = mapped_column(sa.String(254))
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    audiences: Mapped[list[str]] = mapped_column(JSONType, default=list)
    access_token_ttl: Mapped[int] = mapped_column(sa.Integer, default=3600)
    locked: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # Bumped on every change; the ETag is derived from it.
    version: Mapped[int] = mapped_column(sa.Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    secrets: Mapped[list[ClientSecret]] = relationship(
        back_populates="client", cascade="all, delete-orphan", passive_deletes=True
    )
    keys: Mapped[list[ClientKey]] = relationship(
        back_populates="client", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"<Client {self.id} {self.account_id}/{self.name}>"
