"""Integration: token introspection (RFC 7662) of our stateless JWTs."""

from __future__ import annotations

import time

import jwt
import pytest

from tests.conftest import basic_auth
from tests.oauth.assertions import (
    ISSUER,
    assertion_form,
    claims_for,
    make_key,
    mint_access_token,
    raw_jws,
    register_key,
    sign,
)

AUDIENCE = "https://api.example.com"
INTROSPECT = "/oauth2/introspect"


@pytest.fixture
def admin(factory):
    return factory.admin_headers("acme")


@pytest.fixture
def resource_server(factory):
    """The introspecting caller: any registered client."""
    return factory.client("acme", name="resource-server")


@pytest.fixture
def issued(factory):
    """A client and a token issued to it: (client_id, secret, access_token)."""
    cid, secret = factory.client("acme", scopes=["read", "write"], audiences=[AUDIENCE])
    return cid, secret, factory.token(cid, secret, scope="read")["access_token"]


def introspect(client, caller, token, **extra):
    return client.post(INTROSPECT, data={"token": token, **extra}, headers=basic_auth(*caller))


def test_active_token(client, resource_server, issued):
    cid, _, token = issued
    response = introspect(client, resource_server, token, token_type_hint="access_token")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    for name in ("iss", "sub", "client_id", "aud", "iat", "nbf", "exp", "jti", "scope"):
        assert body[name] == claims[name], name
    assert body["client_id"] == cid and body["scope"] == "read"
    assert body["account_id"] == "acme"


def test_forged_tokens_with_odd_times_are_inactive(client, resource_server, issued):
    """The deny-list is asked about a token before its signature is checked (app.oauth.rfc9068):
    whatever its unverified claims say, that question must not fail the request."""
    import base64
    import json

    _, _, token = issued
    header, claims, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    for odd in ({"iat": float("inf")}, {"iat": float("nan")}, {"iat": "soon"}, {"jti": 7}):
        forged_claims = json.dumps({**decoded, **odd}).encode()
        forged = ".".join(
            [header, base64.urlsafe_b64encode(forged_claims).rstrip(b"=").decode(), signature]
        )
        response = introspect(client, resource_server, forged)
        assert response.status_code == 200, odd
        assert response.get_json() == {"active": False}, odd
    assert introspect(client, resource_server, token).get_json()["active"] is True


def test_unknown_hint_is_ignored(client, resource_server, issued):
    response = introspect(client, resource_server, issued[2], token_type_hint="refresh_token")
    assert response.get_json()["active"] is True


def test_caller_may_use_private_key_jwt(client, admin, factory, issued):
    caller_id, _ = factory.client("acme")
    pair = make_key("EdDSA")
    register_key(client, admin, caller_id, pair)
    for aud in (ISSUER, f"{ISSUER}/oauth2/token", f"{ISSUER}/oauth2/introspect"):
        form = assertion_form(sign(pair, claims_for(caller_id, aud=aud)), token=issued[2])
        response = client.post(INTROSPECT, data=form)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["active"] is True
    # An assertion meant for the revocation endpoint is not accepted here.
    form = assertion_form(
        sign(pair, claims_for(caller_id, aud=f"{ISSUER}/oauth2/revoke")), token=issued[2]
    )
    assert client.post(INTROSPECT, data=form).status_code == 401
    # And a used one is a replay here too.
    assertion = sign(pair, claims_for(caller_id))
    assert client.post(INTROSPECT, data=assertion_form(assertion, token="x")).status_code == 200
    replay = client.post(INTROSPECT, data=assertion_form(assertion, token="x"))
    assert replay.status_code == 401
    assert replay.get_json()["error"] == "invalid_client"


def test_inactive_cases(app, client, admin, factory, resource_server):
    """Every kind of inactive token answers exactly {"active": false}."""
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    now = int(time.time())
    foreign_key = make_key("ES256")
    revoked = factory.token(cid, secret)["access_token"]
    response = client.post(
        "/oauth2/revoke", data={"token": revoked}, headers=basic_auth(cid, secret)
    )
    assert response.status_code == 200
    cases = {
        "garbage": "not-a-token",
        "empty": "",
        "three-dots": "a.b.c",
        "huge": "a" * 20000,
        "alg-none": raw_jws({"alg": "none", "typ": "at+jwt"}, {"iss": ISSUER, "sub": cid}, b""),
        "expired": mint_access_token(
            app, client_id=cid, iat=now - 7200, nbf=now - 7200, exp=now - 3600
        ),
        "foreign-issuer": mint_access_token(app, client_id=cid, iss="https://evil.example.com"),
        "wrong-typ": mint_access_token(app, client_id=cid, header={"typ": "JWT"}),
        "no-typ": mint_access_token(app, client_id=cid, header={"typ": None}),
        "typ-number": mint_access_token(app, client_id=cid, header={"typ": 5}),
        "unknown-kid": mint_access_token(app, client_id=cid, header={"kid": "no-such-kid"}),
        "kid-list": mint_access_token(app, client_id=cid, header={"kid": ["a"]}),
        "no-jti": mint_access_token(app, client_id=cid, jti=None),
        "not-yet-valid": mint_access_token(app, client_id=cid, nbf=now + 3600),
        "unknown-client": mint_access_token(app, client_id="no-such-client"),
        "foreign-key": jwt.encode(
            claims_for(cid, iss=ISSUER, aud=AUDIENCE),
            foreign_key.private_key,
            algorithm="ES256",
            headers={"typ": "at+jwt", "kid": "attacker"},
        ),
        "revoked": revoked,
    }
    failures = {}
    for name, token in cases.items():
        response = introspect(client, resource_server, token)
        if response.status_code != 200 or response.get_json() != {"active": False}:
            failures[name] = (response.status_code, response.get_json())
    assert failures == {}
    # The minting helper does make active tokens: the cases differ only as named.
    assert introspect(client, resource_server, mint_access_token(app, client_id=cid)).get_json()[
        "active"
    ]


def test_disabled_client_tokens_are_inactive(client, admin, resource_server, issued):
    cid, _, token = issued
    assert introspect(client, resource_server, token).get_json()["active"] is True
    response = client.patch(f"/api/v1/clients/{cid}", json={"disabled": True}, headers=admin)
    assert response.status_code == 200
    assert introspect(client, resource_server, token).get_json() == {"active": False}
    client.patch(f"/api/v1/clients/{cid}", json={"disabled": False}, headers=admin)
    # Disabling set the client's token cut-off: enabling brings no old token back.
    assert introspect(client, resource_server, token).get_json() == {"active": False}


def test_deleted_client_tokens_are_inactive(client, admin, resource_server, issued):
    cid, _, token = issued
    assert client.delete(f"/api/v1/clients/{cid}", headers=admin).status_code == 204
    assert introspect(client, resource_server, token).get_json() == {"active": False}


def test_caller_must_authenticate(client, factory, issued):
    token = issued[2]
    response = client.post(INTROSPECT, data={"token": token})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    cid, _ = factory.client("acme")
    response = client.post(INTROSPECT, data={"token": token}, headers=basic_auth(cid, "ccs_bad"))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert "active" not in response.get_json()


def test_disabled_caller_is_refused(client, admin, resource_server, issued):
    rs_id = resource_server[0]
    client.patch(f"/api/v1/clients/{rs_id}", json={"disabled": True}, headers=admin)
    response = introspect(client, resource_server, issued[2])
    assert response.status_code == 401


def test_bad_requests(client, resource_server):
    response = client.post(INTROSPECT, data={}, headers=basic_auth(*resource_server))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    response = client.post(INTROSPECT, json={"token": "x"}, headers=basic_auth(*resource_server))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    response = client.post(
        INTROSPECT,
        data="token=a&token=b",
        headers={
            **basic_auth(*resource_server),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 400
    assert client.get(INTROSPECT).status_code == 405
