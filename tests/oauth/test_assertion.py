"""Integration: private_key_jwt client authentication (RFC 7523 §2.2, §3) at the token endpoint.

Assertions are built with cryptography and PyJWT exactly as a client would;
every failure must be the same 401 invalid_client.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import basic_auth
from tests.oauth.assertions import (
    ISSUER,
    KEY_KINDS,
    TOKEN_URL,
    KeyPair,
    b64url,
    claims_for,
    make_key,
    raw_jws,
    register_key,
    sign,
    sign_header,
    token_request,
)

AUDIENCE = "https://api.example.com"
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Client authentication failed."}


@pytest.fixture
def admin(factory):
    return factory.admin_headers("acme")


@pytest.fixture
def client_id(factory):
    cid, _ = factory.client("acme", scopes=["read", "write"], audiences=[AUDIENCE])
    return cid


@pytest.fixture
def key(client, admin, client_id) -> KeyPair:
    """An ES256 key registered for the client."""
    pair = make_key("ES256")
    register_key(client, admin, client_id, pair)
    return pair


def assert_invalid_client(response) -> None:
    assert response.status_code == 401, response.get_json()
    assert response.get_json() == INVALID_CLIENT
    # Only Basic gets a WWW-Authenticate challenge (RFC 6749 §5.2).
    assert "WWW-Authenticate" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def access_claims(response, client_id: str) -> dict:
    assert response.status_code == 200, response.get_json()
    token = response.get_json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == claims["client_id"] == client_id
    return claims


@pytest.mark.parametrize("alg", KEY_KINDS)
def test_token_with_each_key_type(client, admin, client_id, alg):
    pair = make_key(alg)
    register_key(client, admin, client_id, pair)
    response = token_request(client, sign(pair, claims_for(client_id)), scope="read")
    claims = access_claims(response, client_id)
    assert claims["scope"] == "read" and claims["aud"] == AUDIENCE
    assert response.headers["Cache-Control"] == "no-store"


def test_server_generated_key_signs_with_returned_pem(client, admin, client_id):
    body = client.post(f"/api/v1/clients/{client_id}/keys", json={}, headers=admin).get_json()
    private = serialization.load_pem_private_key(body["private_key_pem"].encode(), None)
    assertion = jwt.encode(
        claims_for(client_id), private, algorithm="EdDSA", headers={"kid": body["kid"]}
    )
    access_claims(token_request(client, assertion), client_id)
    # The private JWK works as well (PyJWK, as a JOSE library user would load it).
    private_jwk = jwt.PyJWK(body["private_jwk"])
    assertion = jwt.encode(
        claims_for(client_id), private_jwk.key, algorithm="EdDSA", headers={"kid": body["kid"]}
    )
    access_claims(token_request(client, assertion), client_id)


@pytest.mark.parametrize("aud", [ISSUER, TOKEN_URL, [AUDIENCE, TOKEN_URL]])
def test_accepted_audiences(client, key, client_id, aud):
    access_claims(token_request(client, sign(key, claims_for(client_id, aud=aud))), client_id)


def test_without_kid_each_active_key_is_tried(client, admin, client_id):
    register_key(client, admin, client_id, make_key("ES256"))
    second = make_key("ES256")
    register_key(client, admin, client_id, second)
    assertion = sign(second, claims_for(client_id), kid=None)
    access_claims(token_request(client, assertion), client_id)


def test_matching_client_id_parameter_is_accepted(client, key, client_id):
    response = token_request(client, sign(key, claims_for(client_id)), client_id=client_id)
    access_claims(response, client_id)


def test_jku_x5u_and_jwk_headers_are_ignored(client, key, client_id):
    """Header URLs are never fetched; a key embedded in the header is never trusted."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps({"keys": [attacker.public_jwk]}).encode())

        def log_message(self, *args):
            pass

    attacker = make_key("ES256")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks.json"
        evil = {"jku": url, "x5u": url, "jwk": attacker.public_jwk}
        forged = sign(attacker, claims_for(client_id), kid=key.registered_kid, headers=evil)
        assert_invalid_client(token_request(client, forged))
        forged = sign(attacker, claims_for(client_id), kid=None, headers=evil)
        assert_invalid_client(token_request(client, forged))
        # The same headers on an assertion from the registered key change nothing.
        honest = sign(key, claims_for(client_id), headers=evil)
        access_claims(token_request(client, honest), client_id)
    finally:
        server.shutdown()
        server.server_close()
    assert hits == []


def _hs256_with_public_key(pair: KeyPair, claims: dict) -> str:
    """The classic key-confusion forgery: HMAC keyed with the public key."""
    pem = pair.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": pair.registered_kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _bad_cases(pair: KeyPair, cid: str, other: KeyPair) -> dict:
    now = int(time.time())
    ok = claims_for(cid)
    return {
        "wrong-signature": sign(other, claims_for(cid), kid=pair.registered_kid),
        "tampered-claims": ".".join(
            [
                sign(pair, ok).split(".")[0],
                b64url(json.dumps({**ok, "sub": cid + "x"}).encode()),
                sign(pair, ok).split(".")[2],
            ]
        ),
        "expired": sign(pair, claims_for(cid, iat=now - 600, exp=now - 120)),
        "exp-too-far": sign(pair, claims_for(cid, lifetime=3600)),
        "no-exp": sign(pair, claims_for(cid, exp=None)),
        "exp-string": sign(pair, {**ok, "exp": str(now + 60)}),
        # JSON as Python reads it: NaN compares false with every bound.
        "exp-nan": sign(pair, {**ok, "exp": float("nan")}),
        "exp-infinity": sign(pair, {**ok, "exp": float("inf")}),
        "iat-nan": sign(pair, {**ok, "iat": float("nan")}),
        "nbf-infinity": sign(pair, {**ok, "nbf": float("inf")}),
        "no-jti": sign(pair, claims_for(cid, jti=None)),
        "jti-number": sign(pair, {**ok, "jti": 12345}),
        "jti-too-long": sign(pair, {**ok, "jti": "j" * 300}),
        "iat-future": sign(pair, claims_for(cid, iat=now + 600)),
        "nbf-future": sign(pair, claims_for(cid, nbf=now + 600)),
        "wrong-aud": sign(pair, claims_for(cid, aud="https://elsewhere.example.com/token")),
        "aud-introspect-at-token": sign(pair, claims_for(cid, aud=f"{ISSUER}/oauth2/introspect")),
        "no-aud": sign(pair, claims_for(cid, aud=None)),
        "wrong-iss": sign(pair, claims_for(cid, iss="someone-else")),
        "wrong-sub": sign(pair, claims_for(cid, sub="someone-else")),
        "no-sub": sign(pair, claims_for(cid, sub=None)),
        "unknown-client": sign(pair, claims_for("no-such-client")),
        "unknown-kid": sign(pair, claims_for(cid), kid="not-registered"),
        "kid-number": sign_header(pair, {"alg": "ES256", "kid": 7}, ok),
        "alg-number": sign_header(pair, {"alg": 256, "kid": pair.registered_kid}, ok),
        "alg-none": raw_jws({"alg": "none", "kid": pair.registered_kid}, ok, b""),
        "alg-none-no-sig": raw_jws({"alg": "none"}, ok, b"")[:-1],
        "hs256-public-key": _hs256_with_public_key(pair, ok),
        "crit-header": sign(pair, claims_for(cid), headers={"crit": ["exp"], "exp": 1}),
        "huge-header": raw_jws({"alg": "ES256", "kid": "k" * 5000}, ok),
        "non-json-header": raw_jws("not json at all", ok),
        "array-header": raw_jws("[1, 2, 3]", ok),
        "nested-header": raw_jws("[" * 1400 + "]" * 1400, ok),
        "non-json-claims": raw_jws({"alg": "ES256", "kid": pair.registered_kid}, b"{oops"),
        "bad-utf8-claims": raw_jws({"alg": "ES256"}, b"\xff\xfe"),
        "two-segments": "abc.def",
        "not-base64": "a*b.c*d.e*f",
        "empty": "",
        "huge": "a" * 40000 + ".b.c",
    }


def test_bad_assertions_are_identical_401(make_app, key, client_id):
    """One app for every case keeps this fast; each case names itself on failure.

    Every case names the client, so each counts against it: this app's
    per-client limit is above the number of cases (the limits have their
    own tests in tests/hardening/test_rate_limit.py).
    """
    client = make_app(AUTH_FAILURE_LIMIT_CLIENT=100).test_client()
    cases = _bad_cases(key, client_id, make_key("ES256"))
    failures = {}
    for name, assertion in cases.items():
        response = token_request(client, assertion)
        if response.status_code != 401 or response.get_json() != INVALID_CLIENT:
            failures[name] = (response.status_code, response.get_json())
        elif "WWW-Authenticate" in response.headers:
            failures[name] = "WWW-Authenticate"
    assert failures == {}
    assert len(cases) > 30
    # The genuine key still works afterwards.
    access_claims(token_request(client, sign(key, claims_for(client_id))), client_id)


def test_replayed_assertion_is_refused(client, key, client_id):
    assertion = sign(key, claims_for(client_id))
    access_claims(token_request(client, assertion), client_id)
    assert_invalid_client(token_request(client, assertion))
    # Same jti with a fresh signature and exp is still a replay.
    claims = jwt.decode(assertion, options={"verify_signature": False})
    again = sign(key, claims_for(client_id, jti=claims["jti"]))
    assert_invalid_client(token_request(client, again))


def test_jti_spaces_are_per_client(client, admin, factory, key, client_id):
    other_id, _ = factory.client("acme")
    other = make_key("EdDSA")
    register_key(client, admin, other_id, other)
    shared = claims_for(client_id)["jti"]
    access_claims(token_request(client, sign(key, claims_for(client_id, jti=shared))), client_id)
    response = token_request(client, sign(other, claims_for(other_id, jti=shared)))
    access_claims(response, other_id)


def test_deleted_key_is_refused(client, admin, key, client_id):
    url = f"/api/v1/clients/{client_id}/keys/{key.registered_kid}"
    assert client.delete(url, headers=admin).status_code == 204
    assert_invalid_client(token_request(client, sign(key, claims_for(client_id))))


def test_expired_key_is_refused(client, app, admin, client_id):
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import ClientKey
    from app.timeutil import utcnow

    pair = make_key("EdDSA")
    register_key(client, admin, client_id, pair, expires_in=60)
    with app.app_context():
        db.session.execute(sa.update(ClientKey).values(expires_at=utcnow().replace(year=2000)))
        db.session.commit()
        app.extensions["ccserver"].clients.clear()
    assert_invalid_client(token_request(client, sign(pair, claims_for(client_id))))


def test_alg_must_be_the_keys_own(client, admin, client_id):
    """An RSA key registered for PS256 does not verify RS256 assertions, and vice versa."""
    pair = make_key("PS256")
    register_key(client, admin, client_id, pair)
    rs256 = KeyPair(pair.private_key, "RS256", pair.public_jwk, pair.registered_kid)
    assert_invalid_client(token_request(client, sign(rs256, claims_for(client_id))))
    access_claims(token_request(client, sign(pair, claims_for(client_id))), client_id)


def test_mismatched_client_id_parameter(client, key, client_id, factory):
    other_id, _ = factory.client("acme")
    response = token_request(client, sign(key, claims_for(client_id)), client_id=other_id)
    assert_invalid_client(response)


def test_disabled_client_is_refused(client, admin, key, client_id):
    patched = client.patch(f"/api/v1/clients/{client_id}", json={"disabled": True}, headers=admin)
    assert patched.status_code == 200
    assert_invalid_client(token_request(client, sign(key, claims_for(client_id))))


def test_wrong_assertion_type_is_401(client, key, client_id):
    response = client.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            "client_assertion": sign(key, claims_for(client_id)),
        },
    )
    assert_invalid_client(response)


def test_assertion_plus_secret_is_invalid_request(client, factory, admin):
    cid, secret = factory.client("acme")
    pair = make_key("ES256")
    register_key(client, admin, cid, pair)
    response = client.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": sign(pair, claims_for(cid)),
        },
        headers=basic_auth(cid, secret),
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_metadata_lists_private_key_jwt(client):
    body = client.get("/.well-known/oauth-authorization-server").get_json()
    for prefix in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        assert "private_key_jwt" in body[f"{prefix}_auth_methods_supported"]
        algs = body[f"{prefix}_auth_signing_alg_values_supported"]
        assert sorted(algs) == sorted(KEY_KINDS)
        assert "none" not in algs and not any(a.startswith("HS") for a in algs)
    assert body["introspection_endpoint"] == f"{ISSUER}/oauth2/introspect"
    assert body["revocation_endpoint"] == f"{ISSUER}/oauth2/revoke"
