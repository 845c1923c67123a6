"""Imports every resource module so its views attach to the API blueprint."""

from app.api import (  # noqa: F401
    audit,
    clients,
    federated_credentials,
    keys,
    openapi,
    resource_servers,
    secrets,
    signing_keys,
)
