"""Integration: mutual TLS behind a proxy (RFC 8705, docs/api.md §1.2) through HTTP.

Certificates are made here with `cryptography`; the proxy is played by the
test client sending its headers from an address in TRUSTED_PROXIES. Each
binding test runs on the token fast path (app.oauth.fastpath, what the
test client reaches) and on Flask's own dispatch (`app.wsgi_app.wsgi_app`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cryptography.x509 as x509
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm
from werkzeug.test import Client

from app.extensions import db
from app.models import ResourceServer
from tests.conftest import basic_auth
from tests.mtls import ELSEWHERE, PROXY, Cert, ip, make_cert, name
from tests.oauth.assertions import KeyPair, register_key

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def app_config(base_config, migrated):
    return {**base_config, "TRUSTED_PROXIES": "10.0.0.0/8"}


@pytest.fixture(params=["fast", "flask"])
def http(request, app, client):
    """The test client (token fast path) or a client of Flask's own dispatch."""
    if request.param == "fast":
        return client
    return Client(app.wsgi_app.wsgi_app)


def post_token(http, cert: Cert | None, *, header: str | None = None, environ=PROXY, **form):
    headers = form.pop("headers", {})
    if cert is not None:
        headers["Client-Cert"] = header or cert.rfc9440()
    return http.post(
        "/oauth2/token", data={**GRANT, **form}, headers=headers, environ_base=dict(environ)
    )


def claims(response) -> dict:
    assert response.status_code == 200, response.get_json()
    return jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})


def dn_client(factory, dn: str, **fields) -> str:
    cid, _ = factory.client(tls_client_auth_subject_dn=dn, **fields)
    return cid


# --- tls_client_auth: subject DN ----------------------------------------------------------

SUBJECT = name(
    (NameOID.COUNTRY_NAME, "DE"),
    (NameOID.ORGANIZATION_NAME, "Acme  Corp"),
    (NameOID.COMMON_NAME, "Billing Reader"),
)


@pytest.mark.parametrize(
    "registered",
    [
        "CN=Billing Reader,O=Acme  Corp,C=DE",  # as openssl -nameopt RFC2253 prints it
        "cn=billing reader,o=ACME CORP,c=de",  # attribute names and values caselessly
        "2.5.4.3=Billing Reader,2.5.4.10=Acme Corp,2.5.4.6=DE",  # OIDs; spaces collapsed
    ],
)
def test_tls_client_auth_by_subject_dn(http, factory, registered):
    cid = dn_client(factory, registered)
    response = post_token(http, make_cert(SUBJECT), client_id=cid)
    token = claims(response)
    assert token["client_id"] == cid


@pytest.mark.parametrize(
    "registered",
    [
        "C=DE,O=Acme Corp,CN=Billing Reader",  # RDNs in the wrong order
        "CN=Billing Reader,O=Acme Corp",  # one RDN short
        "CN=Billing Reader,O=Acme Corp,C=FR",
        "CN=Billing Reade,O=Acme Corp,C=DE",
    ],
)
def test_tls_client_auth_refuses_another_dn(client, factory, registered):
    cid = dn_client(factory, registered)
    response = post_token(client, make_cert(SUBJECT), client_id=cid)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert "WWW-Authenticate" not in response.headers


def test_tls_client_auth_needs_the_client_id(client, factory):
    dn_client(factory, "CN=Billing Reader,O=Acme Corp,C=DE")
    response = post_token(client, make_cert(SUBJECT))
    assert response.status_code == 401


def test_subject_dn_must_parse_when_registered(client, factory):
    headers = factory.admin_headers("acme")
    body = {"name": "dn-client", "scopes": ["read"], "audiences": []}
    bad = client.post(
        "/api/v1/clients",
        json={**body, "tls_client_auth_subject_dn": "CN=a, O=b"},
        headers=headers,
    )
    assert bad.status_code == 400
    assert bad.get_json()["errors"][0]["field"] == "tls_client_auth_subject_dn"
    good = client.post(
        "/api/v1/clients", json={**body, "tls_client_auth_subject_dn": "CN=a,O=b"}, headers=headers
    )
    assert good.status_code == 201, good.get_json()


# --- tls_client_auth: one SAN of each type --------------------------------------------------


@pytest.mark.parametrize(
    ("field", "registered", "sans", "ok"),
    [
        ("tls_client_auth_san_dns", "Client.Example.COM", [x509.DNSName("client.example.com")], 1),
        ("tls_client_auth_san_dns", "other.example.com", [x509.DNSName("client.example.com")], 0),
        ("tls_client_auth_san_dns", "a.example.com", [x509.DNSName("*.example.com")], 0),
        (
            "tls_client_auth_san_uri",
            "spiffe://acme.example/billing",
            [x509.UniformResourceIdentifier("spiffe://acme.example/billing")],
            1,
        ),
        (
            "tls_client_auth_san_uri",
            "spiffe://acme.example/Billing",
            [x509.UniformResourceIdentifier("spiffe://acme.example/billing")],
            0,
        ),
        ("tls_client_auth_san_ip", "2001:db8:0:0::1", [ip("2001:db8::1")], 1),
        ("tls_client_auth_san_ip", "192.0.2.1", [ip("192.0.2.1")], 1),
        ("tls_client_auth_san_ip", "192.0.2.2", [ip("192.0.2.1")], 0),
        ("tls_client_auth_san_email", "ops@EXAMPLE.com", [x509.RFC822Name("ops@example.com")], 1),
        ("tls_client_auth_san_email", "OPS@example.com", [x509.RFC822Name("ops@example.com")], 0),
        # The right value under another type does not count.
        (
            "tls_client_auth_san_dns",
            "client.example.com",
            [x509.RFC822Name("client.example.com")],
            0,
        ),
    ],
)
def test_tls_client_auth_by_san(client, factory, field, registered, sans, ok):
    cid, _ = factory.client(**{field: registered})
    response = post_token(client, make_cert(sans=sans), client_id=cid)
    if ok:
        assert claims(response)["client_id"] == cid
    else:
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_client"


def test_a_client_without_a_rule_cannot_use_tls_client_auth(client, factory):
    cid, _ = factory.client()
    response = post_token(client, make_cert(SUBJECT), client_id=cid)
    assert response.status_code == 401


def test_allowed_auth_methods_applies_to_mtls(client, factory):
    cid = dn_client(factory, "CN=c", allowed_auth_methods=["client_secret_basic"])
    assert (
        post_token(client, make_cert(name((NameOID.COMMON_NAME, "c"))), client_id=cid).status_code
        == 401
    )
    cid = dn_client(factory, "CN=d", allowed_auth_methods=["tls_client_auth"])
    assert (
        post_token(client, make_cert(name((NameOID.COMMON_NAME, "d"))), client_id=cid).status_code
        == 200
    )


# --- the header is believed only from TRUSTED_PROXIES ---------------------------------------


def test_client_cert_from_an_untrusted_peer_is_ignored(client, factory):
    """An attacker sending Client-Cert straight to the server gets nothing from it."""
    cid = dn_client(factory, "CN=Billing Reader,O=Acme Corp,C=DE")
    response = post_token(client, make_cert(SUBJECT), client_id=cid, environ=ELSEWHERE)
    assert response.status_code == 401
    # Nor does a client that authenticates otherwise get a token bound to it.
    other, secret = factory.client()
    response = post_token(
        client, make_cert(SUBJECT), environ=ELSEWHERE, headers=basic_auth(other, secret)
    )
    assert "cnf" not in claims(response)


def test_no_trusted_proxies_means_no_certificates(app, client, factory):
    app.config["TRUSTED_PROXIES"] = ""
    cid = dn_client(factory, "CN=Billing Reader,O=Acme Corp,C=DE")
    assert post_token(client, make_cert(SUBJECT), client_id=cid).status_code == 401


@pytest.mark.parametrize("value", [":not base64!:", "no-colons", ":" + "QUJD" + ":", "-----BEGIN"])
def test_malformed_header_from_the_proxy_is_400(client, factory, value):
    cid, secret = factory.client()
    response = post_token(client, make_cert(), header=value, headers=basic_auth(cid, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


# --- self_signed_tls_client_auth ------------------------------------------------------------


def _registered_key(client, factory, cid: str):
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk["alg"] = "ES256"
    register_key(client, factory.admin_headers("acme"), cid, KeyPair(private, "ES256", jwk))
    return private


def test_self_signed_tls_client_auth(http, client, factory):
    cid, _ = factory.client(create_secret=False)
    private = _registered_key(client, factory, cid)
    cert = make_cert(key=private)
    token = claims(post_token(http, cert, client_id=cid))
    assert token["client_id"] == cid
    assert token["cnf"] == {"x5t#S256": cert.thumbprint}


def test_self_signed_with_another_key_is_refused(client, factory):
    cid, _ = factory.client(create_secret=False)
    _registered_key(client, factory, cid)
    response = post_token(client, make_cert(), client_id=cid)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize("days", [-2, 2])
def test_self_signed_outside_its_validity_is_refused(client, factory, days):
    cid, _ = factory.client(create_secret=False)
    private = _registered_key(client, factory, cid)
    now = datetime.now(UTC)
    start = now + timedelta(days=days) if days > 0 else now - timedelta(days=10)
    cert = make_cert(key=private, not_before=start, not_after=start + timedelta(days=1))
    assert post_token(client, cert, client_id=cid).status_code == 401


def test_mtls_failures_count_toward_the_limit(make_app, factory):
    limited = make_app(AUTH_FAILURE_LIMIT_CLIENT=3).test_client()
    cid = dn_client(factory, "CN=someone")
    codes = [post_token(limited, make_cert(), client_id=cid).status_code for _ in range(5)]
    assert codes[:3] == [401, 401, 401]
    assert 429 in codes[3:]


# --- certificate-bound tokens ---------------------------------------------------------------


def test_any_presented_certificate_binds_the_token(http, factory):
    cid, secret = factory.client()
    cert = make_cert()
    response = post_token(http, cert, headers=basic_auth(cid, secret))
    token = claims(response)
    assert token["cnf"] == {"x5t#S256": cert.thumbprint}
    assert response.get_json()["token_type"] == "Bearer"


def test_no_certificate_no_cnf(http, factory):
    cid, secret = factory.client()
    assert "cnf" not in claims(post_token(http, None, headers=basic_auth(cid, secret)))


def test_client_requiring_binding_without_certificate_is_400(http, factory):
    cid, secret = factory.client(tls_client_certificate_bound_access_tokens=True)
    response = post_token(http, None, headers=basic_auth(cid, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert "cnf" in claims(post_token(http, make_cert(), headers=basic_auth(cid, secret)))


def test_resource_server_requiring_binding_without_certificate_is_400(app, http, factory):
    audience = "https://bound-api.example"
    factory.resource_server("acme", audience, tls_client_certificate_bound_access_tokens=True)
    cid, secret = factory.client(audiences=[audience, "https://free-api.example"])
    response = post_token(http, None, headers=basic_auth(cid, secret), audience=audience)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    free = post_token(
        http, None, headers=basic_auth(cid, secret), audience="https://free-api.example"
    )
    assert free.status_code == 200
    bound = post_token(http, make_cert(), headers=basic_auth(cid, secret), audience=audience)
    assert "cnf" in claims(bound)
    with app.app_context():
        assert db.session.query(ResourceServer).filter_by(identifier=audience).one()


def test_introspection_shows_cnf(client, factory):
    cid, secret = factory.client()
    cert = make_cert()
    token = post_token(client, cert, headers=basic_auth(cid, secret)).get_json()["access_token"]
    answer = client.post(
        "/oauth2/introspect", data={"token": token}, headers=basic_auth(cid, secret)
    ).get_json()
    assert answer["active"] is True
    assert answer["cnf"] == {"x5t#S256": cert.thumbprint}


def test_mtls_authenticates_at_introspection(client, factory):
    cid = dn_client(factory, "CN=rs")
    cert = make_cert(name((NameOID.COMMON_NAME, "rs")))
    token = claims(post_token(client, cert, client_id=cid))
    answer = client.post(
        "/oauth2/introspect",
        data={"token": "x", "client_id": cid},
        headers={"Client-Cert": cert.rfc9440()},
        environ_base=PROXY,
    )
    assert answer.status_code == 200
    assert answer.get_json() == {"active": False}
    assert token["cnf"]["x5t#S256"] == cert.thumbprint


# --- the management API checks a bound admin token's certificate -------------------------


def test_management_api_needs_the_bound_certificate(client, factory):
    cid, secret = factory.admin("acme")
    cert = make_cert()
    token = post_token(client, cert, headers=basic_auth(cid, secret)).get_json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    with_cert = client.get(
        "/api/v1/clients", headers={**auth, "Client-Cert": cert.rfc9440()}, environ_base=PROXY
    )
    assert with_cert.status_code == 200
    for headers, environ in [
        (auth, PROXY),  # no certificate
        ({**auth, "Client-Cert": make_cert().rfc9440()}, PROXY),  # another one
        ({**auth, "Client-Cert": cert.rfc9440()}, ELSEWHERE),  # not from the proxy
        ({**auth, "Client-Cert": ":bad:"}, PROXY),  # malformed
    ]:
        response = client.get("/api/v1/clients", headers=headers, environ_base=environ)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == (
            'Bearer error="invalid_token", DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
        )
        assert response.get_json()["code"] == "invalid_token"


def test_unbound_admin_token_ignores_certificates(client, factory):
    headers = factory.admin_headers("acme")
    response = client.get(
        "/api/v1/clients", headers={**headers, "Client-Cert": ":bad:"}, environ_base=PROXY
    )
    assert response.status_code == 200


# --- metadata -----------------------------------------------------------------------------


def test_metadata_announces_mtls(client):
    body = client.get("/.well-known/oauth-authorization-server").get_json()
    assert body["tls_client_certificate_bound_access_tokens"] is True
    for method in ("tls_client_auth", "self_signed_tls_client_auth"):
        assert method in body["token_endpoint_auth_methods_supported"]
        assert method in body["introspection_endpoint_auth_methods_supported"]


# --- proxy formats: nginx and Envoy ---------------------------------------------------------


def test_nginx_format(app, http, factory):
    app.config["CLIENT_CERT_FORMAT"] = "nginx"
    cid = dn_client(factory, "CN=Billing Reader,O=Acme Corp,C=DE")
    cert = make_cert(SUBJECT)
    token = claims(post_token(http, cert, header=cert.nginx(), client_id=cid))
    assert token["cnf"] == {"x5t#S256": cert.thumbprint}
    # The RFC 9440 form is not what this proxy writes: refused as malformed.
    assert post_token(http, cert, client_id=cid).status_code == 400


def test_envoy_xfcc_format(app, http, factory):
    app.config["CLIENT_CERT_FORMAT"] = "xfcc"
    cid = dn_client(factory, "CN=Billing Reader,O=Acme Corp,C=DE")
    cert = make_cert(SUBJECT)
    earlier = make_cert().xfcc()  # an element a farther proxy wrote: not ours
    headers = {"X-Forwarded-Client-Cert": cert.xfcc(earlier)}
    response = http.post(
        "/oauth2/token", data={**GRANT, "client_id": cid}, headers=headers, environ_base=PROXY
    )
    assert claims(response)["cnf"] == {"x5t#S256": cert.thumbprint}
    # Client-Cert is not read in this format, even from the proxy.
    assert post_token(http, cert, client_id=cid).status_code == 401
    # From anyone else, XFCC is ignored as Client-Cert is.
    response = http.post(
        "/oauth2/token", data={**GRANT, "client_id": cid}, headers=headers, environ_base=ELSEWHERE
    )
    assert response.status_code == 401


def test_verify_header_gates_tls_client_auth_only(app, client, factory):
    app.config["CLIENT_CERT_VERIFY_HEADER"] = "Client-Cert-Verify"
    cid = dn_client(factory, "CN=Billing Reader,O=Acme Corp,C=DE")
    cert = make_cert(SUBJECT)
    ok = {"Client-Cert-Verify": "SUCCESS"}
    assert post_token(client, cert, client_id=cid, headers=dict(ok)).status_code == 200
    failed = {"Client-Cert-Verify": "FAILED:unable to verify the first certificate"}
    assert post_token(client, cert, client_id=cid, headers=dict(failed)).status_code == 401
    assert post_token(client, cert, client_id=cid).status_code == 401
    # self-signed and binding need no chain.
    sid, _ = factory.client(create_secret=False)
    private = _registered_key(client, factory, sid)
    own = make_cert(key=private)
    assert post_token(client, own, client_id=sid, headers=dict(failed)).status_code == 200
