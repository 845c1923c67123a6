"""Mutual-TLS client authentication and certificate-bound access tokens (RFC 8705).

The certificate comes from the TLS-terminating proxy (app.http.client_cert,
docs/api.md §1.2). Here:

- `tls_client_auth` (RFC 8705 §2.1): the request names its client_id and
  the certificate matches the one rule the client registered: its subject
  DN (`subject_dn_matches`) or one subjectAltName (`san_matches`). The
  chain is the proxy's to validate.
- `self_signed_tls_client_auth` (RFC 8705 §2.2): the certificate's public
  key is one of the client's active keys, and the certificate is within its
  validity period (the chain is not validated: there is none).
- `bind_certificate` (RFC 8705 §3): a token issued to a request that
  presented a certificate carries `cnf` {"x5t#S256": ...}; a client or
  target resource server that demands binding gets none without one.
- `certificate_matches` (RFC 8705 §3): a protected resource (the
  management API) accepts a bound token only with the same certificate.

Both methods fail as every method does (None: app.oauth.client_auth makes
it 401 invalid_client and counts it), saying nothing of which check failed.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import unicodedata
from functools import lru_cache

import jwt
from authlib.oauth2.rfc6749 import InvalidRequestError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from app.clients.records import ClientRecord, KeyRecord
from app.http.client_cert import MalformedClientCertificate, presented_certificate
from app.oauth.client_auth import QueryClient, request_certificate
from app.oauth.requests import FormRequest
from app.runtime import runtime
from app.timeutil import utcnow

#: RFC 8705 §3.1: the confirmation method member of `cnf`.
CNF_MEMBER = "x5t#S256"


# --- subject DN (RFC 8705 §2.1.2 tls_client_auth_subject_dn) -------------------------------


class _CaseInsensitiveNames(dict):
    """Attribute type names for RFC 4514 parsing, looked up regardless of case (RFC 4512 §1.4)."""

    def get(self, key, default=None):
        return super().get(key.lower(), default)


_NAMES = _CaseInsensitiveNames(
    {
        "cn": NameOID.COMMON_NAME,
        "c": NameOID.COUNTRY_NAME,
        "l": NameOID.LOCALITY_NAME,
        "st": NameOID.STATE_OR_PROVINCE_NAME,
        "street": NameOID.STREET_ADDRESS,
        "o": NameOID.ORGANIZATION_NAME,
        "ou": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "dc": NameOID.DOMAIN_COMPONENT,
        "uid": NameOID.USER_ID,
        "serialnumber": NameOID.SERIAL_NUMBER,
        "sn": NameOID.SURNAME,
        "givenname": NameOID.GIVEN_NAME,
        "title": NameOID.TITLE,
        "emailaddress": NameOID.EMAIL_ADDRESS,
        "organizationidentifier": NameOID.ORGANIZATION_IDENTIFIER,
    }
)

_SPACES = re.compile(r"\s+")
NormalisedDn = tuple[frozenset[tuple[str, str]], ...]


def _normalise_value(value: str | bytes) -> str:
    """RFC 4518 §2 in short: NFKC, case folded, insignificant spaces dropped."""
    if isinstance(value, bytes):
        return "#" + value.hex()
    value = unicodedata.normalize("NFKC", value).casefold()
    return _SPACES.sub(" ", value).strip()


def _normalise_name(name: x509.Name) -> NormalisedDn:
    # A DN is a sequence of RDNs (order matters); an RDN is a set.
    return tuple(
        frozenset((a.oid.dotted_string, _normalise_value(a.value)) for a in rdn)
        for rdn in name.rdns
    )


@lru_cache(maxsize=1024)
def parse_subject_dn(value: str) -> NormalisedDn:
    """An RFC 4514 DN string, parsed and normalised for comparison.

    Attribute types by name (any case) or dotted OID; no spaces around
    `,`, `+` or `=` (RFC 4514 §3), as `openssl x509 -noout -subject
    -nameopt RFC2253` prints it.

    :raise ValueError: not an RFC 4514 DN.
    """
    name = x509.Name.from_rfc4514_string(value, _NAMES)
    if not name.rdns:
        raise ValueError("empty DN")
    return _normalise_name(name)


def subject_dn_matches(certificate: x509.Certificate, registered: str) -> bool:
    """RFC 5280 §7.1 name matching: same RDNs in the same order, values compared caselessly."""
    try:
        wanted = parse_subject_dn(registered)
    except ValueError:
        return False
    return _normalise_name(certificate.subject) == wanted


# --- subjectAltName (RFC 8705 §2.1.2 tls_client_auth_san_*) --------------------------------


def _sans(certificate: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _email_equal(a: str, b: str) -> bool:
    """RFC 5280 §7.5: the local part exactly, the host part caselessly."""
    local_a, at_a, host_a = a.rpartition("@")
    local_b, at_b, host_b = b.rpartition("@")
    return bool(at_a and at_b) and local_a == local_b and host_a.lower() == host_b.lower()


def san_matches(certificate: x509.Certificate, field: str, registered: str) -> bool:
    """Whether the certificate holds a SAN of the registered type equal to `registered`.

    dNSName caselessly (RFC 5280 §7.2, no wildcard expansion), iPAddress as
    addresses (so `2001:db8::1` and `2001:DB8:0::1` are one), URI exactly as
    registered, rfc822Name per RFC 5280 §7.5.
    """
    sans = _sans(certificate)
    if sans is None:
        return False
    if field == "tls_client_auth_san_dns":
        wanted = registered.lower()
        return any(v.lower() == wanted for v in sans.get_values_for_type(x509.DNSName))
    if field == "tls_client_auth_san_uri":
        return registered in sans.get_values_for_type(x509.UniformResourceIdentifier)
    if field == "tls_client_auth_san_ip":
        try:
            address = ipaddress.ip_address(registered)
        except ValueError:
            return False
        return address in sans.get_values_for_type(x509.IPAddress)
    if field == "tls_client_auth_san_email":
        return any(_email_equal(v, registered) for v in sans.get_values_for_type(x509.RFC822Name))
    return False


def certificate_matches_rule(certificate: x509.Certificate, rule: tuple[str, str] | None) -> bool:
    """tls_client_auth's check of the client's one registered rule (RFC 8705 §2.1.2)."""
    if rule is None:
        return False
    field, value = rule
    if field == "tls_client_auth_subject_dn":
        return subject_dn_matches(certificate, value)
    return san_matches(certificate, field, value)


# --- the two client authentication methods ----------------------------------------------


def tls_client_auth(query_client: QueryClient, request: FormRequest) -> ClientRecord | None:
    """RFC 8705 §2.1: PKI mutual TLS; the proxy validated the chain."""
    presented = request_certificate()
    client_id = request.payload.data.get("client_id")
    if presented is None or not client_id or not presented.chain_verified:
        return None
    client = query_client(client_id)
    if client is None:
        return None
    if not certificate_matches_rule(presented.certificate.certificate, client.tls_client_auth):
        return None
    return client


@lru_cache(maxsize=1024)
def _spki(jwk_json: str) -> bytes | None:
    """A registered key's SubjectPublicKeyInfo DER; cached by the JWK's JSON, so exact."""
    try:
        key = jwt.PyJWK(json.loads(jwk_json)).key
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _key_der(key: KeyRecord) -> bytes | None:
    return _spki(json.dumps(key.public_jwk, sort_keys=True))


def self_signed_tls_client_auth(
    query_client: QueryClient, request: FormRequest
) -> ClientRecord | None:
    """RFC 8705 §2.2: the certificate's key is one the client registered (2.3)."""
    presented = request_certificate()
    client_id = request.payload.data.get("client_id")
    if presented is None or not client_id:
        return None
    client = query_client(client_id)
    if client is None:
        return None
    now = utcnow()
    certificate = presented.certificate
    # RFC 8705 §2.2 leaves validity to the server: an expired or not yet
    # valid certificate is refused, as a proxy validating a chain would.
    if not certificate.valid_at(now):
        return None
    for key in client.active_keys(now):
        der = _key_der(key)
        if der is not None and hmac.compare_digest(der, certificate.public_key_der):
            runtime().usage.key_used(client.id, key.kid)
            return client
    return None


# --- certificate-bound tokens (RFC 8705 §3) -----------------------------------------------


def bind_certificate(request: FormRequest, client: ClientRecord) -> None:
    """RFC 8705 §3.1: bind the token to the presented certificate; demand one where required.

    Call once the audiences are resolved: a target resource server may
    demand binding as the client may (docs/api.md §1.2).

    :raise InvalidRequestError: binding is required and no certificate was
        presented, or the forwarded one is malformed.
    """
    presented = request_certificate()
    if presented is not None:
        confirmation = dict(request.confirmation or {})
        confirmation[CNF_MEMBER] = presented.certificate.thumbprint
        request.confirmation = confirmation
        return
    if client.tls_client_certificate_bound_access_tokens:
        raise InvalidRequestError("This client's tokens must be bound to a client certificate.")
    store = runtime().resource_servers
    for audience in request.audiences:
        record = store.get(audience)
        if record is not None and record.tls_client_certificate_bound_access_tokens:
            raise InvalidRequestError(
                "Tokens for this resource server must be bound to a client certificate."
            )


def certificate_matches(claims: dict) -> bool:
    """RFC 8705 §3: a certificate-bound token is good only with that certificate.

    True for a token without `cnf.x5t#S256`; for a bound one, True only when
    the request presented the certificate whose thumbprint it names.
    """
    cnf = claims.get("cnf")
    if not isinstance(cnf, dict) or CNF_MEMBER not in cnf:
        return True
    try:
        presented = presented_certificate()
    except MalformedClientCertificate:
        return False
    expected = cnf[CNF_MEMBER]
    if presented is None or not isinstance(expected, str):
        return False
    return hmac.compare_digest(presented.certificate.thumbprint, expected)
