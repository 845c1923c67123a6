"""API clients (docs/api.md §2.1)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Model
from app.models.types import JSONType, UTCDateTime
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.models.client_key import ClientKey
    from app.models.federated_credential import FederatedCredential
    from app.models.secret import ClientSecret

ClientType = Literal["standard", "admin"]
CLIENT_TYPES: tuple[str, ...] = get_args(ClientType)

# Limits of a client's fields: the columns hold them and the API schemas
# (app/api/schemas.py) refuse anything past them with a 400.
ACCOUNT_ID_MAX_LENGTH = 64
NAME_MAX_LENGTH = 63
FRIENDLY_NAME_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 2000
OWNER_MAX_LENGTH = 254
MAX_TAGS, TAG_MAX_LENGTH = 20, 64
MAX_SCOPES, SCOPE_MAX_LENGTH = 100, 128
MAX_AUDIENCES, AUDIENCE_MAX_LENGTH = 20, 1024
MIN_TTL, MAX_TTL = 60, 86400
# docs/api.md §1.2: a certificate's subject DN or exactly one SAN.
TLS_CLIENT_AUTH_FIELDS = (
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
)
SUBJECT_DN_MAX_LENGTH, SAN_MAX_LENGTH = 1024, 1024
SecurityProfile = Literal["fapi2"]
SECURITY_PROFILES: tuple[str, ...] = get_args(SecurityProfile)


class Client(Model):
    __tablename__ = "clients"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "name", name="uq_clients_account_id_name"),
        sa.CheckConstraint(
            "client_type IN (" + ", ".join(f"'{t}'" for t in CLIENT_TYPES) + ")", name="client_type"
        ),
        sa.CheckConstraint(
            f"access_token_ttl BETWEEN {MIN_TTL} AND {MAX_TTL}", name="access_token_ttl"
        ),
        sa.CheckConstraint(
            " + ".join(f"(CASE WHEN {f} IS NULL THEN 0 ELSE 1 END)" for f in TLS_CLIENT_AUTH_FIELDS)
            + " <= 1",
            name="one_tls_client_auth_field",
        ),
        sa.CheckConstraint(
            "security_profile IS NULL OR security_profile IN ("
            + ", ".join(f"'{p}'" for p in SECURITY_PROFILES)
            + ")",
            name="security_profile",
        ),
        # Keyset pagination walks (created_at, id), optionally within an account.
        sa.Index("ix_clients_created_at_id", "created_at", "id"),
        sa.Index("ix_clients_account_id_created_at_id", "account_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.String(ACCOUNT_ID_MAX_LENGTH))
    name: Mapped[str] = mapped_column(sa.String(NAME_MAX_LENGTH))
    friendly_name: Mapped[str] = mapped_column(sa.String(FRIENDLY_NAME_MAX_LENGTH))
    description: Mapped[str | None] = mapped_column(sa.String(DESCRIPTION_MAX_LENGTH))
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    client_type: Mapped[str] = mapped_column(sa.String(16), default="standard")
    owner: Mapped[str | None] = mapped_column(sa.String(OWNER_MAX_LENGTH))
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    audiences: Mapped[list[str]] = mapped_column(JSONType, default=list)
    access_token_ttl: Mapped[int] = mapped_column(sa.Integer, default=3600)
    locked: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # None: any method the client has credentials for; else only these
    # (names from app.protocol.AUTH_METHODS).
    allowed_auth_methods: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    # Sender-constrained tokens (docs/api.md §1.1, §1.2) and the certificate
    # a tls_client_auth client presents (one of the five, or none).
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    tls_client_certificate_bound_access_tokens: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    tls_client_auth_subject_dn: Mapped[str | None] = mapped_column(sa.String(SUBJECT_DN_MAX_LENGTH))
    tls_client_auth_san_dns: Mapped[str | None] = mapped_column(sa.String(SAN_MAX_LENGTH))
    tls_client_auth_san_uri: Mapped[str | None] = mapped_column(sa.String(SAN_MAX_LENGTH))
    tls_client_auth_san_ip: Mapped[str | None] = mapped_column(sa.String(SAN_MAX_LENGTH))
    tls_client_auth_san_email: Mapped[str | None] = mapped_column(sa.String(SAN_MAX_LENGTH))
    # None, or "fapi2": the FAPI 2.0 Security Profile's rules (docs/api.md §2.1).
    security_profile: Mapped[str | None] = mapped_column(sa.String(16))
    # Tokens issued before this instant are inactive (revoke-tokens, and
    # disabling); None: no cut-off. Also held by the shared deny store so that
    # every instance sees it at once (app/state/jti.py).
    tokens_valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
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
    federated_credentials: Mapped[list[FederatedCredential]] = relationship(
        back_populates="client", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"<Client {self.id} {self.account_id}/{self.name}>"
