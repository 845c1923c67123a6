"""private_key_jwt client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2).

The client sends `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
and a `client_assertion` JWT signed with one of its registered keys.
Authlib's `JWTBearerClientAssertion` runs the steps: read the assertion,
find the client its `sub` names, resolve that client's keys, verify, check
the claims and the `jti`; `PrivateKeyJWT` fills in each step. Every failure
raises InvalidClientError, which app.oauth.client_auth turns into the same
401 invalid_client as a wrong secret; no cause is ever told apart, and
nothing in the assertion (jku, x5u, jwk, x5c) is ever fetched or trusted.

The signature is checked with PyJWT (`process_assertion_claims`), not with
joserfc as Authlib's own step does: joserfc's default algorithms refuse
EdDSA and PS256 assertions (it warns that RFC 9864 deprecates "EdDSA"), and
importing the JWK costs 15-50 µs more per assertion, most for RSA keys
(docs/performance.md has the measurement).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import jwt
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion

from app import jose
from app.clients.records import ClientRecord, KeyRecord
from app.federation import verify as federation_verify
from app.oauth import federated, rfc9449
from app.oauth.client_auth import AuthMethod, QueryClient
from app.oauth.requests import ENDPOINT_PATHS, FormRequest
from app.protocol import FAPI2, FAPI2_MAX_FUTURE, FAPI2_SIGNING_ALGS, SIGNING_ALGS
from app.runtime import runtime
from app.state.jti import from_timestamp
from app.timeutil import utcnow

# RFC 7523 §3 item 4: "The JWT MUST contain an exp claim"; we also cap how far
# ahead it may lie, so replay-cache entries stay short-lived.
MAX_LIFETIME = 300
# Allowance for the client's clock (RFC 7523 §3 items 4-6 "reasonable leeway").
LEEWAY = 30
MAX_ASSERTION_LENGTH = 16 * 1024
MAX_HEADER_LENGTH = 2048
MAX_JTI_LENGTH = 255
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "jti"]
#: The request being authenticated, for `validate_jti` (Authlib passes only claims).
_current_request: ContextVar[FormRequest] = ContextVar("private_key_jwt_request")


def parse_assertion(assertion: object) -> jose.CompactJWS | None:
    """A signed compact JWS (RFC 7515 §7.1) of a sane size, unverified; None when malformed."""
    parsed = jose.parse(assertion, MAX_ASSERTION_LENGTH)
    if parsed is None or not parsed.signature:
        return None
    if parsed.signing_input.index(b".") > MAX_HEADER_LENGTH:
        return None
    return parsed


def parse_unverified(assertion: str) -> tuple[dict, dict] | None:
    """Header and claims of a compact JWS (RFC 7515 §7.1), unverified; None when malformed."""
    parsed = parse_assertion(assertion)
    return (parsed.header, parsed.claims) if parsed is not None else None


def audiences(issuer: str, endpoint: str) -> list[str]:
    """RFC 7523 §3 item 3: the issuer or the token endpoint URL.

    The introspection and revocation endpoints also take their own URL, as
    clients written for RFC 7523 put the endpoint they call in `aud`.
    """
    accepted = [issuer, issuer + ENDPOINT_PATHS["token"]]
    if endpoint != "token":
        accepted.append(issuer + ENDPOINT_PATHS[endpoint])
    return accepted


def candidate_keys(
    keys: Sequence[KeyRecord], header: dict, algorithms: Collection[str]
) -> list[KeyRecord]:
    """The keys the header may select: by kid when it names one, and only of the key's own alg."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        return []
    chosen = [k for k in keys if k.alg == alg]
    if "kid" in header:
        kid = header["kid"]
        if not isinstance(kid, str):
            return []
        chosen = [k for k in chosen if k.kid == kid]
    return chosen


def _finite_number(value: object) -> bool:
    # JSON as Python reads it allows NaN and Infinity, which compare false with any time.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def claims_acceptable(claims: dict, now: float) -> bool:
    """RFC 7523 §3 items 1, 2, 4, 5, 6 and 7, beyond what PyJWT checked with the signature."""
    client_id = claims.get("sub")
    if not isinstance(client_id, str) or claims.get("iss") != client_id:
        return False
    exp = claims.get("exp")
    if not _finite_number(exp) or exp > now + MAX_LIFETIME + LEEWAY:  # type: ignore[operator]
        return False
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if value is None:
            continue
        if not _finite_number(value):
            return False
        if value > now + LEEWAY:
            return False
    jti = claims.get("jti")
    return isinstance(jti, str) and 0 < len(jti) <= MAX_JTI_LENGTH


def fapi2_claims_acceptable(claims: dict, issuer: str, now: float) -> bool:
    """The FAPI 2.0 Security Profile's rules for a client assertion (§5.3.2.1).

    `aud` is the issuer identifier as a string, and nothing else (not the
    token endpoint's URL, not an array); `iat` and `nbf` lie at most
    FAPI2_MAX_FUTURE seconds ahead.
    """
    if claims.get("aud") != issuer:
        return False
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # claims_acceptable refuses a non-numeric one
        if value > now + FAPI2_MAX_FUTURE:
            return False
    return True


@dataclass(frozen=True)
class ResolvedKeys:
    """A client's active keys and whether its FAPI 2.0 profile narrows what they may sign."""

    keys: list[KeyRecord]
    fapi2: bool


def _naming_only(client_id: str, query_client: QueryClient) -> QueryClient:
    def query(subject: str) -> ClientRecord | None:
        return query_client(subject) if subject == client_id else None

    return query


class PrivateKeyJWT(JWTBearerClientAssertion):
    """private_key_jwt at one endpoint: its accepted audiences and algorithms fixed."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(
        self, issuer: str, accepted_audiences: Sequence[str], algorithms: Collection[str]
    ) -> None:
        super().__init__(validate_jti=True, leeway=LEEWAY)
        self.issuer = issuer
        self.accepted_audiences = list(accepted_audiences)
        self.algorithms = frozenset(algorithms) & frozenset(SIGNING_ALGS)
        self.fapi2_algorithms = self.algorithms & frozenset(FAPI2_SIGNING_ALGS)

    def __call__(self, query_client: QueryClient, request: FormRequest) -> ClientRecord | None:
        sent = request.form.get("client_id")
        if sent is not None:
            # RFC 7521 §4.2: a client_id sent beside the assertion must name its
            # subject; asked at the look-up, before any key or jti is touched.
            query_client = _naming_only(sent, query_client)
        # Authlib's steps do not pass the request down to validate_jti.
        token = _current_request.set(request)
        try:
            return super().__call__(query_client, request)
        finally:
            _current_request.reset(token)

    def get_audiences(self) -> list[str]:
        return self.accepted_audiences

    def extract_assertion(self, assertion: str) -> tuple[dict, dict]:
        """Header and claims, unverified, once they are small and well-formed.

        :raise InvalidClientError: malformed, or refused before any look-up.
        """
        parsed = parse_unverified(assertion)
        if parsed is None:
            raise InvalidClientError(description="Invalid JWT assertion.")
        header, claims = parsed
        if "crit" in header:
            # RFC 7515 §4.1.11: we understand no extension, so must refuse.
            raise InvalidClientError(description="Invalid JWT assertion.")
        if claims.get("iss") != claims.get("sub"):
            # RFC 7523 §3 items 1 and 2: iss and sub are both the client_id.
            raise InvalidClientError(description="Invalid JWT assertion.")
        return header, claims

    def resolve_client_public_key(self, client: ClientRecord) -> ResolvedKeys:
        """The client's active keys; `process_assertion_claims` picks by the header."""
        return ResolvedKeys(client.active_keys(utcnow()), client.security_profile == FAPI2)

    def process_assertion_claims(self, assertion: str, resolve_key: ResolvedKeys) -> dict:
        """The claims, once one of the keys verifies the signature and the claims pass.

        Without a kid, each active key of the header's alg is tried in turn.
        A FAPI 2.0 client's assertion is held to that profile's algorithms,
        audience and clock rules too (`fapi2_claims_acceptable`).

        :raise InvalidClientError: no key verifies it, or a claim is wrong.
        """
        jws = parse_assertion(assertion)
        if jws is None:  # extract_assertion has read it already; never true
            raise InvalidClientError(description="Invalid JWT assertion.")
        fapi2 = resolve_key.fapi2
        algorithms = self.fapi2_algorithms if fapi2 else self.algorithms
        send_replay_write(jws.claims, _current_request.get(None))
        for key in candidate_keys(resolve_key.keys, jws.header, algorithms):
            claims = self._verify(jws, key)
            if claims is None:
                continue
            if fapi2 and not fapi2_claims_acceptable(claims, self.issuer, time.time()):
                raise InvalidClientError(description="Invalid JWT assertion.")
            self.verify_claims(claims)
            runtime().usage.key_used(claims["sub"], key.kid)
            return claims
        raise InvalidClientError(description="Invalid JWT assertion.")

    def _verify(self, jws: jose.CompactJWS, key: KeyRecord) -> dict | None:
        """Claims if the signature, aud, exp, nbf and iat check out under this key."""
        if jws.header.get("alg") != key.alg:
            return None
        try:
            public_key = jose.public_key(key.public_jwk, key.alg)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            return None
        if not jose.verify(jws, key.alg, public_key):
            return None
        if not jose.registered_claims_ok(
            jws.claims,
            audiences=self.accepted_audiences,
            now=time.time(),
            leeway=LEEWAY,
            required=REQUIRED_CLAIMS,
        ):
            return None
        return jws.claims

    def verify_claims(self, claims: dict) -> None:
        """:raise InvalidClientError: a claim is wrong, or the jti was used before."""
        if not claims_acceptable(claims, time.time()):
            raise InvalidClientError(description="Invalid JWT assertion.")
        if not self.validate_jti(claims, claims["jti"]):
            raise InvalidClientError(description="JWT ID is used before.")

    def validate_jti(self, claims: dict, jti: str) -> bool:
        """RFC 7523 §3 item 7: a jti is used once while the assertion is unexpired.

        :raise ServiceUnavailable: the replay cache cannot be reached.
        """
        expires_at = from_timestamp(claims["exp"] + LEEWAY)
        key = f"{claims['sub']}:{jti}"
        request = _current_request.get(None)
        if request is None:
            return runtime().jti.use_once(key, expires_at)
        sent, request.assertion_replay = request.assertion_replay, None
        if sent is not None and sent[0] == key:
            return bool(sent[1].result()[0])
        # A DPoP proof of the same request goes to the replay cache in the
        # same round trip (docs/decisions.md: one round trip per token request).
        return rfc9449.use_once_with_proof(request, key, expires_at)


def send_replay_write(claims: dict, request: FormRequest | None) -> None:
    """Send the assertion's replay-cache write before its signature is checked.

    The store answers while the signature is checked; `validate_jti` reads
    the answer. Only for an assertion whose claims already pass
    (`claims_acceptable`) of a client that exists (Authlib looked it up
    before this step). Recording the jti of an assertion that
    then fails its signature gives nobody anything: the key is the
    client's id and the jti, and whoever knows a pending jti of a client's
    assertion holds that assertion, which works as it is. With a DPoP
    header the assertion's write waits for the proof, so that both go in
    one statement (`rfc9449.use_once_with_proof`).
    """
    if request is None or request.headers.get("DPoP") is not None:
        return
    if not claims_acceptable(claims, time.time()):
        return
    key = f"{claims['sub']}:{claims['jti']}"
    expires_at = from_timestamp(claims["exp"] + LEEWAY)
    request.assertion_replay = (key, runtime().jti.use_once_many_later([(key, expires_at)]))


def federated_issuer(request: FormRequest) -> tuple[str, object] | None:
    """(client_id, unverified iss) of a federated assertion (docs/api.md §1.3), else None.

    That is a jwt-bearer assertion sent with a `client_id` its `iss` is not:
    a client's own assertion has iss = sub = client id (RFC 7523 §3), so
    this never takes one of those from the private_key_jwt checks below.
    """
    form = request.form
    client_id = form.get("client_id")
    assertion = form.get("client_assertion")
    if not client_id or not assertion or form.get("client_assertion_type") != ASSERTION_TYPE:
        return None
    # Parsed as the federated checks parse it, so that a JWS they would refuse
    # (alg none, with its empty signature) is refused, and logged, by them.
    parsed = federation_verify.parse_unverified(assertion)
    if parsed is None:
        return None
    issuer = parsed[1].get("iss")
    if issuer == client_id:
        return None
    return client_id, issuer


def private_key_jwt(issuer: str, algorithms: Collection[str]) -> AuthMethod:
    """The private_key_jwt method for `register_client_auth_method`.

    Each endpoint accepts its own audiences, and Authlib calls a method with
    (query_client, request) only: the request names its endpoint. A
    federated assertion goes to app.oauth.federated instead: RFC 7523 is
    its mechanism too, so it counts as private_key_jwt for
    `allowed_auth_methods` and the server metadata.
    """
    by_endpoint = {
        endpoint: PrivateKeyJWT(issuer, audiences(issuer, endpoint), algorithms)
        for endpoint in ENDPOINT_PATHS
    }

    def authenticate(query_client: QueryClient, request: FormRequest) -> ClientRecord | None:
        foreign = federated_issuer(request)
        if foreign is not None:
            return federated.authenticate(query_client, request, *foreign)
        return by_endpoint[request.endpoint](query_client, request)

    return authenticate
