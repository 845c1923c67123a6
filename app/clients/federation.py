"""Federated credentials: add, list and delete (docs/api.md §1.3 and §2.8).

A federated credential lets a client authenticate with a JWT another issuer
gave its workload. The rules a credential must obey live here, whichever
face writes it; the checks of an assertion against a credential live in
app.federation.verify.

Services add and flush; the view commits.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.audit import events as audit
from app.clients.keys import PRIVATE_MEMBERS
from app.clients.policy import ensure_unlocked
from app.clients.records import (
    FEDERATED_COLUMNS,
    FederatedRecord,
    federated_record,
    mark_client_changed,
)
from app.clients.subject_pattern import has_literal
from app.errors import Conflict, NotFound, ValidationError
from app.extensions import db
from app.models import Client, FederatedCredential
from app.models.federated_credential import DEFAULT_TOKEN_AGE
from app.protocol import EC_CURVE_OF_ALG, FEDERATION_SIGNING_ALGS
from app.timeutil import utcnow

MAX_CREDENTIALS = 50
MAX_JWKS_KEYS = 32
MAX_CLAIMS = 20
MAX_CLAIM_VALUES = 100
CLAIM_VALUE_MAX_LENGTH = 1024
CLAIM_NAME_MAX_LENGTH = 256
MIN_RSA_BITS = 2048
# Verification cost grows with the modulus; refuse keys that only cost CPU.
MAX_RSA_BITS = 8192
#: Claims the verification checks itself: a `claims` entry for one would be
#: either redundant or a rule that never holds (RFC 7519 §4.1).
CHECKED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})
#: JWK members kept from an inline key (RFC 7517 §4, RFC 7518 §6): the public key and its labels.
PUBLIC_MEMBERS = frozenset({"kty", "kid", "alg", "use", "key_ops", "n", "e", "crv", "x", "y"})
#: Every pattern character is printable; spaces and controls never appear in a `sub`.
_PATTERN_CHARS = re.compile(r"^[\x21-\x7e\u00a0-\U0010ffff]+$")
_CURVES_OF_OKP = frozenset({"Ed25519", "Ed448"})


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def allow_insecure() -> bool:
    """FEDERATION_ALLOW_INSECURE: plain http issuers and key URLs, for tests and labs."""
    return bool(current_app.config.get("FEDERATION_ALLOW_INSECURE"))


def url_errors(value: str, field: str) -> list[dict[str, str]]:
    """An issuer or key URL: https (http only when insecure is allowed), a host, no credentials.

    RFC 8414 §2 (and OpenID Connect Discovery §4) issuers have no query or
    fragment; a key URL has no fragment.
    """
    schemes = ("https", "http") if allow_insecure() else ("https",)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return [_error(field, "must be a URL")]
    if parts.scheme not in schemes:
        need = "an https URL" if len(schemes) == 1 else "an http or https URL"
        return [_error(field, f"must be {need}")]
    if not parts.hostname:
        return [_error(field, "must name a host")]
    if parts.username is not None or parts.password is not None:
        return [_error(field, "must not hold a user name or password")]
    if parts.fragment or value.endswith("#"):
        return [_error(field, "must not have a fragment")]
    if field == "issuer" and (parts.query or "?" in value):
        return [_error(field, "must not have a query")]
    return []


def key_fits_alg(jwk: dict[str, Any], alg: str) -> bool:
    """Whether a JWK may verify a JWS of this algorithm (RFC 7518 §3, RFC 8037 §3.1)."""
    if alg not in FEDERATION_SIGNING_ALGS:
        return False
    kty = jwk.get("kty")
    if jwk.get("alg") not in (None, alg):
        return False
    if kty == "RSA":
        return alg[:2] in ("RS", "PS")
    if kty == "EC":
        return EC_CURVE_OF_ALG.get(alg) == jwk.get("crv")
    if kty == "OKP":
        return alg == "EdDSA" and jwk.get("crv") in _CURVES_OF_OKP
    return False


def _key_errors(key: object, field: str) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    if not isinstance(key, dict):
        return None, [_error(field, "must be a JSON object (a JWK)")]
    private = sorted(PRIVATE_MEMBERS & set(key))
    if private:
        return None, [
            _error(
                field, "must be a public key; private members are refused: " + ", ".join(private)
            )
        ]
    kty = key.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        return None, [_error(f"{field}.kty", "must be RSA, EC or OKP")]
    alg = key.get("alg")
    if alg is not None and (not isinstance(alg, str) or not key_fits_alg(key, alg)):
        allowed = ", ".join(FEDERATION_SIGNING_ALGS)
        return None, [_error(f"{field}.alg", f"must fit the key and be one of {allowed}")]
    use = key.get("use")
    if use is not None and use != "sig":
        return None, [_error(f"{field}.use", 'must be "sig" when present')]
    kid = key.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= 256):
        return None, [_error(f"{field}.kid", "must be a string of 1 to 256 characters")]
    if kty == "EC" and key.get("crv") not in EC_CURVE_OF_ALG.values():
        return None, [_error(f"{field}.crv", "must be P-256, P-384 or P-521")]
    if kty == "OKP" and key.get("crv") not in _CURVES_OF_OKP:
        return None, [_error(f"{field}.crv", "must be Ed25519 or Ed448")]
    public = {k: v for k, v in key.items() if k in PUBLIC_MEMBERS}
    try:
        # Refuses malformed members and EC points off their curve.
        parsed = jwt.PyJWK(public).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        return None, [_error(field, f"is not a valid public key ({type(exc).__name__})")]
    if isinstance(parsed, rsa.RSAPublicKey) and not MIN_RSA_BITS <= parsed.key_size <= MAX_RSA_BITS:
        return None, [_error(field, f"RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")]
    return public, []


def jwks_errors(value: object) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """An inline JWK Set (RFC 7517 §5) of public signing keys, reduced to their public members."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        return None, [_error("jwks", 'must be a JWK Set: {"keys": [...]}')]
    keys = value["keys"]
    if not 0 < len(keys) <= MAX_JWKS_KEYS:
        return None, [_error("jwks.keys", f"must hold 1 to {MAX_JWKS_KEYS} keys")]
    kept, errors = [], []
    for index, key in enumerate(keys):
        public, found = _key_errors(key, f"jwks.keys[{index}]")
        errors += found
        if public is not None:
            kept.append(public)
    return ({"keys": kept} if not errors else None), errors


def claims_errors(value: object) -> list[dict[str, str]]:
    """claim name -> a required string, or a non-empty list of allowed strings."""
    if not isinstance(value, dict):
        return [_error("claims", "must be a JSON object")]
    if len(value) > MAX_CLAIMS:
        return [_error("claims", f"must hold at most {MAX_CLAIMS} claims")]
    errors = []
    for name, wanted in value.items():
        field = f"claims.{name}"
        if not 0 < len(name) <= CLAIM_NAME_MAX_LENGTH:
            errors.append(
                _error("claims", f"names must be 1 to {CLAIM_NAME_MAX_LENGTH} characters")
            )
        elif name in CHECKED_CLAIMS:
            errors.append(_error(field, "is checked by its own field; it cannot be a claims rule"))
        elif isinstance(wanted, str):
            if len(wanted) > CLAIM_VALUE_MAX_LENGTH:
                errors.append(_error(field, f"must be at most {CLAIM_VALUE_MAX_LENGTH} characters"))
        elif isinstance(wanted, list):
            if not 0 < len(wanted) <= MAX_CLAIM_VALUES:
                errors.append(_error(field, f"must list 1 to {MAX_CLAIM_VALUES} strings"))
            elif not all(isinstance(v, str) and len(v) <= CLAIM_VALUE_MAX_LENGTH for v in wanted):
                errors.append(_error(field, "must list strings only"))
            elif len(set(wanted)) != len(wanted):
                errors.append(_error(field, "must not repeat a value"))
        else:
            errors.append(_error(field, "must be a string or a list of strings"))
    return errors


def credential_values(fields: dict[str, Any]) -> dict[str, Any]:
    """The column values of a new credential, its defaults filled in.

    The API's schema has checked the types and lengths; these are the rules
    that need more than a type: the URLs, the subject rule, the keys.

    :raise ValidationError: 400 naming every field that breaks a rule.
    """
    values: dict[str, Any] = {
        "claims": {},
        "audience": current_app.config["ISSUER"],
        "jwks_uri": None,
        "jwks": None,
        "max_token_age": DEFAULT_TOKEN_AGE,
        "single_use": False,
        "subject": None,
        "subject_pattern": None,
        **{k: v for k, v in fields.items() if v is not None},
    }
    errors = url_errors(values["issuer"], "issuer")
    if (values["subject"] is None) == (values["subject_pattern"] is None):
        errors.append(_error("subject", "give exactly one of subject and subject_pattern"))
    pattern = values["subject_pattern"]
    if pattern is not None:
        if not _PATTERN_CHARS.fullmatch(pattern):
            errors.append(_error("subject_pattern", "must not hold spaces or control characters"))
        elif not has_literal(pattern):
            errors.append(
                _error(
                    "subject_pattern",
                    "must hold at least one character besides * and ?: a pattern of wildcards "
                    "alone would accept every subject the issuer signs",
                )
            )
    if values["jwks_uri"] is not None:
        if values["jwks"] is not None:
            errors.append(_error("jwks", "give jwks_uri or jwks, not both"))
        errors += url_errors(values["jwks_uri"], "jwks_uri")
    if values["jwks"] is not None:
        values["jwks"], found = jwks_errors(values["jwks"])
        errors += found
    errors += claims_errors(values["claims"])
    if errors:
        raise ValidationError(errors)
    return values


def credential_count(client_id: str) -> int:
    return db.session.execute(
        sa.select(sa.func.count())
        .select_from(FederatedCredential)
        .where(FederatedCredential.client_id == client_id)
    ).scalar_one()


def _audit_target(client: Client, credential_id: str) -> str:
    return f"{client.id}/{credential_id}"


def add_credential(client: Client, fields: dict[str, Any], actor: str) -> FederatedCredential:
    """Add a federated credential to the client.

    The caller must hold the client row lock (get_client(..., for_update=True))
    and have checked the privilege rule, so two concurrent requests cannot both
    add the fifty-first.

    :raise ValidationError: a rule of `credential_values` is broken.
    :raise Conflict: client_locked, too_many_credentials, or name_taken.
    """
    ensure_unlocked(client)
    values = credential_values(fields)
    if credential_count(client.id) >= MAX_CREDENTIALS:
        raise Conflict(
            f"A client may have at most {MAX_CREDENTIALS} federated credentials.",
            code="too_many_credentials",
        )
    credential = FederatedCredential(client_id=client.id, created_at=utcnow(), **values)
    try:
        with db.session.begin_nested():
            db.session.add(credential)
            db.session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"The client already has a federated credential named {values['name']!r}.",
            code="name_taken",
        ) from exc
    mark_client_changed(client.id)
    audit.record(
        actor,
        "federated_credential.created",
        _audit_target(client, credential.id),
        client.account_id,
    )
    return credential


def list_credentials(client: Client) -> list[FederatedCredential]:
    """Every federated credential of the client, oldest first."""
    return list(
        db.session.scalars(
            sa.select(FederatedCredential)
            .where(FederatedCredential.client_id == client.id)
            .order_by(FederatedCredential.created_at, FederatedCredential.id)
        )
    )


def credential_records(client: Client) -> tuple[FederatedRecord, ...]:
    """The client's credentials as the token endpoint sees them, read now (for the dry run)."""
    return tuple(
        federated_record(*(getattr(row, column.key) for column in FEDERATED_COLUMNS))
        for row in list_credentials(client)
    )


def delete_credential(client: Client, credential_id: str, actor: str) -> None:
    """Delete a credential; assertions it accepted fail from the commit on.

    :raise Conflict: client_locked.
    :raise NotFound: federated_credential_not_found.
    """
    ensure_unlocked(client)
    if not credential_id or len(credential_id) > 64 or "\x00" in credential_id:
        # Never a stored id; PostgreSQL would refuse NUL outright.
        raise NotFound("No such federated credential.", code="federated_credential_not_found")
    credential = db.session.scalar(
        sa.select(FederatedCredential).where(
            FederatedCredential.client_id == client.id, FederatedCredential.id == credential_id
        )
    )
    if credential is None:
        raise NotFound("No such federated credential.", code="federated_credential_not_found")
    db.session.delete(credential)
    db.session.flush()
    mark_client_changed(client.id)
    audit.record(
        actor,
        "federated_credential.deleted",
        _audit_target(client, credential_id),
        client.account_id,
    )
