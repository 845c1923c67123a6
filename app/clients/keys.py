"""Client public keys for private_key_jwt (docs/api.md §2.3).

A client registers its own public JWK, or asks the server for an Ed25519
pair whose private half is returned once and never stored. Accepted keys:
RSA of 2048 to 8192 bits with e >= 65537 (RS256 or PS256), EC P-256 (ES256)
and Ed25519 (EdDSA). Anything with a private member is refused so a leaked
private key is never written to the database.

Services add and flush; the view commits.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import OKPAlgorithm
from sqlalchemy.exc import IntegrityError

from app.audit import events as audit
from app.clients.policy import ensure_unlocked
from app.clients.records import mark_client_changed
from app.errors import Conflict, NotFound, ValidationError
from app.extensions import db
from app.models import Client, ClientKey
from app.protocol import ALGS_BY_KTY
from app.signing.keys import jwk_thumbprint
from app.timeutil import utcnow

MAX_ACTIVE_KEYS = 5
MIN_RSA_BITS = 2048
# Verification cost grows with the modulus; refuse keys that only cost CPU.
MAX_RSA_BITS = 8192
MIN_RSA_EXPONENT = 65537
MIN_EXPIRES_IN = 60
MAX_EXPIRES_IN = 10 * 365 * 86400
# RFC 7517 §6.2.2, §6.3.2 and §6.4: members that only private keys carry.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# A kid travels in URLs (DELETE .../keys/{kid}) and JWS headers: keep it plain.
KID_RE = re.compile(r"^[A-Za-z0-9._~:+=-]{1,64}$")


@dataclass(frozen=True)
class GeneratedKey:
    """The private half of a server-generated key, returned once."""

    private_jwk: dict[str, Any]
    private_key_pem: str


def _error(field: str, message: str) -> ValidationError:
    return ValidationError([{"field": field, "message": message}])


def _b64_bytes(jwk: dict[str, Any], member: str) -> bytes:
    """Strict base64url (RFC 7515 §2: no padding) of one JWK member."""
    value = jwk.get(member)
    field = f"public_jwk.{member}"
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise _error(field, "must be a base64url string")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise _error(field, "must be base64url without padding")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _error(field, "must be base64url without padding") from exc


def _check_rsa(jwk: dict[str, Any]) -> dict[str, Any]:
    n_bytes = _b64_bytes(jwk, "n")
    e_bytes = _b64_bytes(jwk, "e")
    n = int.from_bytes(n_bytes, "big")
    e = int.from_bytes(e_bytes, "big")
    if n_bytes[0] == 0 or e_bytes[0] == 0:
        # RFC 7518 §6.3.1.1: the minimal octet string, no leading zeros.
        raise _error("public_jwk.n", "must not have leading zero octets")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise _error("public_jwk.n", f"RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
    if e < MIN_RSA_EXPONENT or e % 2 == 0 or e.bit_length() > 256:
        raise _error("public_jwk.e", "the RSA exponent must be odd and at least 65537")
    try:
        rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise _error("public_jwk.n", "is not a valid RSA public key") from exc
    return {"kty": "RSA", "n": jwk["n"], "e": jwk["e"]}


def _check_ec(jwk: dict[str, Any]) -> dict[str, Any]:
    if jwk.get("crv") != "P-256":
        raise _error("public_jwk.crv", "EC keys must use the P-256 curve")
    x = _b64_bytes(jwk, "x")
    y = _b64_bytes(jwk, "y")
    if len(x) != 32 or len(y) != 32:
        # RFC 7518 §6.2.1.2: the full coordinate size, 32 octets for P-256.
        raise _error("public_jwk.x", "P-256 coordinates are 32 octets each")
    try:
        # Refuses points that are not on the curve (invalid-curve attacks).
        ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
    except ValueError as exc:
        raise _error("public_jwk", "is not a point on P-256") from exc
    return {"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]}


def _check_okp(jwk: dict[str, Any]) -> dict[str, Any]:
    if jwk.get("crv") != "Ed25519":
        raise _error("public_jwk.crv", "OKP keys must use Ed25519")
    x = _b64_bytes(jwk, "x")
    if len(x) != 32:
        raise _error("public_jwk.x", "an Ed25519 public key is 32 octets")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(x)
    except ValueError as exc:
        raise _error("public_jwk.x", "is not an Ed25519 public key") from exc
    return {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]}


def validate_public_jwk(jwk: object) -> tuple[dict[str, Any], str, str]:
    """The normalized public JWK, its alg and kid.

    Only the public key members are kept (plus kid, alg, use); x5u, x5c and
    the like are dropped, never fetched.

    :raises ValidationError: not a supported public signing key.
    """
    if not isinstance(jwk, dict):
        raise _error("public_jwk", "must be a JSON object (a JWK)")
    private = sorted(PRIVATE_MEMBERS & set(jwk))
    if private:
        raise _error(
            "public_jwk",
            "must be a public key; private members are refused: " + ", ".join(private),
        )
    kty = jwk.get("kty")
    if kty not in ALGS_BY_KTY:
        raise _error("public_jwk.kty", "must be RSA, EC (P-256) or OKP (Ed25519)")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise _error("public_jwk.use", 'must be "sig" when present')
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise _error("public_jwk.key_ops", 'must include "verify" when present')
    alg = jwk.get("alg", ALGS_BY_KTY[kty][0])
    if alg not in ALGS_BY_KTY[kty]:
        allowed = " or ".join(ALGS_BY_KTY[kty])
        raise _error("public_jwk.alg", f"must be {allowed} for a {kty} key")
    checks = {"RSA": _check_rsa, "EC": _check_ec, "OKP": _check_okp}
    public = checks[kty](jwk)
    kid = jwk.get("kid")
    if kid is None:
        kid = jwk_thumbprint(public)
    elif not isinstance(kid, str) or not KID_RE.fullmatch(kid):
        raise _error("public_jwk.kid", "must be 1 to 64 characters of A-Z a-z 0-9 . _ ~ : + = -")
    public.update({"kid": kid, "alg": alg, "use": "sig"})
    return public, alg, kid


def generate_key_pair() -> tuple[dict[str, Any], GeneratedKey]:
    """A fresh Ed25519 pair: the public JWK to store and the private half to return."""
    private_key = ed25519.Ed25519PrivateKey.generate()
    private_jwk = OKPAlgorithm.to_jwk(private_key, as_dict=True)
    public = {"kty": "OKP", "crv": "Ed25519", "x": private_jwk["x"]}
    kid = jwk_thumbprint(public)
    public.update({"kid": kid, "alg": "EdDSA", "use": "sig"})
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    private = {**private_jwk, "kid": kid, "alg": "EdDSA", "use": "sig"}
    return public, GeneratedKey(private_jwk=private, private_key_pem=pem)


def _audit_target(client: Client, kid: str) -> str:
    return f"{client.id}/{kid}"


def active_key_count(client_id: str, now: datetime) -> int:
    return db.session.execute(
        sa.select(sa.func.count())
        .select_from(ClientKey)
        .where(
            ClientKey.client_id == client_id,
            sa.or_(ClientKey.expires_at.is_(None), ClientKey.expires_at > now),
        )
    ).scalar_one()


def add_key(
    client: Client,
    public_jwk: object | None,
    actor: str,
    *,
    expires_in: int | None = None,
) -> tuple[ClientKey, GeneratedKey | None]:
    """Register a public key, or generate an Ed25519 pair when public_jwk is None.

    The caller must hold the client row lock (get_client(..., for_update=True))
    so two concurrent requests cannot both add a fifth key.

    :raises ValidationError: the JWK is not an acceptable public key.
    :raises Conflict: client_locked, too_many_keys, or kid_taken / key_exists.
    """
    ensure_unlocked(client)
    generated: GeneratedKey | None = None
    if public_jwk is None:
        public, generated = generate_key_pair()
        alg, kid = "EdDSA", public["kid"]
    else:
        public, alg, kid = validate_public_jwk(public_jwk)
    now = utcnow()
    if active_key_count(client.id, now) >= MAX_ACTIVE_KEYS:
        raise Conflict(
            f"A client may have at most {MAX_ACTIVE_KEYS} active keys.", code="too_many_keys"
        )
    thumbprint = jwk_thumbprint(public)
    existing = db.session.execute(
        sa.select(ClientKey.kid, ClientKey.public_jwk).where(ClientKey.client_id == client.id)
    ).all()
    for row in existing:
        if row.kid == kid:
            raise Conflict(f"The client already has a key with kid {kid!r}.", code="kid_taken")
        if jwk_thumbprint(row.public_jwk) == thumbprint:
            raise Conflict("The client already has this public key.", code="key_exists")
    key = ClientKey(
        client_id=client.id,
        kid=kid,
        alg=alg,
        public_jwk=public,
        created_at=now,
        expires_at=now + timedelta(seconds=expires_in) if expires_in else None,
    )
    try:
        with db.session.begin_nested():
            db.session.add(key)
            db.session.flush()
    except IntegrityError as exc:
        raise Conflict(f"The client already has a key with kid {kid!r}.", code="kid_taken") from exc
    mark_client_changed(client.id)
    audit.record(actor, "key.created", _audit_target(client, kid), client.account_id)
    return key, generated


def list_keys(client: Client) -> list[ClientKey]:
    """Every key of the client, expired ones included, oldest first."""
    return list(
        db.session.scalars(
            sa.select(ClientKey)
            .where(ClientKey.client_id == client.id)
            .order_by(ClientKey.created_at, ClientKey.id)
        )
    )


def delete_key(client: Client, kid: str, actor: str) -> None:
    """Delete a key; assertions signed with it fail from the commit on.

    :raises Conflict: client_locked.
    :raises NotFound: key_not_found.
    """
    ensure_unlocked(client)
    key = db.session.scalar(
        sa.select(ClientKey).where(ClientKey.client_id == client.id, ClientKey.kid == kid)
    )
    if key is None:
        raise NotFound("No such key.", code="key_not_found")
    db.session.delete(key)
    db.session.flush()
    mark_client_changed(client.id)
    audit.record(actor, "key.deleted", _audit_target(client, kid), client.account_id)
