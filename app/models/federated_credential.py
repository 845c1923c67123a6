"""Federated credentials: foreign JWTs a client may authenticate with (docs/api.md §1.3, §2.8)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Model
from app.models.types import JSONType, UTCDateTime, new_id
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.models.client import Client

FEDERATED_NAME_MAX_LENGTH = 64
ISSUER_MAX_LENGTH = 1024
SUBJECT_MAX_LENGTH = 1024
FEDERATED_AUDIENCE_MAX_LENGTH = 1024
JWKS_URI_MAX_LENGTH = 2048
MIN_TOKEN_AGE = 60
MAX_TOKEN_AGE = 86400
DEFAULT_TOKEN_AGE = 3600


class FederatedCredential(Model):
    __tablename__ = "federated_credentials"
    __table_args__ = (
        sa.UniqueConstraint("client_id", "name", name="uq_federated_credentials_client_id_name"),
        # Exactly one of the two, whichever face writes the row.
        sa.CheckConstraint(
            "(subject IS NULL) <> (subject_pattern IS NULL)", name="one_subject_rule"
        ),
        sa.CheckConstraint(
            f"max_token_age >= {MIN_TOKEN_AGE} AND max_token_age <= {MAX_TOKEN_AGE}",
            name="max_token_age_range",
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(FEDERATED_NAME_MAX_LENGTH))
    issuer: Mapped[str] = mapped_column(sa.String(ISSUER_MAX_LENGTH))
    subject: Mapped[str | None] = mapped_column(sa.String(SUBJECT_MAX_LENGTH))
    subject_pattern: Mapped[str | None] = mapped_column(sa.String(SUBJECT_MAX_LENGTH))
    claims: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    audience: Mapped[str] = mapped_column(sa.String(FEDERATED_AUDIENCE_MAX_LENGTH))
    jwks_uri: Mapped[str | None] = mapped_column(sa.String(JWKS_URI_MAX_LENGTH))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    max_token_age: Mapped[int] = mapped_column(sa.Integer, default=DEFAULT_TOKEN_AGE)
    single_use: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    client: Mapped[Client] = relationship(back_populates="federated_credentials")
