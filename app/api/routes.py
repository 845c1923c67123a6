"""Imports every resource module so its views attach to the API blueprint."""

from app.api import audit, clients, keys, openapi, secrets, signing_keys  # noqa: F401
