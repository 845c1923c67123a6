"""Imports every resource module so its views attach to the API blueprint."""

from . import audit, clients, signing_keys  # noqa: F401
from . import openapi, secrets  # noqa: F401
from . import keys  # noqa: F401
