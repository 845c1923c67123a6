"""Integration: GET /.well-known/jwks.json (docs/api.md §1) against real keys in the database."""

from __future__ import annotations

from datetime import timedelta

import jwt
import sqlalchemy as sa

from app.extensions import db
from app.models import SigningKey
from app.runtime import runtime
from app.signing import keys as keys_service
from app.timeutil import utcnow
from tests.conftest import basic_auth

JWKS = "/.well-known/jwks.json"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def statuses(app) -> dict[str, list[str]]:
    with app.app_context():
        return {s: [k.kid for k in keys] for s, keys in keys_service.keys_by_status().items()}


def rotate(app) -> None:
    with app.app_context():
        keys_service.rotate_keys(
            app.config["SIGNING_ALG"],
            app.config["KEYS_DIR"],
            app.config["KEYS_PASSPHRASE"],
            actor="test",
        )
        db.session.commit()
        runtime().keyring.invalidate()


def published_kids(http) -> list[str]:
    response = http.get(JWKS)
    assert response.status_code == 200
    return [k["kid"] for k in response.get_json()["keys"]]


def test_publishes_current_and_next(client, app):
    keys = statuses(app)
    assert len(keys["current"]) == 1 and len(keys["next"]) == 1
    response = client.get(JWKS)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"keys"}
    assert sorted(k["kid"] for k in body["keys"]) == sorted(keys["current"] + keys["next"])


def test_keys_are_public_and_complete(client):
    for jwk in client.get(JWKS).get_json()["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk), jwk
        assert jwk["use"] == "sig"
        assert jwk["alg"] == "ES256"
        assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
        assert jwk["kid"]
        # Each one loads as a public key.
        assert not hasattr(jwt.PyJWK.from_dict(jwk).key, "private_numbers")


def test_caching_headers_and_conditional_get(client, app):
    response = client.get(JWKS)
    assert response.headers["Cache-Control"] == f"public, max-age={app.config['JWKS_MAX_AGE']}"
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')

    again = client.get(JWKS, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    assert "public, max-age=" in again.headers["Cache-Control"]

    assert client.get(JWKS, headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get(JWKS, headers={"If-None-Match": "*"}).status_code == 304
    listed = client.get(JWKS, headers={"If-None-Match": f'"x", {etag}'})
    assert listed.status_code == 304


def test_etag_changes_when_keys_change(client, app):
    etag = client.get(JWKS).headers["ETag"]
    rotate(app)
    response = client.get(JWKS, headers={"If-None-Match": etag})
    assert response.status_code == 200
    assert response.headers["ETag"] != etag


def test_max_age_is_configurable(app_config):
    from app import create_app

    other = create_app({**app_config, "JWKS_MAX_AGE": 42})
    try:
        response = other.test_client().get(JWKS)
        assert response.headers["Cache-Control"] == "public, max-age=42"
    finally:
        with other.app_context():
            db.engine.dispose()


def test_retired_key_published_until_retires_at(client, app):
    before = statuses(app)
    rotate(app)
    after = statuses(app)
    old = before["current"][0]
    assert after["retired"] == [old]
    assert after["current"] == before["next"]
    kids = published_kids(client)
    assert old in kids
    assert sorted(kids) == sorted(after["current"] + after["next"] + [old])

    with app.app_context():
        key = db.session.get(SigningKey, old)
        assert key.retires_at > utcnow()
        key.retires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
        runtime().keyring.invalidate()
    kids = published_kids(client)
    assert old not in kids
    assert sorted(kids) == sorted(after["current"] + after["next"])


def test_token_of_retired_key_still_verifies_via_jwks(client, app, factory):
    cid, secret = factory.client(scopes=["read"], audiences=["https://api.example.com"])
    token = factory.token(cid, secret)["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    rotate(app)
    new_token = factory.token(cid, secret)["access_token"]
    # The server signs with the promoted key from now on.
    assert jwt.get_unverified_header(new_token)["kid"] != kid
    jwks = client.get(JWKS).get_json()
    for value in (token, new_token):
        header = jwt.get_unverified_header(value)
        jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
        claims = jwt.decode(
            value,
            jwt.PyJWK.from_dict(jwk).key,
            algorithms=["ES256"],
            audience="https://api.example.com",
        )
        assert claims["client_id"] == cid


def test_retired_key_lives_past_longest_token_ttl(client, app, factory):
    factory.client(scopes=["read"], access_token_ttl=7200)
    rotate(app)
    with app.app_context():
        retired = keys_service.keys_by_status()["retired"][0]
        assert retired.retires_at >= utcnow() + timedelta(seconds=7200)


def test_no_keys_is_empty_set(client, app):
    with app.app_context():
        db.session.execute(sa.delete(SigningKey))
        db.session.commit()
        runtime().keyring.invalidate()
    response = client.get(JWKS)
    assert response.status_code == 200
    assert response.get_json() == {"keys": []}


def test_token_kid_is_in_jwks(client, factory):
    cid, secret = factory.client(scopes=["read"])
    response = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(cid, secret),
    )
    kid = jwt.get_unverified_header(response.get_json()["access_token"])["kid"]
    assert kid in published_kids(client)
