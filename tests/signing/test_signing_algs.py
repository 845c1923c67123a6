"""Integration: SIGNING_ALG and KEYS_PASSPHRASE with real key files and real signatures."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from app.extensions import db
from app.signing import keys as keys_service
from tests.conftest import basic_auth

AUD = "https://api.example.com"
KTY = {"ES256": ("EC", "P-256"), "RS256": ("RSA", None), "PS256": ("RSA", None)}
KTY["EdDSA"] = ("OKP", "Ed25519")


@pytest.fixture(params=["ES256", "RS256", "PS256", "EdDSA"])
def app_config(request, base_config, migrated, tmp_path):
    return {**base_config, "SIGNING_ALG": request.param, "KEYS_DIR": str(tmp_path / "keys")}


def issue(http, factory) -> str:
    cid, secret = factory.client(scopes=["read"], audiences=[AUD])
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(cid, secret),
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def test_token_verifies_with_jwks_key_of_the_alg(client, factory, app_config):
    alg = app_config["SIGNING_ALG"]
    token = issue(client, factory)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg
    assert header["typ"] == "at+jwt"
    jwks = client.get("/.well-known/jwks.json").get_json()["keys"]
    assert {k["alg"] for k in jwks} == {alg}
    jwk = next(k for k in jwks if k["kid"] == header["kid"])
    kty, crv = KTY[alg]
    assert jwk["kty"] == kty
    assert jwk.get("crv") == crv
    if kty == "RSA":
        assert len(jwt.utils.base64url_decode(jwk["n"])) * 8 >= 2048
    claims = jwt.decode(token, jwt.PyJWK.from_dict(jwk).key, algorithms=[alg], audience=AUD)
    assert claims["aud"] == AUD
    # A verifier pinned to another algorithm refuses it.
    other = "RS256" if alg != "RS256" else "ES256"
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(token, jwt.PyJWK.from_dict(jwk).key, algorithms=[other], audience=AUD)


def test_unencrypted_pem_without_passphrase(app, app_config):
    with app.app_context():
        for key in keys_service.keys_by_status()["current"]:
            path = Path(app_config["KEYS_DIR"]) / f"{key.kid}.pem"
            assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
            assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_passphrase_encrypts_pem_files_and_server_signs(base_config, migrated, tmp_path, alg):
    from app import create_app
    from tests.conftest import Factory, empty_tables

    keys_dir = tmp_path / "enc-keys"
    app = create_app(
        {**base_config, "SIGNING_ALG": alg, "KEYS_DIR": str(keys_dir), "KEYS_PASSPHRASE": "s3cret"}
    )
    try:
        with app.app_context():
            empty_tables()
            made = keys_service.init_keys(alg, str(keys_dir), "s3cret")
            db.session.commit()
            kids = [k.kid for k in made]
        assert len(kids) == 2
        for kid in kids:
            data = (keys_dir / f"{kid}.pem").read_bytes()
            assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
            with pytest.raises((TypeError, ValueError)):
                serialization.load_pem_private_key(data, password=None)
            with pytest.raises(ValueError):
                serialization.load_pem_private_key(data, password=b"wrong")
            serialization.load_pem_private_key(data, password=b"s3cret")

        http = app.test_client()
        token = issue(http, Factory(app, http))
        jwk = next(
            k
            for k in http.get("/.well-known/jwks.json").get_json()["keys"]
            if k["kid"] == jwt.get_unverified_header(token)["kid"]
        )
        assert jwt.decode(token, jwt.PyJWK.from_dict(jwk).key, algorithms=[alg], audience=AUD)
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.mark.parametrize("passphrase", [None, "wrong"])
def test_wrong_passphrase_is_503_not_500(base_config, migrated, tmp_path, passphrase):
    """Integration: keys encrypted with one passphrase, server started with another."""
    from app import create_app
    from tests.conftest import Factory, empty_tables

    keys_dir = tmp_path / "enc-keys"
    maker = create_app({**base_config, "KEYS_DIR": str(keys_dir), "KEYS_PASSPHRASE": "good"})
    with maker.app_context():
        empty_tables()
        keys_service.init_keys("ES256", str(keys_dir), "good")
        db.session.commit()
        db.engine.dispose()
    app = create_app({**base_config, "KEYS_DIR": str(keys_dir), "KEYS_PASSPHRASE": passphrase})
    try:
        http = app.test_client()
        ready = http.get("/readyz")
        assert ready.status_code == 503
        jwks = http.get("/.well-known/jwks.json")
        assert jwks.status_code == 200 and len(jwks.get_json()["keys"]) == 2
        cid, secret = Factory(app, http).client(scopes=["read"])
        response = http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(cid, secret),
        )
        assert response.status_code == 503
        assert response.get_json()["error"] == "temporarily_unavailable"
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
