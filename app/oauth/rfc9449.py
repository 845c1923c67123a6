"""DPoP (RFC 9449): proof-of-possession proofs at the token endpoint and the management API.

A client proves it holds a private key by sending, with each request, a
`DPoP` header: a JWT it signed with that key, whose header carries the
public key (`jwk`) and whose claims name the request (`htm`, `htu`), the
moment (`iat`), a unique `jti` and, at a resource, the hash of the access
token (`ath`). A token issued on a valid proof is bound to the key's RFC
7638 thumbprint (`cnf.jkt`, RFC 9449 §6.1) and is then usable only with
proofs signed by that key.

The checks of RFC 9449 §4.3 are pure (`Dpop.verify`, given the clock); the
replay cache (§11.1) is the shared JtiStore, asked in the same round trip as
a client assertion's `jti` when the request carries one
(`use_once_with_proof`, called by app.oauth.rfc7523). Nonces (§8) are
stateless: an HMAC of the current time step, so every instance that shares
the pepper issues and accepts the same ones (`Nonces`).

Token endpoint flow (`bind_token_request`, the grant's one call, after the
client is authenticated and the targets are known): an invalid proof, a
replay, or no proof where the client or a target resource server has
`dpop_bound_access_tokens` is `400 invalid_dpop_proof`; a proof without a
current nonce while DPOP_NONCES=1 is `400 use_dpop_nonce`; a valid proof
binds the token, whether or not the client asked for binding (§5: the
server "MUST" bind a token to the key of a valid proof).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import OAuth2Error
from jwt.algorithms import get_default_algorithms

from app import jose
from app.clients.records import ClientRecord
from app.oauth.requests import ENDPOINT_PATHS, FormRequest, PlainResponse
from app.protocol import DPOP_SIGNING_ALGS, FAPI2, FAPI2_SIGNING_ALGS
from app.runtime import runtime
from app.signing.keys import jwk_thumbprint
from app.state.autocommit import Pending
from app.state.jti import from_timestamp

#: RFC 9449 §4.3 check 11: a proof is accepted while its `iat` is within this
#: many seconds of our clock, in either direction (clients' clocks drift both
#: ways); it is also how long its `jti` stays in the replay cache.
IAT_LEEWAY = 60
#: Nonce time step, seconds: a nonce is accepted during the step it was made
#: in and the one after (so for 60..120 s), and during the step before, so
#: instances whose clocks differ by less than a step agree.
NONCE_STEP = 60
#: Parsed public keys kept per process, by RFC 7638 thumbprint (LRU).
KEY_CACHE_SIZE = 1024
MAX_PROOF_LENGTH = 8 * 1024
MAX_JTI_LENGTH = 255
MIN_RSA_BITS = 2048
#: The nonce key is derived from the pepper with this label (HMAC-SHA-256), so
#: the pepper itself never keys anything but client-secret hashes.
NONCE_KEY_LABEL = b"ccserver dpop-nonce v1"
REPLAY_PREFIX = "dpop:"

# RFC 9449 §8.1: nonce = 1*NQCHAR; ours are base64url.
_NONCE_SYNTAX = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: JWK members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: The key type (and curve) each accepted alg needs; RFC 7638 §3.2 members per kty.
_KEY_SHAPE: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
}
_REQUIRED_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
_ALGORITHMS = get_default_algorithms()
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


class ProofError(ValueError):
    """The proof is not acceptable; the message is safe to show (no input echoed)."""


class NonceRequired(ProofError):
    """The proof is otherwise valid but carries no current server nonce (RFC 9449 §8)."""


class InvalidDpopProofError(OAuth2Error):
    """RFC 9449 §5: `invalid_dpop_proof` at the token endpoint."""

    error = "invalid_dpop_proof"
    status_code = 400


class UseDpopNonceError(OAuth2Error):
    """RFC 9449 §8: `use_dpop_nonce`; the DPoP-Nonce header is added to every token response."""

    error = "use_dpop_nonce"
    status_code = 400


# --- pure helpers ------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 `ath`: base64url SHA-256 of the ASCII access token."""
    return _b64url(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def single_header(value: str | None) -> str | None:
    """The one DPoP header value, or None when absent.

    RFC 9449 §4.3 check 1: exactly one. Servers join repeated headers with
    "," (werkzeug, gunicorn), and a compact JWS never holds a comma.

    :raise ProofError: more than one DPoP header, or an empty one.
    """
    if value is None:
        return None
    if "," in value:
        raise ProofError("More than one DPoP header.")
    value = value.strip()
    if not value:
        raise ProofError("The DPoP header is empty.")
    return value


def _normalize_percent(part: str) -> str:
    """RFC 3986 §6.2.2.1-2: upper-case escapes, decode escaped unreserved characters."""

    def fix(match: re.Match[str]) -> str:
        byte = int(match.group(1), 16)
        return chr(byte) if byte in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT.sub(fix, part)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 (§6.2.2.3)."""
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    tail = "/" if path.endswith(("/.", "/..")) else ""
    return "/" + "/".join(output) + tail


def normalize_url(url: str) -> str | None:
    """The URL as RFC 9449 §4.3 check 9 compares `htu`, or None when it is no http(s) URL.

    Query and fragment dropped; RFC 3986 §6.2.2 syntax-based normalization
    (case of scheme and host, percent-encoding, dot segments) and §6.2.3
    scheme-based normalization (default port, empty path is "/").
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    netloc = f"{userinfo}@{host}" if userinfo else host
    path = _remove_dot_segments(_normalize_percent(parts.path or "/"))
    return urlunsplit((scheme, netloc, path, "", ""))


class Nonces:
    """Stateless server nonces (RFC 9449 §8): HMAC-SHA-256 of the time step.

    The key is derived from the pepper, which every instance shares, so a
    nonce made by one instance is accepted by all without any shared state.
    """

    def __init__(self, pepper: bytes, step: int = NONCE_STEP) -> None:
        self._key = hmac.new(pepper, NONCE_KEY_LABEL, hashlib.sha256).digest()
        self.step = step

    def _for_step(self, step: int) -> str:
        mac = hmac.new(self._key, step.to_bytes(8, "big", signed=True), hashlib.sha256)
        return _b64url(mac.digest()[:18])  # 144 bits: 24 characters, no padding

    def issue(self, now: float | None = None) -> str:
        return self._for_step(int((time.time() if now is None else now) // self.step))

    def accepts(self, nonce: object, now: float | None = None) -> bool:
        if not isinstance(nonce, str) or not _NONCE_SYNTAX.fullmatch(nonce):
            return False
        current = int((time.time() if now is None else now) // self.step)
        found = False
        for step in (current - 1, current, current + 1):
            # No early exit: each check costs the same.
            found |= hmac.compare_digest(nonce, self._for_step(step))
        return found


class KeyCache:
    """Parsed public keys by RFC 7638 thumbprint, least recently used dropped first.

    A thumbprint is a SHA-256 over every member that defines the key, so one
    thumbprint names one key: a client that sends the same key again skips
    the parse (docs/performance.md has the measurement).
    """

    def __init__(self, size: int = KEY_CACHE_SIZE) -> None:
        self.size = size
        self._keys: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, thumbprint: str, jwk: dict[str, str], alg: str) -> Any:
        """The key object PyJWT verifies with; parsed on a miss.

        :raise ProofError: the JWK is not a usable public key.
        """
        with self._lock:
            key = self._keys.get(thumbprint)
            if key is not None:
                self._keys.move_to_end(thumbprint)
                return key
        key = parse_public_key(jwk, alg)
        with self._lock:
            self._keys[thumbprint] = key
            self._keys.move_to_end(thumbprint)
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)
        return key

    def __len__(self) -> int:
        return len(self._keys)


def public_jwk(header: dict, alg: str) -> dict[str, str]:
    """The proof's `jwk` reduced to the RFC 7638 members, once it is a public key of `alg`'s type.

    :raise ProofError: missing, private or symmetric, or of another type or curve.
    """
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise ProofError("The DPoP proof has no jwk header.")
    # RFC 9449 §4.2: "MUST NOT contain a private key".
    if PRIVATE_MEMBERS & jwk.keys():
        raise ProofError("The DPoP proof's jwk is not a public key.")
    kty, crv = _KEY_SHAPE[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise ProofError("The DPoP proof's jwk does not suit its alg.")
    members = {}
    for name in _REQUIRED_MEMBERS[kty]:
        value = jwk.get(name)
        if not isinstance(value, str) or not value:
            raise ProofError("The DPoP proof's jwk is incomplete.")
        members[name] = value
    return members


def parse_public_key(jwk: dict[str, str], alg: str) -> Any:
    """The cryptography public key of a JWK already checked by `public_jwk`.

    :raise ProofError: the members do not make a key, or an RSA key under MIN_RSA_BITS.
    """
    try:
        key = _ALGORITHMS[alg].from_jwk(jwk)
    except Exception as exc:  # noqa: BLE001 - PyJWT and cryptography raise many kinds
        raise ProofError("The DPoP proof's jwk is not a valid key.") from exc
    if jwk["kty"] == "RSA" and getattr(key, "key_size", 0) < MIN_RSA_BITS:
        raise ProofError("The DPoP proof's RSA key is too short.")
    return key


@dataclass(frozen=True)
class Proof:
    """A verified proof: whose key signed it, and what identifies it for the replay cache."""

    thumbprint: str
    jti: str
    iat: float
    alg: str

    def replay_entry(self) -> tuple[str, datetime]:
        """RFC 9449 §11.1: the jti, per key, until no clock would accept the proof again."""
        return (
            f"{REPLAY_PREFIX}{self.thumbprint}:{self.jti}",
            from_timestamp(self.iat + IAT_LEEWAY + 1),
        )


def _segments(proof: str) -> jose.CompactJWS:
    parsed = jose.parse(proof, MAX_PROOF_LENGTH)
    if parsed is None or not parsed.signature:
        raise ProofError("The DPoP proof is not a compact JWS.")
    return parsed


def _number(value: object) -> bool:
    # JSON as Python reads it allows NaN and Infinity, which no clock check refuses.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def verify_proof(
    proof: str,
    *,
    method: str,
    url: str,
    now: float,
    keys: KeyCache,
    algorithms: tuple[str, ...] = DPOP_SIGNING_ALGS,
    nonces: Nonces | None = None,
    access_token: str | None = None,
    before_signature: Callable[[Proof], None] | None = None,
) -> Proof:
    """RFC 9449 §4.3 checks 2-12; `url` is already normalized (`normalize_url`).

    The signature is checked after the claims, and `before_signature` is
    called with the proof just before it: the token endpoint sends the
    proof's replay-cache write there, so the store answers while the
    signature is checked (app/state/autocommit.py). Recording the jti of a
    proof whose signature then fails gives nobody anything: the entry is
    keyed by the key the proof names, and whoever holds a proof with that
    key and jti could as well have sent the proof itself.

    :raise NonceRequired: nonces are on and the proof has no current one.
    :raise ProofError: any other check fails.
    """
    jws = _segments(proof)
    header, claims = jws.header, jws.claims
    if header.get("typ") != "dpop+jwt":
        raise ProofError("The DPoP proof's typ is not dpop+jwt.")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in _KEY_SHAPE:
        raise ProofError("The DPoP proof's alg is not supported.")
    if "crit" in header:
        # RFC 7515 §4.1.11: we understand no extension, so must refuse.
        raise ProofError("The DPoP proof has a crit header.")
    jwk = public_jwk(header, alg)
    thumbprint = jwk_thumbprint(jwk)
    key = keys.get(thumbprint, jwk, alg)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise ProofError("The DPoP proof's jti is missing or too long.")
    if claims.get("htm") != method:
        raise ProofError("The DPoP proof's htm is not this request's method.")
    htu = claims.get("htu")
    if not isinstance(htu, str) or normalize_url(htu) != url:
        raise ProofError("The DPoP proof's htu is not this endpoint's URL.")
    iat = claims.get("iat")
    if not _number(iat) or abs(now - iat) > IAT_LEEWAY:  # type: ignore[operator]
        raise ProofError("The DPoP proof's iat is not within 60 seconds of the server's time.")
    if access_token is not None:
        ath = claims.get("ath")
        expected = access_token_hash(access_token)
        if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), expected.encode()):
            raise ProofError("The DPoP proof's ath does not match the access token.")
    checked = Proof(thumbprint, jti, float(iat), alg)  # type: ignore[arg-type]
    if before_signature is not None:
        before_signature(checked)
    if not jose.verify(jws, alg, key):
        raise ProofError("The DPoP proof's signature does not verify.")
    if nonces is not None and not nonces.accepts(claims.get("nonce"), now):
        raise NonceRequired("A current DPoP nonce is required.")
    return checked


# --- the server's verifier -----------------------------------------------------------


class Dpop:
    """This app's DPoP settings: its token endpoint URL, algorithms, key cache and nonces."""

    def __init__(self, issuer: str, pepper: bytes, nonces: bool) -> None:
        self.issuer = issuer
        token_url = normalize_url(issuer + ENDPOINT_PATHS["token"])
        assert token_url is not None  # ISSUER is an http(s) URL (settings)
        self.token_url = token_url
        self.algorithms = DPOP_SIGNING_ALGS
        self.keys = KeyCache()
        self.nonces = Nonces(pepper) if nonces else None

    def verify(
        self,
        value: str | None,
        method: str,
        url: str,
        access_token: str | None = None,
        before_signature: Callable[[Proof], None] | None = None,
    ) -> Proof | None:
        """The verified proof of a request's DPoP header value; None when there is none.

        :raise ProofError, NonceRequired: as `verify_proof`, or two headers.
        """
        proof = single_header(value)
        if proof is None:
            return None
        return verify_proof(
            proof,
            method=method,
            url=url,
            now=time.time(),
            keys=self.keys,
            algorithms=self.algorithms,
            nonces=self.nonces,
            access_token=access_token,
            before_signature=before_signature,
        )

    def fresh_nonce(self) -> str | None:
        return self.nonces.issue() if self.nonces is not None else None

    def challenge(self, error: str | None = None) -> str:
        """RFC 9449 §7.1 `WWW-Authenticate` challenge of the DPoP scheme."""
        algs = f'algs="{" ".join(self.algorithms)}"'
        return f'DPoP error="{error}", {algs}' if error else f"DPoP {algs}"


def dpop() -> Dpop:
    """The current app's Dpop (set by app.oauth.server.config_oauth)."""
    server = runtime().oauth
    assert server is not None
    return server.dpop


# --- the token endpoint ----------------------------------------------------------------


@dataclass
class TokenProofState:
    """What a token request's DPoP header came to, kept on the FormRequest."""

    proof: Proof | None = None
    error: OAuth2Error | None = None
    #: Whether the proof's jti went to the replay cache, and whether it was new there.
    consumed: bool = False
    fresh: bool = False
    #: The replay cache's answer for the proof, read by `settle_token_request`.
    pending: Pending[list[bool]] | None = None


def token_proof_state(request: FormRequest, record: bool = False) -> TokenProofState:
    """The token request's proof, verified once per request (never raises).

    With `record` (the client is authenticated) the proof's replay-cache
    write is sent before its signature is checked, and read by
    `settle_token_request`.
    """
    state = request.dpop
    if state is not None:
        return state
    state = TokenProofState()

    def send_replay_write(proof: Proof) -> None:
        state.pending = runtime().jti.use_once_many_later([proof.replay_entry()])
        state.consumed = True

    if request.endpoint == "token":
        verifier = dpop()
        try:
            state.proof = verifier.verify(
                request.headers.get("DPoP"),
                request.method,
                verifier.token_url,
                before_signature=send_replay_write if record else None,
            )
        except NonceRequired as exc:
            state.error = UseDpopNonceError(str(exc))
        except ProofError as exc:
            state.error = InvalidDpopProofError(str(exc))
    request.dpop = state
    return state


def use_once_with_proof(request: FormRequest, key: str, expires_at: datetime) -> bool:
    """`JtiStore.use_once(key)` that also records the request's DPoP proof in the same round trip.

    Called by the client assertion's replay check (RFC 7523 §3), so a token
    request with both asks the shared store once.

    :raises ServiceUnavailable: the store is unreachable.
    """
    state = token_proof_state(request)
    store = runtime().jti
    if state.proof is None or state.consumed:
        return store.use_once(key, expires_at)
    fresh, state.fresh = store.use_once_many([(key, expires_at), state.proof.replay_entry()])
    state.consumed = True
    return fresh


def dpop_required(client: ClientRecord, audiences: list[str]) -> bool:
    """Whether the client or a target resource server wants DPoP-bound tokens only."""
    if client.dpop_bound_access_tokens:
        return True
    store = runtime().resource_servers
    for audience in audiences:
        record = store.get(audience)
        if record is not None and record.dpop_bound_access_tokens:
            return True
    return False


def bind_token_request(request: FormRequest) -> None:
    """RFC 9449 §5: refuse what the proof (or its absence) forbids, else bind the token.

    Runs after client authentication, with the targets known.

    :raise UseDpopNonceError: nonces are on and the proof has no current one.
    :raise InvalidDpopProofError: a bad, repeated or replayed proof, or none where one is required.
    """
    state = token_proof_state(request, record=True)
    if state.error is not None:
        raise state.error
    proof = state.proof
    if proof is None:
        if dpop_required(request.client, request.audiences):
            raise InvalidDpopProofError("A DPoP proof is required for this client or resource.")
        return
    if request.client.security_profile == FAPI2 and proof.alg not in FAPI2_SIGNING_ALGS:
        # FAPI 2.0 Security Profile §5.4.1: PS256, ES256 or EdDSA only.
        raise InvalidDpopProofError("The client's FAPI 2.0 profile does not allow this alg.")
    # The proof's jti went to the replay cache already: sent before its
    # signature was checked (answered in `settle_token_request`), or with the
    # client assertion's in one statement (answered now).
    assert state.consumed
    if state.pending is None and not state.fresh:
        raise InvalidDpopProofError("The DPoP proof has been used before.")
    # A certificate may bind the same token too (RFC 8705 §3.1, app.oauth.rfc8705):
    # then it names both, and needs both.
    request.confirmation = {**(request.confirmation or {}), "jkt": proof.thumbprint}


def settle_token_request(request: FormRequest) -> None:
    """Read the replay cache's answer for the proof `bind_token_request` sent; refuse a replay.

    Called once the token is made and before it is answered: a replayed proof
    gets the same error as when the answer came first, and the token is dropped.

    :raise InvalidDpopProofError: the proof has been used before.
    :raises ServiceUnavailable: the store is unreachable.
    """
    state: TokenProofState | None = request.dpop
    if state is None or state.pending is None:
        return
    pending, state.pending = state.pending, None
    state.fresh = pending.result()[0]
    if not state.fresh:
        raise InvalidDpopProofError("The DPoP proof has been used before.")


def with_nonce(response: PlainResponse) -> PlainResponse:
    """RFC 9449 §8: every token response carries a fresh nonce while nonces are on."""
    nonce = dpop().fresh_nonce()
    if nonce is None:
        return response
    return response._replace(headers=[*response.headers, ("DPoP-Nonce", nonce)])
