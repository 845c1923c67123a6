"""Integration: DPoP-bound admin tokens at the management API (RFC 9449 §7; docs/api.md §1.1, §2).

Tokens come from the token endpoint with a proof; each API call sends
`Authorization: DPoP <token>` and a fresh proof of that call, through HTTP.
"""

from __future__ import annotations

import pytest

from tests.conftest import basic_auth
from tests.oauth.dpop import api_url, make_dpop_key, proof

ALGS = 'algs="ES256 ES384 PS256 RS256 EdDSA"'
CLIENTS = "/api/v1/clients"


@pytest.fixture
def key():
    return make_dpop_key("ES256")


@pytest.fixture
def admin(factory):
    return factory.admin("acme")


def bound_token(http, admin, key, nonce=None) -> str:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={**basic_auth(*admin), "DPoP": proof(key, nonce=nonce)},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"
    return response.get_json()["access_token"]


def call(http, token, value, path=CLIENTS, scheme="DPoP", method="GET"):
    headers = {"Authorization": f"{scheme} {token}"}
    if value is not None:
        headers["DPoP"] = value
    return http.open(path, method=method, headers=headers)


def assert_refused(response, error: str) -> None:
    assert response.status_code == 401, response.get_json()
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == f'DPoP error="{error}", {ALGS}'
    assert response.get_json()["code"] == error


def test_a_bound_token_works_with_its_proof(client, admin, key):
    token = bound_token(client, admin, key)
    response = call(client, token, proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token))
    assert response.status_code == 200, response.get_json()
    # Query ignored in htu (RFC 9449 §4.3); a write with the POST method.
    listed = call(
        client,
        token,
        proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token),
        path=CLIENTS + "?limit=5",
    )
    assert listed.status_code == 200
    created = client.post(
        CLIENTS,
        json={"name": "made-with-dpop", "scopes": ["read"]},
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": proof(key, htm="POST", htu=api_url(CLIENTS), access_token=token),
        },
    )
    assert created.status_code == 201, created.get_json()


def test_a_bound_token_as_bearer_is_refused(client, admin, key):
    token = bound_token(client, admin, key)
    assert_refused(call(client, token, None, scheme="Bearer"), "invalid_token")
    # Even with a valid proof beside it.
    value = proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token)
    assert_refused(call(client, token, value, scheme="Bearer"), "invalid_token")


def test_a_missing_or_bad_proof_is_refused(client, admin, key):
    token = bound_token(client, admin, key)
    url = api_url(CLIENTS)
    bad = {
        "missing": None,
        "wrong method": proof(key, htm="POST", htu=url, access_token=token),
        "wrong url": proof(key, htm="GET", htu=api_url("/api/v1/audit"), access_token=token),
        "no ath": proof(key, htm="GET", htu=url),
        "ath of another token": proof(key, htm="GET", htu=url, access_token=token + "x"),
        "the token endpoint's proof": proof(key, access_token=token),
        "two proofs": ", ".join([proof(key, htm="GET", htu=url, access_token=token)] * 2),
    }
    for name, value in bad.items():
        response = call(client, token, value)
        assert response.status_code == 401, name
        assert_refused(response, "invalid_dpop_proof")


def test_a_proof_by_another_key_is_refused(client, admin, key):
    """An attacker holding a stolen bound token and their own key gets nowhere."""
    token = bound_token(client, admin, key)
    thief = make_dpop_key("ES256")
    value = proof(thief, htm="GET", htu=api_url(CLIENTS), access_token=token)
    assert_refused(call(client, token, value), "invalid_token")


def test_a_replayed_proof_is_refused(client, admin, key):
    token = bound_token(client, admin, key)
    value = proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token)
    assert call(client, token, value).status_code == 200
    assert_refused(call(client, token, value), "invalid_dpop_proof")


def test_a_replayed_proof_is_refused_on_another_instance(client, make_app, admin, key):
    other = make_app().test_client()
    token = bound_token(client, admin, key)
    value = proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token)
    assert call(client, token, value).status_code == 200
    assert_refused(call(other, token, value), "invalid_dpop_proof")


def test_a_bearer_token_with_the_dpop_scheme_is_refused(client, factory, admin, key):
    token = factory.token(*admin)["access_token"]
    value = proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token)
    assert_refused(call(client, token, value), "invalid_token")
    # As Bearer it keeps working.
    assert call(client, token, None, scheme="Bearer").status_code == 200


def test_challenges_offer_both_schemes(client, factory):
    anonymous = client.get(CLIENTS)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == f"Bearer, DPoP {ALGS}"
    bad = client.get(CLIENTS, headers={"Authorization": "Bearer nope"})
    assert bad.headers["WWW-Authenticate"] == f'Bearer error="invalid_token", DPoP {ALGS}'
    bad_dpop = client.get(CLIENTS, headers={"Authorization": "DPoP nope"})
    assert bad_dpop.headers["WWW-Authenticate"] == f'DPoP error="invalid_token", {ALGS}'


def test_insufficient_scope_answers_in_the_dpop_scheme(client, factory, key):
    reader = factory.admin("acme", scopes=["audit:read"])
    token = bound_token(client, reader, key)
    response = call(client, token, proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token))
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"].startswith('DPoP error="insufficient_scope"')


def test_a_revoked_bound_token_is_refused(client, admin, key):
    token = bound_token(client, admin, key)
    revoked = client.post("/oauth2/revoke", data={"token": token}, headers=basic_auth(*admin))
    assert revoked.status_code == 200
    value = proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token)
    assert_refused(call(client, token, value), "invalid_token")


def test_with_nonces_the_api_asks_for_one(make_app, factory, key):
    app = make_app(DPOP_NONCES=True)
    http = app.test_client()
    admin = factory.admin("acme")
    nonce = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic_auth(*admin)
    ).headers["DPoP-Nonce"]
    token = bound_token(http, admin, key, nonce=nonce)
    first = call(http, token, proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token))
    assert_refused(first, "use_dpop_nonce")
    fresh = first.headers["DPoP-Nonce"]
    value = proof(key, htm="GET", htu=api_url(CLIENTS), access_token=token, nonce=fresh)
    assert call(http, token, value).status_code == 200
