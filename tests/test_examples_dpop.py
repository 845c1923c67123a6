"""Integration: examples/client_dpop.py and examples/resource_server_dpop.py against this server.

The authorization server and the example API run on loopback ports; the
client is requests-oauth2client, unmodified (docs/api.md §1.1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from cryptography.x509.oid import NameOID
from requests_oauth2client import DPoPKey
from requests_oauth2client.dpop import add_dpop_proof

from examples import resource_server_dpop
from examples.client_dpop import call_api, dpop_client
from tests.conftest import free_port, serve_wsgi
from tests.mtls import make_cert
from tests.mtls import name as dn_name

AUDIENCE = "https://api.example.com"


@pytest.fixture
def app_config(live_config) -> dict:
    # The test is the TLS proxy for the certificate-bound case: it talks to
    # both servers from loopback, which they then trust for Client-Cert.
    return {**live_config, "TRUSTED_PROXIES": "127.0.0.1/32"}


@pytest.fixture
def issuer(live_url) -> str:
    return live_url


@pytest.fixture
def api(issuer) -> Iterator[str]:
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    yield from serve_wsgi(resource_server_dpop.create_app(issuer, AUDIENCE, base), api_port)


@pytest.fixture
def reader(factory) -> tuple[str, str]:
    return factory.client(scopes=["read"], audiences=[AUDIENCE])


def test_the_example_client_calls_the_example_api_with_a_dpop_token(issuer, api, reader):
    oauth2 = dpop_client(issuer, *reader, testing=True)
    answer = call_api(oauth2, f"{api}/hello", resource=AUDIENCE)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"hello": reader[0], "dpop": True, "bound_by": ["jkt"]}


def test_the_example_api_refuses_what_rfc_9449_refuses(issuer, api, reader):
    oauth2 = dpop_client(issuer, *reader, testing=True)
    token = oauth2.client_credentials(scope="read", resource=AUDIENCE)
    url = f"{api}/hello"

    def send(key, *, scheme="DPoP", tamper=None, again=None):
        prepared = requests.Request(
            "GET", url, headers={"Authorization": f"{scheme} {token.access_token}"}
        ).prepare()
        if key is not None:
            add_dpop_proof(prepared, dpop_key=key, access_token=token.access_token)
        if tamper:
            prepared.headers["DPoP"] = tamper(prepared.headers["DPoP"])
        if again is not None:
            prepared.headers["DPoP"] = again
        with requests.Session() as session:
            return session.send(prepared, timeout=10)

    good = send(token.dpop_key)
    assert good.status_code == 200
    proof = good.request.headers["DPoP"]
    refused = {
        "as bearer": send(None, scheme="Bearer"),
        "no proof": send(None),
        "another key": send(DPoPKey.generate()),
        "replayed": send(None, again=proof),
        "two proofs": send(token.dpop_key, tamper=lambda p: f"{p}, {p}"),
    }
    for name, response in refused.items():
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"].startswith("DPoP error="), name
    # A plain bearer token still works as Bearer.
    plain = requests.post(
        f"{issuer}/oauth2/token",
        data={"grant_type": "client_credentials", "resource": AUDIENCE},
        auth=reader,
        timeout=10,
    ).json()["access_token"]
    ok = requests.get(url, headers={"Authorization": f"Bearer {plain}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["dpop"] is False


def test_the_example_api_wants_the_certificate_a_token_is_bound_to(issuer, api, factory):
    """RFC 8705 §3: the proxy forwards the client's certificate (RFC 9440
    Client-Cert) to both servers; the API accepts the token with that
    certificate only."""
    dn = "CN=billing,O=Acme"
    cid, _ = factory.client(scopes=["read"], audiences=[AUDIENCE], tls_client_auth_subject_dn=dn)
    cert = make_cert(dn_name((NameOID.ORGANIZATION_NAME, "Acme"), (NameOID.COMMON_NAME, "billing")))
    response = requests.post(
        f"{issuer}/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": cid, "resource": AUDIENCE},
        headers={"Client-Cert": cert.rfc9440()},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    url = f"{api}/hello"
    auth = {"Authorization": f"Bearer {token}"}
    ok = requests.get(url, headers={**auth, "Client-Cert": cert.rfc9440()}, timeout=10)
    assert ok.status_code == 200, ok.text
    assert ok.json()["bound_by"] == ["x5t#S256"]
    other = make_cert(dn_name((NameOID.COMMON_NAME, "someone else")))
    for headers in ({}, {"Client-Cert": other.rfc9440()}, {"Client-Cert": ":bm90IGRlcg==:"}):
        refused = requests.get(url, headers={**auth, **headers}, timeout=10)
        assert refused.status_code == 401, headers
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
