"""The client's TLS certificate, as a TLS-terminating proxy in TRUSTED_PROXIES forwards it.

The server speaks plain HTTP; the proxy verifies the client's certificate
and forwards it in a header (docs/api.md §1.2, docs/deployment.md). The
header is believed only when the socket peer is in `TRUSTED_PROXIES` (the
same trust as X-Forwarded-For, app.http.client_address): from any other
peer it counts as absent, so a client that reaches the server directly
cannot present a certificate it does not hold.

`CLIENT_CERT_FORMAT` says which header and encoding the proxy writes:

- `rfc9440` (default): `Client-Cert: :<base64 DER>:`, an RFC 8941 §3.3.5
  byte sequence (RFC 9440 §2.2).
- `nginx`: `Client-Cert: <URL-encoded PEM>`, what nginx's
  `$ssl_client_escaped_cert` holds (nginx has no base64-DER variable).
- `xfcc`: Envoy's `X-Forwarded-Client-Cert`; the `Cert="<URL-encoded PEM>"`
  of its last element, the one the nearest proxy (ours) wrote.

A header from a trusted proxy that cannot be read as one certificate is a
proxy fault, never something to guess around: `MalformedClientCertificate`
(400 invalid_request at /oauth2, docs/decisions.md). Treating it as absent
would silently issue an unbound token to a client that presented one.

`CLIENT_CERT_VERIFY_HEADER` (default empty) names a header in which the
proxy reports its own chain validation (nginx's `$ssl_client_verify`):
when set, a certificate counts as chain-verified only if that header is
exactly `SUCCESS`. tls_client_auth needs a chain-verified certificate;
self_signed_tls_client_auth and token binding do not. When empty, every
forwarded certificate counts as chain-verified: the proxy must then forward
only certificates it verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import current_app

from app.http.client_address import peer_is_trusted, request_environ

#: The formats of CLIENT_CERT_FORMAT, and the WSGI environ key of each one's header.
FORMATS: dict[str, str] = {
    "rfc9440": "HTTP_CLIENT_CERT",
    "nginx": "HTTP_CLIENT_CERT",
    "xfcc": "HTTP_X_FORWARDED_CLIENT_CERT",
}
#: A certificate this large is not a client's: refuse before decoding (bytes of header).
MAX_HEADER_LENGTH = 16 * 1024

_ENVIRON_KEY = "ccserver.client_certificate"
_ABSENT = object()
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----")


class MalformedClientCertificate(ValueError):
    """A trusted proxy forwarded a certificate header that is not one certificate."""


@dataclass(frozen=True, eq=False)
class ClientCertificate:
    """One parsed client certificate and what RFC 8705 asks of it."""

    der: bytes
    certificate: x509.Certificate
    #: RFC 8705 §3.1: base64url SHA-256 of the DER, the token's `cnf` "x5t#S256".
    thumbprint: str
    #: The certificate's SubjectPublicKeyInfo, DER (RFC 8705 §2.2 compares keys).
    public_key_der: bytes

    def valid_at(self, now: datetime) -> bool:
        cert = self.certificate
        return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


@dataclass(frozen=True)
class PresentedCertificate:
    """The request's certificate and whether the proxy verified its chain."""

    certificate: ClientCertificate
    chain_verified: bool


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1: the base64url (unpadded) SHA-256 of the DER encoding."""
    digest = hashlib.sha256(der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def decode_header(value: str, fmt: str) -> bytes:
    """The DER of the certificate a header value of format `fmt` carries.

    :raise MalformedClientCertificate: not exactly one certificate in that format.
    """
    if len(value) > MAX_HEADER_LENGTH:
        raise MalformedClientCertificate("header too long")
    value = value.strip(" \t")
    if fmt == "rfc9440":
        # RFC 8941 §3.3.5: ":" base64 ":"; RFC 9440 §2.2 puts the DER in it.
        if len(value) < 3 or value[0] != ":" or value[-1] != ":":
            raise MalformedClientCertificate("not a byte sequence")
        try:
            return base64.b64decode(value[1:-1], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedClientCertificate("bad base64") from exc
    if fmt == "xfcc":
        # Envoy appends one element per proxy (comma-separated); ours is the last.
        element = _split_quoted(value, ",")[-1]
        certs = [v for k, v in _xfcc_pairs(element) if k.lower() == "cert"]
        if len(certs) != 1:
            raise MalformedClientCertificate("not one Cert in the last element")
        value = certs[0]
    return _pem_to_der(unquote(value, errors="strict"))


def _split_quoted(value: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes (Envoy quotes values holding , ; or =)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise MalformedClientCertificate("unbalanced quotes")
    parts.append("".join(current))
    return parts


def _xfcc_pairs(element: str) -> list[tuple[str, str]]:
    """The key=value pairs of one XFCC element, quotes removed."""
    pairs = []
    for part in _split_quoted(element, ";"):
        key, sep, raw = part.strip().partition("=")
        if not sep:
            raise MalformedClientCertificate("not key=value")
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"')
        pairs.append((key.strip(), raw))
    return pairs


def _pem_to_der(pem: str) -> bytes:
    blocks = _PEM.findall(pem)
    if len(blocks) != 1:
        raise MalformedClientCertificate("not one PEM certificate")
    try:
        return base64.b64decode("".join(blocks[0].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedClientCertificate("bad base64") from exc


# Parsing a certificate and reading its key costs about 40 µs, and a client
# sends the same certificate request after request: keep recent parses, by
# the header value itself. Bounded, and a pure function of its arguments, so
# a flood of certificates only evicts entries.
@lru_cache(maxsize=256)
def parse_header(value: str, fmt: str) -> ClientCertificate:
    """The certificate a header value carries, parsed.

    :raise MalformedClientCertificate: not exactly one X.509 certificate.
    """
    der = decode_header(value, fmt)
    try:
        cert = x509.load_der_x509_certificate(der)
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError) as exc:
        # TypeError: cryptography loads but cannot use some key types.
        raise MalformedClientCertificate("not an X.509 certificate") from exc
    return ClientCertificate(der, cert, thumbprint(der), spki)


def presented_certificate(environ: dict | None = None) -> PresentedCertificate | None:
    """The certificate of `environ` (by default the current request's), or None.

    None unless the peer is a trusted proxy that sent the configured header.
    Read once per request; works on the Flask path and the token fast path
    alike (both keep the environ, app.http.client_address.request_environ).

    :raise MalformedClientCertificate: a trusted proxy sent a header that is
        not one certificate.
    """
    if environ is None:
        environ = request_environ()
    cached = environ.get(_ENVIRON_KEY, _ABSENT)
    if cached is _ABSENT:
        try:
            cached = _read(environ)
        except MalformedClientCertificate as exc:
            cached = exc
        environ[_ENVIRON_KEY] = cached
    if isinstance(cached, MalformedClientCertificate):
        raise cached
    return cached


def _read(environ: dict) -> PresentedCertificate | None:
    config = current_app.config
    fmt = config.get("CLIENT_CERT_FORMAT") or "rfc9440"
    value = environ.get(FORMATS[fmt])
    if not value:
        return None
    if not peer_is_trusted(environ):
        # docs/api.md §1.2: from any other address the header counts as absent.
        return None
    certificate = parse_header(value, fmt)
    verify_header = config.get("CLIENT_CERT_VERIFY_HEADER") or ""
    verified = True
    if verify_header:
        key = "HTTP_" + verify_header.upper().replace("-", "_")
        verified = environ.get(key, "").strip() == "SUCCESS"
    return PresentedCertificate(certificate, verified)
