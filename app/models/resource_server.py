"""Resource servers: the APIs tokens are for (docs/api.md §2.7)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Model
from app.models.client import (
    ACCOUNT_ID_MAX_LENGTH,
    AUDIENCE_MAX_LENGTH,
    DESCRIPTION_MAX_LENGTH,
    MAX_TTL,
    MIN_TTL,
)
from app.models.types import JSONType, UTCDateTime
from app.timeutil import utcnow

# An identifier is an audience (`aud`), so it has an audience's limit.
IDENTIFIER_MAX_LENGTH = AUDIENCE_MAX_LENGTH
RS_NAME_MAX_LENGTH = 200
MAX_RS_SCOPES = 200
RS_SCOPE_DESCRIPTION_MAX_LENGTH = 500


class ResourceServer(Model):
    __tablename__ = "resource_servers"
    __table_args__ = (
        # Unique on the server, not per account: an audience names one API.
        sa.UniqueConstraint("identifier", name="uq_resource_servers_identifier"),
        sa.CheckConstraint(
            f"access_token_ttl IS NULL OR access_token_ttl BETWEEN {MIN_TTL} AND {MAX_TTL}",
            name="access_token_ttl",
        ),
        sa.CheckConstraint("length(name) >= 1", name="name_not_empty"),
        sa.CheckConstraint("length(identifier) >= 1", name="identifier_not_empty"),
        sa.Index("ix_resource_servers_account_id_created_at_id", "account_id", "created_at", "id"),
        sa.Index("ix_resource_servers_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.String(ACCOUNT_ID_MAX_LENGTH))
    identifier: Mapped[str] = mapped_column(sa.String(IDENTIFIER_MAX_LENGTH))
    name: Mapped[str] = mapped_column(sa.String(RS_NAME_MAX_LENGTH))
    description: Mapped[str | None] = mapped_column(sa.String(DESCRIPTION_MAX_LENGTH))
    # [{"value": ..., "description": ...}]; empty: the API accepts any scope.
    scopes: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    access_token_ttl: Mapped[int | None] = mapped_column(sa.Integer)
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    tls_client_certificate_bound_access_tokens: Mapped[bool] = mapped_column(
        sa.Boolean, default=False
    )
    shared: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # Bumped on every change; the ETag is derived from it.
    version: Mapped[int] = mapped_column(sa.Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<ResourceServer {self.id} {self.account_id} {self.identifier}>"
