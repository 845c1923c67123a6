"""All models, imported here so Alembic's autogenerate sees every table."""

from app.models.audit import AuditEvent
from app.models.client import CLIENT_TYPES, Client
from app.models.client_key import ClientKey
from app.models.console_session import ConsoleSession
from app.models.federated_credential import FederatedCredential
from app.models.resource_server import ResourceServer
from app.models.secret import ClientSecret
from app.models.server_setting import PEPPER_FINGERPRINT, ServerSetting
from app.models.signing_key import KEY_STATUSES, SigningKey
from app.models.state import AuthFailure, RevokedToken, UsedAssertion

__all__ = [
    "CLIENT_TYPES",
    "KEY_STATUSES",
    "PEPPER_FINGERPRINT",
    "AuditEvent",
    "AuthFailure",
    "Client",
    "ClientKey",
    "ClientSecret",
    "ConsoleSession",
    "FederatedCredential",
    "ResourceServer",
    "RevokedToken",
    "ServerSetting",
    "SigningKey",
    "UsedAssertion",
]
