"""The checks of a federated assertion against a client's credentials (docs/api.md §1.3).

One implementation for the token endpoint (app.oauth.rfc7523) and the dry
run (`POST .../federated-credentials/test`): `verify` runs every check of
each credential in docs/api.md §1.3's order (issuer, signature, audience,
expiry, age, subject, claims, replay) and says which one failed, so the
token endpoint can log why it answered 401 and the dry run can show it. No
reason ever reaches the client at the token endpoint.

Only asymmetric algorithms are accepted (protocol.FEDERATION_SIGNING_ALGS),
each only with a key of its own type and curve, so neither `none` nor a MAC
keyed with the issuer's public key can pass. Keys come from the
credential's inline `jwks`, else from the issuer key cache (its `jwks_uri`
or OIDC discovery, app.federation.issuer_keys); nothing in the JWS header
(jku, x5u, jwk, x5c) is ever fetched or trusted.

LEEWAY seconds allow for the issuer's clock, as RFC 7519 §4.1.4 and §4.1.5
allow "some small leeway": on `exp`, `nbf`, a future `iat` and the age.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from app import jose
from app.clients.federation import key_fits_alg
from app.clients.records import FederatedRecord
from app.federation.issuer_keys import IssuerKeysUnavailable, issuer_keys
from app.protocol import EC_CURVE_OF_ALG, FEDERATION_SIGNING_ALGS
from app.state.jti import from_timestamp

LEEWAY = 30
MAX_ASSERTION_LENGTH = 16 * 1024
MAX_SUBJECT_LENGTH = 1024
MAX_JTI_LENGTH = 255

# Why a credential did not match; `detail` adds the claim, key or algorithm.
ISSUER = "issuer"
SIGNATURE = "signature"
AUDIENCE = "audience"
EXPIRY = "expiry"
NOT_BEFORE = "not_before"
AGE = "age"
SUBJECT = "subject"
CLAIM = "claim"
JTI = "jti"
REPLAY = "replay"
#: Every reason, in the order the checks run.
CHECKS = (ISSUER, SIGNATURE, AUDIENCE, EXPIRY, NOT_BEFORE, AGE, SUBJECT, CLAIM, JTI, REPLAY)
#: Why no credential was even tried.
MALFORMED = "malformed"
NO_CREDENTIALS = "no_credentials"

#: (replay-cache key, expiry) -> whether the key was never used before.
UseOnce = Callable[[str, datetime], bool]
_CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}


@dataclass(frozen=True)
class CredentialResult:
    """One credential's outcome: `failed` is None when it matched."""

    credential: FederatedRecord
    failed: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Verification:
    """What `verify` found: the matching credential, or why each failed."""

    matched: FederatedRecord | None = None
    claims: dict[str, Any] | None = None
    results: tuple[CredentialResult, ...] = ()
    #: A reason that held before any credential was tried (MALFORMED, NO_CREDENTIALS).
    error: str | None = None
    #: Whether a single-use credential's jti was taken from the replay cache.
    jti_consumed: bool = False

    def summary(self) -> str:
        """The reasons for the server's log: credential names and checks, never token content."""
        if self.error is not None:
            return self.error
        parts = []
        for result in self.results:
            outcome = result.failed or "matched"
            if result.detail and result.failed in (CLAIM, SIGNATURE):
                outcome += f" ({result.detail})"
            parts.append(f"{result.credential.name}: {outcome}")
        return "; ".join(parts)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def parse_unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and claims, unverified; None unless a small, well-formed compact JWS."""
    parsed = jose.parse(assertion, MAX_ASSERTION_LENGTH)
    return (parsed.header, parsed.claims) if parsed is not None else None


def _fits(alg: str, key: object) -> bool:
    """Whether a parsed public key is of the type and curve `alg` signs with."""
    if isinstance(key, rsa.RSAPublicKey):
        return alg[:2] in ("RS", "PS")
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(EC_CURVE_OF_ALG.get(alg, ""))
        return curve is not None and isinstance(key.curve, curve)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return alg == "EdDSA"
    return False


def replay_key(issuer: str, jti: str) -> str:
    """The replay-cache key of a federated jti: its issuer's, apart from client assertions'.

    The issuer is hashed: it may be long, and any character may follow it.
    """
    return "fed:" + hashlib.sha256(issuer.encode()).hexdigest()[:32] + ":" + jti


class _Keys:
    """The signature check of one assertion, done once per key source however many credentials."""

    def __init__(self, assertion: str, header: dict[str, Any], algorithms: frozenset[str]):
        self.assertion = assertion
        self.alg = header.get("alg")
        kid = header.get("kid")
        self.kid = kid if isinstance(kid, str) else None
        self.kid_invalid = "kid" in header and self.kid is None
        self.algorithms = algorithms
        self._done: dict[Any, tuple[str | None, str | None]] = {}

    def check(self, credential: FederatedRecord) -> tuple[str | None, str | None]:
        """(None, None) when the signature verifies under the credential's keys, else a reason."""
        if not isinstance(self.alg, str) or self.alg not in self.algorithms:
            shown = self.alg if isinstance(self.alg, str) and len(self.alg) <= 16 else "?"
            return SIGNATURE, f"algorithm {shown} is not accepted"
        if self.kid_invalid:
            return SIGNATURE, "kid is not a string"
        if credential.jwks is not None:
            source: Any = ("inline", credential.id)
        else:
            source = ("issuer", credential.issuer, credential.jwks_uri)
        if source not in self._done:
            self._done[source] = self._verify(credential)
        return self._done[source]

    def _candidates(self, credential: FederatedRecord) -> list[Any]:
        alg = self.alg
        assert isinstance(alg, str)
        if credential.jwks is not None:
            keys = []
            for jwk in credential.jwks.get("keys", ()):
                if self.kid is not None and jwk.get("kid") not in (None, self.kid):
                    continue
                if key_fits_alg(jwk, alg):
                    keys.append(jose.public_key(jwk, alg))
            return keys
        fetched = issuer_keys().signing_keys(
            credential.issuer, jwks_uri=credential.jwks_uri, kid=self.kid
        )
        return [k.key for k in fetched if self.kid is None or k.key_id in (None, self.kid)]

    def _verify(self, credential: FederatedRecord) -> tuple[str | None, str | None]:
        alg = self.alg
        assert isinstance(alg, str)
        try:
            candidates = self._candidates(credential)
        except IssuerKeysUnavailable as exc:
            return SIGNATURE, f"issuer keys unavailable: {exc.reason}"
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            return SIGNATURE, "a key of the credential is unusable"
        candidates = [key for key in candidates if _fits(alg, key)]
        if not candidates:
            return SIGNATURE, "no key of the issuer fits the header's kid and alg"
        jws = jose.parse(self.assertion, MAX_ASSERTION_LENGTH)
        if jws is not None and any(jose.verify(jws, alg, key) for key in candidates):
            return None, None
        return SIGNATURE, "the signature does not verify"


def _audience_ok(claims: dict[str, Any], audience: str) -> bool:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and audience in aud


def _claim_ok(value: object, wanted: str | list[str]) -> bool:
    if not isinstance(value, str):
        return False
    return value == wanted if isinstance(wanted, str) else value in wanted


def _time_checks(claims: dict[str, Any], max_age: int, now: float) -> str | None:
    exp = _number(claims.get("exp"))
    if exp is None or exp <= now - LEEWAY:
        return EXPIRY
    if "nbf" in claims:
        nbf = _number(claims["nbf"])
        if nbf is None or nbf > now + LEEWAY:
            return NOT_BEFORE
    if "iat" in claims:
        iat = _number(claims["iat"])
        if iat is None or iat > now + LEEWAY or now - iat > max_age + LEEWAY:
            return AGE
    elif exp - now > max_age + LEEWAY:
        # No iat (SPIFFE JWT-SVIDs may omit it): the lifetime left stands in for the age.
        return AGE
    return None


def _subject_ok(claims: dict[str, Any], credential: FederatedRecord) -> bool:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_LENGTH:
        return False
    if credential.subject is not None:
        return sub == credential.subject
    return credential.subject_pattern is not None and credential.subject_pattern.matches(sub)


def _check(
    credential: FederatedRecord, claims: dict[str, Any], keys: _Keys, now: float
) -> tuple[str | None, str | None]:
    """Every check but the replay one, in order: (None, None) or the first that failed."""
    if claims.get("iss") != credential.issuer:
        return ISSUER, None
    failed = keys.check(credential)
    if failed[0] is not None:
        return failed
    if not _audience_ok(claims, credential.audience):
        return AUDIENCE, None
    timing = _time_checks(claims, credential.max_token_age, now)
    if timing is not None:
        return timing, None
    if not _subject_ok(claims, credential):
        return SUBJECT, None
    for name, wanted in credential.claims.items():
        if not _claim_ok(claims.get(name), wanted):
            return CLAIM, name
    if credential.single_use:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            return JTI, None
    return None, None


def verify(
    credentials: Sequence[FederatedRecord],
    assertion: str,
    *,
    now: float,
    use_once: UseOnce | None,
    algorithms: Sequence[str] = FEDERATION_SIGNING_ALGS,
    every: bool = False,
) -> Verification:
    """Which of `credentials` accepts the assertion, and why each other one does not.

    :param use_once: the replay cache for single-use credentials; None for a
        dry run, which checks that a jti is there but never consumes it.
    :param every: check every credential (the dry run), not only up to the
        first that matches (the token endpoint).
    :raise ServiceUnavailable: the replay cache cannot be reached.
    """
    parsed = parse_unverified(assertion)
    if parsed is None:
        return Verification(error=MALFORMED)
    header, claims = parsed
    if "crit" in header:
        # RFC 7515 §4.1.11: we understand no extension, so must refuse.
        return Verification(error=MALFORMED)
    if not credentials:
        return Verification(error=NO_CREDENTIALS)
    keys = _Keys(assertion, header, frozenset(algorithms) & frozenset(FEDERATION_SIGNING_ALGS))
    results: list[CredentialResult] = []
    matched: FederatedRecord | None = None
    consumed = False
    replayed = False
    for credential in credentials:
        failed, detail = _check(credential, claims, keys, now)
        if failed is None and credential.single_use and matched is None:
            if use_once is None:
                detail = "the jti was not looked up (dry run)"
            elif replayed:
                failed = REPLAY
            else:
                expires = from_timestamp(float(claims["exp"]) + LEEWAY)
                consumed = use_once(replay_key(credential.issuer, claims["jti"]), expires)
                replayed = not consumed
                failed = REPLAY if replayed else None
        results.append(CredentialResult(credential, failed, detail))
        if failed is None and matched is None:
            matched = credential
            if not every:
                break
    return Verification(
        matched=matched,
        claims=claims if matched is not None else None,
        results=tuple(results),
        jti_consumed=consumed,
    )
