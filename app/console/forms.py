"""HTML form fields to and from the API's JSON shapes, so one set of rules validates both."""

from __future__ import annotations

from typing import Any

from werkzeug.datastructures import MultiDict

from app.models import Client

#: Choices offered for a new secret's lifetime (seconds; 0 = never expires).
SECRET_LIFETIMES = [
    (0, "Never"),
    (86400, "1 day"),
    (7 * 86400, "7 days"),
    (30 * 86400, "30 days"),
    (90 * 86400, "90 days"),
    (365 * 86400, "1 year"),
]
#: Choices for how long the old secrets keep working after a rotation. The
#: first, no grace, is the form's default, as in the API and the CLI: a
#: rotation is often the answer to a leak.
GRACE_PERIODS = [
    (0, "None: old secrets stop at once"),
    (300, "5 minutes"),
    (3600, "1 hour"),
    (86400, "1 day"),
    (7 * 86400, "7 days"),
]


def _words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def _optional(text: str | None) -> str | None:
    text = (text or "").strip()
    return text or None


def client_body(form: MultiDict, *, creating: bool, may_set_account: bool) -> dict[str, Any]:
    """The API body for the client form: the same validator then judges it."""
    body: dict[str, Any] = {
        "name": (form.get("name") or "").strip(),
        "friendly_name": (form.get("friendly_name") or "").strip() or None,
        "description": _optional(form.get("description")),
        "owner": _optional(form.get("owner")),
        "tags": [t.strip() for t in (form.get("tags") or "").split(",") if t.strip()],
        "scopes": _words(form.get("scopes") or ""),
        "audiences": _lines(form.get("audiences") or ""),
        "client_type": form.get("client_type") or "standard",
        # None ticked: null, any method the client has credentials for.
        "allowed_auth_methods": form.getlist("allowed_auth_methods") or None,
    }
    if body["friendly_name"] is None:
        if creating:
            del body["friendly_name"]
        else:
            body["friendly_name"] = body["name"]
    ttl = (form.get("access_token_ttl") or "").strip()
    if ttl:
        # A non-number goes through as text so the validator names the field.
        body["access_token_ttl"] = int(ttl) if ttl.isdigit() and len(ttl) < 10 else ttl
    if creating and may_set_account and (form.get("account_id") or "").strip():
        body["account_id"] = form["account_id"].strip()
    if creating and form.get("no_secret"):
        body["create_secret"] = False
    return body


def client_form(client: Client | None) -> dict[str, str]:
    """Form field values showing a client (empty for a new one)."""
    if client is None:
        return {"client_type": "standard", "access_token_ttl": "3600"}
    return {
        "name": client.name,
        "friendly_name": client.friendly_name or "",
        "description": client.description or "",
        "owner": client.owner or "",
        "tags": ", ".join(client.tags or []),
        "scopes": " ".join(client.scopes or []),
        "audiences": "\n".join(client.audiences or []),
        "client_type": client.client_type,
        "access_token_ttl": str(client.access_token_ttl),
        "allowed_auth_methods": " ".join(client.allowed_auth_methods or []),
    }


def choice(form: MultiDict, field: str, choices: list[tuple[int, str]]) -> int | None:
    """The chosen number, or None when it is not one of the offered choices."""
    raw = form.get(field, "")
    for number, _label in choices:
        if raw == str(number):
            return number
    return None
