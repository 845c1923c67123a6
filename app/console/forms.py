"""HTML form fields to and from the API's JSON shapes, so one set of rules validates both."""

from __future__ import annotations

from typing import Any

from werkzeug.datastructures import MultiDict

from app.models import Client
from app.models.client import TLS_CLIENT_AUTH_FIELDS

#: The certificate rule of tls_client_auth, as the form's one choice of field.
CERTIFICATE_RULES = [
    ("", "None"),
    ("tls_client_auth_subject_dn", "Subject DN"),
    ("tls_client_auth_san_dns", "DNS name (SAN)"),
    ("tls_client_auth_san_uri", "URI (SAN)"),
    ("tls_client_auth_san_ip", "IP address (SAN)"),
    ("tls_client_auth_san_email", "Email (SAN)"),
]
#: The client's flags for sender-constrained tokens (docs/api.md §1.1, §1.2).
BINDING_FLAGS = [
    ("dpop_bound_access_tokens", "DPoP-bound only"),
    ("tls_client_certificate_bound_access_tokens", "Certificate-bound only"),
]

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
    for flag, _label in BINDING_FLAGS:
        body[flag] = form.get(flag) == "on"
    # One chosen rule field with its value; the others null. An unknown
    # choice goes through as the field name so the validator names it.
    rule = form.get("certificate_rule") or ""
    for field in TLS_CLIENT_AUTH_FIELDS:
        body[field] = None
    if rule:
        body[rule] = _optional(form.get("certificate_value"))
    body["security_profile"] = form.get("security_profile") or None
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
        "security_profile": client.security_profile or "",
        **{flag: "on" if getattr(client, flag) else "" for flag, _ in BINDING_FLAGS},
        **_certificate_rule(client),
    }


def _certificate_rule(client: Client) -> dict[str, str]:
    for field in TLS_CLIENT_AUTH_FIELDS:
        value = getattr(client, field)
        if value is not None:
            return {"certificate_rule": field, "certificate_value": value}
    return {"certificate_rule": "", "certificate_value": ""}


def form_values(form: MultiDict) -> dict[str, str]:
    """A posted form as `client_form` shows one: ticked boxes of one name joined by spaces."""
    values = form.to_dict()
    values["allowed_auth_methods"] = " ".join(form.getlist("allowed_auth_methods"))
    return values


def token_binding(client: Client) -> str:
    """How the client's tokens are bound, in words, for its page."""
    if client.security_profile == "fapi2":
        base = "FAPI 2.0: every token must be DPoP-bound or certificate-bound"
    elif client.dpop_bound_access_tokens and client.tls_client_certificate_bound_access_tokens:
        base = "Every token must be DPoP-bound and the client must present its certificate"
    elif client.dpop_bound_access_tokens:
        base = "Every token is DPoP-bound (a DPoP proof is required)"
    elif client.tls_client_certificate_bound_access_tokens:
        base = "Every token is bound to the client's certificate (one is required)"
    else:
        base = "Bearer tokens, bound when the request brings a DPoP proof or a client certificate"
    return base + "; a resource server may require more."


def choice(form: MultiDict, field: str, choices: list[tuple[int, str]]) -> int | None:
    """The chosen number, or None when it is not one of the offered choices."""
    raw = form.get(field, "")
    for number, _label in choices:
        if raw == str(number):
            return number
    return None
