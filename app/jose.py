"""Compact JWS (RFC 7515 §7.1) read and checked with PyJWT's algorithm objects, not `jwt.decode`.

Client assertions (RFC 7523) and federated assertions (docs/api.md §1.3) are
read three times per token request: to name the failure counter, to route
the request, to verify it. PyJWT 2.15's decode checks each character of
each segment against the base64url alphabet in a Python loop and parses the
JWK again on every call: in process, 1,500 private_key_jwt tokens spent
more CPU in `jwt.decode` (two decodes each) than in anything else but the
request dispatch (docs/performance.md). Here one compiled expression checks
the alphabet of the whole token, a token is parsed once however often it is
read (a small cache keyed by the token), and a key object is built once per
JWK. The signature itself is PyJWT's algorithm object's `verify`, as for DPoP
proofs (app.oauth.rfc9449) and as token signing uses `sign` (app.oauth.rfc9068).

Nothing here decides what is acceptable beyond the JWS's shape and the
registered claims' times and audience (`registered_claims_ok`): each caller
applies its own rules on top.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from jwt.algorithms import Algorithm, get_default_algorithms

# Three base64url segments; the signature may be empty so that an unsigned
# token ("alg": "none") is read and then refused by whoever checks its alg.
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")
#: The signature algorithms a JWS may be verified with: asymmetric only.
ALGORITHMS: dict[str, Algorithm] = {
    name: algorithm
    for name, algorithm in get_default_algorithms().items()
    if name != "none" and not name.startswith("HS")
}
KEY_CACHE_SIZE = 1024
#: The largest assertion any of our endpoints reads (docs/api.md §1).
MAX_TOKEN_LENGTH = 16 * 1024


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """An unverified compact JWS: its header, claims, signing input and signature."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _b64(segment: str) -> bytes:
    # The alphabet is already checked; a length of 4n + 1 is no base64 at all.
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@lru_cache(maxsize=256)
def _parse(token: str) -> CompactJWS | None:
    match = _COMPACT.fullmatch(token)
    if match is None:
        return None
    header_b64, claims_b64, signature_b64 = match.groups()
    try:
        # orjson: a fraction of json's cost, and stricter: NaN and Infinity,
        # which RFC 8259 does not allow, stop here. An integer past 64 bits
        # reads as a float, as large, so time checks answer as before.
        header = orjson.loads(_b64(header_b64))
        claims = orjson.loads(_b64(claims_b64))
        signature = _b64(signature_b64)
    except (binascii.Error, ValueError, RecursionError):
        # ValueError covers bad UTF-8 and bad JSON alike.
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return CompactJWS(header, claims, f"{header_b64}.{claims_b64}".encode("ascii"), signature)


def parse(token: object, max_length: int) -> CompactJWS | None:
    """The token's parts, unverified; None unless a well-formed compact JWS of at most `max_length`.

    Each call gets its own header and claims dicts: the parse is shared
    between the reads of one request, the dicts are not.
    """
    if not isinstance(token, str) or len(token) > max_length:
        return None
    parsed = _parse(token)
    if parsed is None:
        return None
    return CompactJWS(
        dict(parsed.header), dict(parsed.claims), parsed.signing_input, parsed.signature
    )


# ECDSA's JWS signature is R || S (RFC 7518 §3.4) where cryptography speaks DER.
# PyJWT converts through hex strings; the integer calls here cost a fraction
# of that: 4 % of a basic token request and 2 % of a DPoP one in process
# (docs/performance.md). Same checks as PyJWT's ECAlgorithm otherwise.
_ECDSA = {
    "ES256": ec.ECDSA(hashes.SHA256()),
    "ES384": ec.ECDSA(hashes.SHA384()),
    "ES512": ec.ECDSA(hashes.SHA512()),
}


def sign(alg: str, signing_input: bytes, private_key: Any) -> bytes:
    """The JWS signature of `signing_input` with `alg`."""
    ecdsa = _ECDSA.get(alg)
    if ecdsa is None or not isinstance(private_key, ec.EllipticCurvePrivateKey):
        return ALGORITHMS[alg].sign(signing_input, private_key)
    r, s = decode_dss_signature(private_key.sign(signing_input, ecdsa))
    size = (private_key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def verify(jws: CompactJWS, alg: str, key: Any) -> bool:
    """Whether `key` (a cryptography public key) made the signature with `alg`."""
    ecdsa = _ECDSA.get(alg)
    if ecdsa is not None and isinstance(key, ec.EllipticCurvePublicKey):
        signature = jws.signature
        size = (key.curve.key_size + 7) // 8
        if len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        try:
            key.verify(encode_dss_signature(r, s), jws.signing_input, ecdsa)
        except InvalidSignature:
            return False
        return True
    algorithm = ALGORITHMS.get(alg)
    if algorithm is None:
        return False
    try:
        return bool(algorithm.verify(jws.signing_input, key, jws.signature))
    except (ValueError, TypeError, AttributeError):
        return False  # a key of another type, or a signature of the wrong size


class _KeyCache:
    """Public key objects by JWK, parsed once: a client or issuer sends the same keys each time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: OrderedDict[tuple[str, bytes], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, jwk: dict[str, Any], alg: str) -> Any:
        name = (alg, orjson.dumps(jwk, option=orjson.OPT_SORT_KEYS))
        with self._lock:
            key = self._keys.get(name)
            if key is not None:
                self._keys.move_to_end(name)
                return key
        algorithm = ALGORITHMS.get(alg)
        if algorithm is None:
            raise ValueError(f"unsupported algorithm {alg!r}")
        key = algorithm.from_jwk(jwk)
        with self._lock:
            self._keys[name] = key
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)
        return key


_key_cache = _KeyCache(KEY_CACHE_SIZE)


def public_key(jwk: dict[str, Any], alg: str) -> Any:
    """The cryptography key of a public JWK, for `alg`'s algorithm.

    :raise ValueError, TypeError, KeyError, jwt.PyJWTError: not a usable key.
    """
    return _key_cache.get(jwk, alg)


def _numeric_date(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def registered_claims_ok(
    claims: dict[str, Any],
    *,
    audiences: Collection[str],
    now: float,
    leeway: float,
    required: Collection[str] = (),
) -> bool:
    """RFC 7519 §4.1.3-4.1.6 as PyJWT's decode checks them, stricter about types.

    Every `required` claim is present; `exp`, `nbf`, `iat` are numbers when
    present; `exp` lies ahead and `nbf` and `iat` not ahead (each with
    `leeway`); `aud`, a string or a list of strings, names one of
    `audiences`.
    """
    if any(name not in claims for name in required):
        return False
    times = {}
    for name in ("exp", "nbf", "iat"):
        if name in claims:
            value = _numeric_date(claims[name])
            if value is None:
                return False
            times[name] = value
    if "exp" in times and times["exp"] <= now - leeway:
        return False
    if any(times[name] > now + leeway for name in ("nbf", "iat") if name in times):
        return False
    if "aud" in claims:
        aud = claims["aud"]
        named = [aud] if isinstance(aud, str) else aud
        if not isinstance(named, list) or not all(isinstance(a, str) for a in named):
            return False
        if not any(a in audiences for a in named):
            return False
    elif audiences:
        return False
    return True
