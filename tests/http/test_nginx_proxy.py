"""Integration: a real nginx in front of the server, configured exactly as
docs/deployment.md says (the nginx block is read from that page), terminating
TLS with client certificates on loopback (RFC 8705 behind a proxy, docs/api.md §1.2).

Certificates are made here with `cryptography`; nothing is committed. Skipped
only when no nginx binary is installed (.ci/run installs Debian's).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import free_port, serve_wsgi
from tests.oauth.assertions import register_key

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(NGINX is None, reason="no nginx binary installed")
DEPLOYMENT = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def documented_server_block() -> str:
    """The first ```nginx block of docs/deployment.md: the configuration under test."""
    match = re.search(r"### nginx.*?```nginx\n(.*?)```", DEPLOYMENT.read_text(), re.S)
    assert match, "docs/deployment.md has no nginx block"
    return match.group(1)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(subject, key, issuer, issuer_key, *, ca=False, server=False) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key) -> tuple[str, str]:
    pem = path.with_suffix(".pem")
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = path.with_suffix(".key")
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(pem), str(key_path)


def thumbprint(cert_path: str) -> str:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


@pytest.fixture
def pki(tmp_path) -> dict[str, tuple[str, str]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(_name("Test CA"), ca_key, _name("Test CA"), ca_key, ca=True)
    made = {"ca": _write(tmp_path / "ca", ca, ca_key)}
    server_key = ec.generate_private_key(ec.SECP256R1())
    made["server"] = _write(
        tmp_path / "server",
        _cert(_name("127.0.0.1"), server_key, ca.subject, ca_key, server=True),
        server_key,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    made["client"] = _write(
        tmp_path / "client", _cert(_name("billing"), client_key, ca.subject, ca_key), client_key
    )
    self_key = ec.generate_private_key(ec.SECP256R1())
    self_signed = _cert(_name("billing"), self_key, _name("billing"), self_key)
    made["self"] = _write(tmp_path / "self", self_signed, self_key)
    return made


@pytest.fixture
def app_port() -> int:
    return free_port()


@pytest.fixture
def app_config(base_config, migrated):
    # What docs/deployment.md's nginx section asks of the server's settings.
    return {
        **base_config,
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "CLIENT_CERT_FORMAT": "nginx",
        "CLIENT_CERT_VERIFY_HEADER": "Client-Cert-Verify",
    }


@pytest.fixture
def proxy(app, app_port, pki, tmp_path) -> Iterator[str]:
    """nginx on a loopback port, proxying to the app; yields its https base URL."""
    served = serve_wsgi(app, app_port)
    next(served)
    port = free_port()
    block = documented_server_block()
    block = block.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    block = block.replace("/etc/nginx/tls/server.pem", pki["server"][0])
    block = block.replace("/etc/nginx/tls/server.key", pki["server"][1])
    block = block.replace("/etc/nginx/tls/ca.pem", pki["ca"][0])
    block = block.replace("http://127.0.0.1:8001", f"http://127.0.0.1:{app_port}")
    assert str(app_port) in block and str(port) in block, "the documented block changed shape"
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"daemon off;\nmaster_process off;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log warn;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {tmp_path};\n"
        f"proxy_temp_path {tmp_path};\n{block}\n}}\n"
    )
    process = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(f"https://127.0.0.1:{port}/healthz", verify=pki["ca"][0], timeout=1)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "error.log").read_text())
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        next(served, None)


def token(proxy: str, pki, cert: str | None, **form) -> requests.Response:
    return requests.post(
        f"{proxy}/oauth2/token",
        data={"grant_type": "client_credentials", **form},
        cert=pki[cert] if cert else None,
        verify=pki["ca"][0],
        timeout=10,
    )


def test_tls_client_auth_through_nginx_binds_the_token(proxy, pki, factory):
    cid, _ = factory.client("acme", scopes=["read"], tls_client_auth_subject_dn="CN=billing,O=Acme")
    response = token(proxy, pki, "client", client_id=cid)
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["cnf"] == {"x5t#S256": thumbprint(pki["client"][0])}


def test_a_self_signed_certificate_with_the_same_dn_is_refused(proxy, pki, factory):
    """nginx reports FAILED for it; CLIENT_CERT_VERIFY_HEADER makes tls_client_auth refuse."""
    cid, _ = factory.client("acme", scopes=["read"], tls_client_auth_subject_dn="CN=billing,O=Acme")
    response = token(proxy, pki, "self", client_id=cid)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_self_signed_tls_client_auth_through_nginx(proxy, pki, factory, client):
    cid, _ = factory.client("acme", scopes=["read"])
    key = x509.load_pem_x509_certificate(Path(pki["self"][0]).read_bytes()).public_key()
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)

    class Pair:
        public_jwk = {**jwk, "alg": "ES256"}
        registered_kid = None

    register_key(client, factory.admin_headers("acme"), cid, Pair)
    response = token(proxy, pki, "self", client_id=cid)
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["cnf"] == {"x5t#S256": thumbprint(pki["self"][0])}


def test_a_client_cannot_forge_the_headers_through_nginx(proxy, pki, factory):
    """nginx overwrites Client-Cert and Client-Cert-Verify: a client without a
    certificate that sends them itself is not authenticated."""
    cid, _ = factory.client("acme", scopes=["read"], tls_client_auth_subject_dn="CN=billing,O=Acme")
    forged = Path(pki["client"][0]).read_text()
    response = requests.post(
        f"{proxy}/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": cid},
        headers={
            "Client-Cert": quote(forged, safe=""),
            "Client-Cert-Verify": "SUCCESS",
        },
        verify=pki["ca"][0],
        timeout=10,
    )
    assert response.status_code == 401, response.text
