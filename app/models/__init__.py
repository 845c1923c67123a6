"""All models, imported here so Alembic's autogenerate sees every table."""

from .audit import AuditEvent
from .client import CLIENT_TYPES, Client
from .client_key import ClientKey
from .revocation import AuthFailure, RevokedToken, UsedAssertion
from .secret import ClientSecret
from .signing_key import KEY_STATUSES, SigningKey

__all__ = [
    "CLIENT_TYPES",
    "KEY_STATUSES",
    "AuditEvent",
    "AuthFailure",
    "Client",
    "ClientKey",
    "ClientSecret",
    "RevokedToken",
    "SigningKey",
    "UsedAssertion",
]
