"""Validation of management API input; the one place deciding which fields leave the server."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ACCOUNT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def validate_name(value: object, field: str = "name") -> list[dict[str, str]]:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        return [{"field": field, "message": "must match ^[a-z0-9][a-z0-9_-]{0,62}$"}]
    return []


def validate_account_id(value: object, field: str = "account_id") -> list[dict[str, str]]:
    if not isinstance(value, str) or not ACCOUNT_RE.fullmatch(value):
        return [{"field": field, "message": "must match ^[a-z0-9][a-z0-9_-]{0,63}$"}]
    return []
