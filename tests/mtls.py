"""Test helpers: client certificates made with `cryptography`, and the headers proxies write."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: The proxy's address in tests; TRUSTED_PROXIES holds 10.0.0.0/8.
PROXY = {"REMOTE_ADDR": "10.0.0.5"}
ELSEWHERE = {"REMOTE_ADDR": "192.0.2.50"}


@dataclass
class Cert:
    der: bytes
    key: Any
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def thumbprint(self) -> str:
        digest = hashlib.sha256(self.der).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def rfc9440(self) -> str:
        """RFC 9440 §2.2: an RFC 8941 byte sequence of the DER."""
        return ":" + base64.b64encode(self.der).decode() + ":"

    def nginx(self) -> str:
        """nginx's $ssl_client_escaped_cert: the PEM, URL-encoded."""
        return quote(self.pem, safe="")

    def xfcc(self, earlier: str | None = None) -> str:
        """Envoy's X-Forwarded-Client-Cert element, as its docs show it (Hash, Cert, Subject)."""
        digest = hashlib.sha256(self.der).hexdigest()
        subject = self.certificate.subject.rfc4514_string()
        element = f'Hash={digest};Cert="{quote(self.pem, safe="")}";Subject="{subject}"'
        return f"{earlier},{element}" if earlier else element


def name(*pairs: tuple[Any, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def make_cert(
    subject: x509.Name | None = None,
    *,
    sans: list[x509.GeneralName] | None = None,
    key: Any = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Cert:
    """A self-signed certificate (the issuer is the subject): enough for every rule here."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = subject or name((NameOID.COMMON_NAME, "client"))
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    certificate = builder.sign(key, hashes.SHA256())
    return Cert(certificate.public_bytes(serialization.Encoding.DER), key, certificate)


def ip(value: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_address(value))
