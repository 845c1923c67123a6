"""Integration: requests-oauth2client, unmodified, gets DPoP tokens from a real server on loopback
and calls the management API with them (docs/api.md §1.1), with and without nonces.

The library builds its proofs with its own JOSE stack (jwskate): nothing of
ours is shared with the client but HTTP.
"""

from __future__ import annotations

import pytest
import requests
from requests_oauth2client import DPoPKey, DPoPToken, OAuth2Client
from requests_oauth2client.dpop import add_dpop_proof

from app.clients.service import ACCOUNT_MANAGEMENT_SCOPES, create_client
from app.extensions import db
from app.runtime import runtime
from tests.conftest import free_port, serve_wsgi


@pytest.fixture(params=[False, True], ids=["no-nonces", "nonces"])
def served(request, make_app):
    """(base URL, admin client id, secret) of an app served on loopback, ISSUER = its URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(ISSUER=base, DPOP_NONCES=request.param)
    with app.app_context():
        created, _, secret = create_client(
            "acme",
            {
                "name": "rp-admin",
                "client_type": "admin",
                "scopes": list(ACCOUNT_MANAGEMENT_SCOPES),
                "audiences": [app.config["MANAGEMENT_AUDIENCE"]],
            },
            "test",
            runtime().pepper,
        )
        db.session.commit()
        cid = created.id
    for url in serve_wsgi(app, port):
        yield url, cid, secret


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "PS256"])
def test_requests_oauth2client_gets_and_uses_a_dpop_token(served, alg):
    base, cid, secret = served
    oauth2 = OAuth2Client.from_discovery_endpoint(
        url=f"{base}/.well-known/oauth-authorization-server",
        issuer=base,
        auth=(cid, secret),
        dpop_bound_access_tokens=True,
        dpop_alg=alg,
        testing=True,  # loopback http
    )
    token = oauth2.client_credentials()
    assert isinstance(token, DPoPToken)
    assert token.token_type == "DPoP"
    response = requests.get(f"{base}/api/v1/clients", auth=token, timeout=10)
    assert response.status_code == 200, response.text
    assert [c["name"] for c in response.json()["data"]] == ["rp-admin"]
    # Another call: a fresh proof (new jti) each time.
    again = requests.get(f"{base}/api/v1/clients?limit=1", auth=token, timeout=10)
    assert again.status_code == 200, again.text
    # The same token without its proof, as a bearer token, is refused.
    stolen = requests.get(
        f"{base}/api/v1/clients",
        headers={"Authorization": f"Bearer {token.access_token}"},
        timeout=10,
    )
    assert stolen.status_code == 401
    assert stolen.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')


def test_a_token_bound_to_one_key_is_refused_with_another(served):
    base, cid, secret = served
    oauth2 = OAuth2Client(token_endpoint=f"{base}/oauth2/token", auth=(cid, secret), testing=True)
    token = oauth2.client_credentials(dpop=True)
    thief = DPoPKey.generate()
    url = f"{base}/api/v1/clients"
    # The thief's proof, made by the library for this very request and token.
    request = requests.Request("GET", url, headers={"Authorization": f"DPoP {token.access_token}"})
    prepared = request.prepare()
    add_dpop_proof(prepared, dpop_key=thief, access_token=token.access_token)
    with requests.Session() as session:
        refused = session.send(prepared, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith('DPoP error="')
