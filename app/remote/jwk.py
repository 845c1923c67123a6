"""A client's public key for `keys add --file`: a PEM public key or certificate, or a JWK.

Only the public key ever leaves this machine: a file holding a private key
is refused rather than trimmed, so that nobody learns to hand private keys
to tools that only need the public half.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from app.remote.errors import UsageError
from app.remote.options import read_text

PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(value: int, size: int | None = None) -> str:
    length = size or max(1, (value.bit_length() + 7) // 8)
    return _b64(value.to_bytes(length, "big"))


def to_jwk(key: Any, option: str) -> dict[str, Any]:
    """RFC 7517 members of a public key (RFC 7518 §6, RFC 8037 §2).

    :raise UsageError: a key type the server does not take.
    """
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": _int(numbers.n), "e": _int(numbers.e)}
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        size = (key.curve.key_size + 7) // 8
        point = key.public_numbers()
        return {
            "kty": "EC",
            "crv": _CURVES[key.curve.name],
            "x": _int(point.x, size),
            "y": _int(point.y, size),
        }
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    raise UsageError(f"{option}: the key must be RSA, EC (P-256) or Ed25519")


def public_jwk_from_file(path: str, option: str = "--file") -> dict[str, Any]:
    """The public JWK a file holds.

    :raise UsageError: unreadable, a private key, or not a key at all.
    """
    text = read_text(path, option)
    if text.lstrip().startswith("{"):
        try:
            jwk = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{option}: {path} is not valid JSON ({exc.msg})") from exc
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
            raise UsageError(f"{option}: {path} is not a JWK (a JSON object with `kty`)")
        if any(member in jwk for member in PRIVATE_MEMBERS):
            raise UsageError(f"{option}: {path} holds a private JWK; give only its public members")
        return jwk
    if "PRIVATE KEY" in text:
        raise UsageError(
            f"{option}: {path} holds a private key; give its public half"
            " (`openssl pkey -in KEY -pubout -out key.pub.pem`)"
        )
    data = text.encode()
    try:
        if "BEGIN CERTIFICATE" in text:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise UsageError(
            f"{option}: {path} is neither a PEM public key, a PEM certificate nor a JWK"
        ) from exc
    return to_jwk(key, option)
