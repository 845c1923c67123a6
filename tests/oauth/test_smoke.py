"""Integration: a token from the token endpoint verifies against the JWKS."""

import jwt

from tests.conftest import basic_auth


def test_token_verifies_against_jwks(client, factory):
    cid, secret = factory.client(scopes=["read"], audiences=["https://api.example.com"])
    body = factory.token(cid, secret)
    jwks = client.get("/.well-known/jwks.json").get_json()
    header = jwt.get_unverified_header(body["access_token"])
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        body["access_token"],
        jwt.PyJWK.from_dict(key).key,
        algorithms=[key["alg"]],
        audience="https://api.example.com",
        issuer="http://localhost:5000",
    )
    assert claims["sub"] == cid
    assert claims["scope"] == "read"
    assert header["typ"] == "at+jwt"


def test_wrong_secret_is_invalid_client(client, factory):
    cid, _ = factory.client()
    response = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(cid, "ccs_wrong"),
    )
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
