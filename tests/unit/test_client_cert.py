"""Unit tests: app.http.client_cert header decoding and app.oauth.rfc8705 name matching."""

from __future__ import annotations

import pytest
from cryptography.x509.oid import NameOID

from app.http.client_cert import MalformedClientCertificate, decode_header, parse_header
from app.oauth.rfc8705 import parse_subject_dn, subject_dn_matches
from tests.mtls import make_cert, name

# Written most significant first (O, then CN): its RFC 4514 string is "CN=...,O=...".
CERT = make_cert(name((NameOID.ORGANIZATION_NAME, "O;x=y"), (NameOID.COMMON_NAME, "a, b")))


def test_each_format_gives_the_der():
    assert decode_header(CERT.rfc9440(), "rfc9440") == CERT.der
    assert decode_header(CERT.nginx(), "nginx") == CERT.der
    # Envoy quotes Subject, which holds , ; and = here: only the last element counts.
    xfcc = CERT.xfcc(make_cert().xfcc())
    assert decode_header(xfcc, "xfcc") == CERT.der


def test_thumbprint_is_rfc8705_x5t_s256():
    assert parse_header(CERT.rfc9440(), "rfc9440").thumbprint == CERT.thumbprint


@pytest.mark.parametrize(
    ("value", "fmt"),
    [
        ("", "rfc9440"),
        ("::", "rfc9440"),
        (":abc$:", "rfc9440"),
        (":" + "A" * 20000 + ":", "rfc9440"),
        ("%ZZ", "nginx"),
        (CERT.nginx() + CERT.nginx(), "nginx"),  # two certificates
        ('Hash=ab;Subject="x"', "xfcc"),
        ('Cert="abc', "xfcc"),
        ('Cert="a";Cert="b"', "xfcc"),
    ],
)
def test_malformed_headers(value, fmt):
    with pytest.raises(MalformedClientCertificate):
        parse_header(value, fmt)


def test_bytes_that_are_not_a_certificate():
    with pytest.raises(MalformedClientCertificate):
        parse_header(":QUJD:", "rfc9440")


@pytest.mark.parametrize(
    "dn", ["CN=a\\, b,O=O\\;x\\=y", "cn=A\\,  B,o=o\\;X\\=Y", "2.5.4.3=a\\, b,2.5.4.10=O\\;x\\=y"]
)
def test_subject_dn_matches(dn):
    assert subject_dn_matches(CERT.certificate, dn)


@pytest.mark.parametrize("dn", ["O=O\\;x\\=y,CN=a\\, b", "CN=a\\, b", "CN=a\\, b,O=other"])
def test_subject_dn_does_not_match(dn):
    assert not subject_dn_matches(CERT.certificate, dn)


def test_multi_valued_rdn_is_a_set():
    assert parse_subject_dn("CN=a+UID=b,O=c") == parse_subject_dn("UID=b+CN=a,O=c")


@pytest.mark.parametrize("dn", ["", "CN=a, O=b", "nonsense", "XX=1"])
def test_unparseable_dn(dn):
    with pytest.raises(ValueError):
        parse_subject_dn(dn)
