"""Integration: POST /oauth2/token (docs/api.md §1, RFC 6749 §4.4, RFC 9068, RFC 8707).

Through the Flask test client with the real database and real signing keys.
"""

from __future__ import annotations

import base64
from datetime import timedelta

import jwt
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import ClientSecret
from app.runtime import runtime
from app.timeutil import utcnow
from tests.conftest import ISSUER, basic_auth

TOKEN = "/oauth2/token"
GRANT = {"grant_type": "client_credentials"}
API = "https://api.example.com"
OTHER = "https://other.example.com"


def post_token(http, data=None, headers=None, **kwargs):
    return http.post(TOKEN, data=GRANT if data is None else data, headers=headers or {}, **kwargs)


def verify(http, token: str, audience) -> dict:
    """Decode a token with the JWKS key its kid names."""
    header = jwt.get_unverified_header(token)
    jwks = http.get("/.well-known/jwks.json").get_json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    return jwt.decode(
        token,
        jwt.PyJWK.from_dict(jwk).key,
        algorithms=[jwk["alg"]],
        audience=audience,
        issuer=ISSUER,
    )


def assert_oauth_error(response, status: int, error: str) -> dict:
    """An RFC 6749 §5.2 error body with no-store caching."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == error
    assert isinstance(body.get("error_description", ""), str)
    assert set(body) <= {"error", "error_description", "error_uri"}
    assert response.headers["Cache-Control"] == "no-store"
    return body


@pytest.fixture
def reader(factory):
    """A client with two scopes, two audiences and a 120 s token lifetime."""
    return factory.client(
        account_id="acme",
        scopes=["read", "write"],
        audiences=[API, OTHER],
        access_token_ttl=120,
    )


# --- success -----------------------------------------------------------------


def test_success_body_and_headers(client, reader):
    cid, secret = reader
    response = post_token(client, headers=basic_auth(cid, secret))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 120
    assert body["scope"] == "read write"


def test_jwt_header_and_claims(client, reader, app):
    cid, secret = reader
    body = post_token(client, headers=basic_auth(cid, secret)).get_json()
    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    with app.app_context():
        assert header["kid"] == runtime().keyring.reload().current.kid
    claims = verify(client, token, API)
    assert set(claims) == {
        "iss",
        "sub",
        "client_id",
        "aud",
        "iat",
        "nbf",
        "exp",
        "jti",
        "scope",
        "account_id",
    }
    assert claims["iss"] == ISSUER
    assert claims["sub"] == cid
    assert claims["client_id"] == cid
    # One audience: a plain string, as RFC 7519 §4.1.3 allows.
    assert claims["aud"] == API
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == 120
    assert claims["scope"] == "read write"
    assert claims["account_id"] == "acme"
    assert len(claims["jti"]) >= 16


def test_jti_is_unique(client, reader):
    cid, secret = reader
    jtis = set()
    for _ in range(5):
        token = post_token(client, headers=basic_auth(cid, secret)).get_json()["access_token"]
        jtis.add(jwt.decode(token, options={"verify_signature": False})["jti"])
    assert len(jtis) == 5


def test_default_ttl_is_3600(client, factory):
    cid, secret = factory.client(scopes=["read"])
    body = post_token(client, headers=basic_auth(cid, secret)).get_json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert body["expires_in"] == 3600
    assert claims["exp"] - claims["iat"] == 3600


def test_client_secret_post(client, reader):
    cid, secret = reader
    response = post_token(client, {**GRANT, "client_id": cid, "client_secret": secret})
    assert response.status_code == 200
    claims = verify(client, response.get_json()["access_token"], API)
    assert claims["client_id"] == cid


def test_basic_credentials_are_form_decoded(client, reader):
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding."""
    cid, secret = reader
    raw = f"{cid}:{secret}".replace("-", "%2D").encode()
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    assert post_token(client, headers=headers).status_code == 200


def test_form_content_type_with_charset(client, reader):
    cid, secret = reader
    response = client.post(
        TOKEN,
        data="grant_type=client_credentials",
        headers={
            **basic_auth(cid, secret),
            "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
        },
    )
    assert response.status_code == 200


# --- scope ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        (None, "read write"),
        ("", "read write"),
        ("read", "read"),
        ("write", "write"),
        ("write read", "write read"),
        ("read read", "read"),
    ],
)
def test_scope_granted(client, reader, requested, granted):
    cid, secret = reader
    data = dict(GRANT) if requested is None else {**GRANT, "scope": requested}
    response = post_token(client, data, basic_auth(cid, secret))
    assert response.status_code == 200
    body = response.get_json()
    assert body["scope"] == granted
    assert verify(client, body["access_token"], API)["scope"] == granted


@pytest.mark.parametrize("requested", ["admin", "read admin", "READ", "clients:write"])
def test_unknown_scope_is_invalid_scope(client, reader, requested):
    cid, secret = reader
    response = post_token(client, {**GRANT, "scope": requested}, basic_auth(cid, secret))
    assert_oauth_error(response, 400, "invalid_scope")


# --- resource / audience ---------------------------------------------------------


def test_audience_omitted_is_first_client_audience(client, reader):
    cid, secret = reader
    token = post_token(client, headers=basic_auth(cid, secret)).get_json()["access_token"]
    assert verify(client, token, API)["aud"] == API


def test_audience_parameter(client, reader):
    cid, secret = reader
    response = post_token(client, {**GRANT, "audience": OTHER}, basic_auth(cid, secret))
    assert response.status_code == 200
    assert verify(client, response.get_json()["access_token"], OTHER)["aud"] == OTHER


def test_resource_repeated(client, reader):
    cid, secret = reader
    data = {"grant_type": "client_credentials", "resource": [OTHER, API]}
    response = post_token(client, data, basic_auth(cid, secret))
    assert response.status_code == 200
    claims = verify(client, response.get_json()["access_token"], API)
    assert claims["aud"] == [OTHER, API]


def test_single_resource(client, reader):
    cid, secret = reader
    response = post_token(client, {**GRANT, "resource": OTHER}, basic_auth(cid, secret))
    assert verify(client, response.get_json()["access_token"], OTHER)["aud"] == OTHER


@pytest.mark.parametrize(
    "params",
    [
        {"audience": "https://evil.example.com"},
        {"resource": "https://evil.example.com"},
        {"resource": [API, "https://evil.example.com"]},
        {"audience": ISSUER},
    ],
)
def test_unknown_target_is_invalid_target(client, reader, params):
    cid, secret = reader
    response = post_token(client, {**GRANT, **params}, basic_auth(cid, secret))
    assert_oauth_error(response, 400, "invalid_target")


def test_resource_and_audience_together_is_invalid_request(client, reader):
    cid, secret = reader
    response = post_token(
        client, {**GRANT, "resource": API, "audience": API}, basic_auth(cid, secret)
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_client_without_audiences_gets_default_audience(client, factory):
    cid, secret = factory.client(scopes=["read"], audiences=[])
    token = post_token(client, headers=basic_auth(cid, secret)).get_json()["access_token"]
    # DEFAULT_AUDIENCE is unset in the tests, so it falls back to the issuer.
    assert verify(client, token, ISSUER)["aud"] == ISSUER


def test_configured_default_audience(app_config, factory):
    from app import create_app

    other = create_app({**app_config, "DEFAULT_AUDIENCE": "https://default.example.com"})
    http = other.test_client()
    try:
        cid, secret = factory.client(scopes=["read"], audiences=[])
        token = post_token(http, headers=basic_auth(cid, secret)).get_json()["access_token"]
        claims = verify(http, token, "https://default.example.com")
        assert claims["aud"] == "https://default.example.com"
    finally:
        with other.app_context():
            db.engine.dispose()


def test_client_without_audiences_cannot_name_one(client, factory):
    cid, secret = factory.client(scopes=["read"], audiences=[])
    response = post_token(client, {**GRANT, "audience": ISSUER}, basic_auth(cid, secret))
    assert_oauth_error(response, 400, "invalid_target")


# --- grant type and request shape ----------------------------------------------------


@pytest.mark.parametrize(
    "grant_type", ["authorization_code", "password", "refresh_token", "implicit", "x"]
)
def test_unsupported_grant_type(client, reader, grant_type):
    cid, secret = reader
    response = post_token(client, {"grant_type": grant_type}, basic_auth(cid, secret))
    assert_oauth_error(response, 400, "unsupported_grant_type")


def test_missing_grant_type(client, reader):
    cid, secret = reader
    response = post_token(client, {"scope": "read"}, basic_auth(cid, secret))
    assert_oauth_error(response, 400, "invalid_request")


def test_empty_grant_type(client, reader):
    cid, secret = reader
    response = post_token(client, {"grant_type": ""}, basic_auth(cid, secret))
    assert_oauth_error(response, 400, "invalid_request")


def test_query_string_parameters_are_ignored(client, reader):
    """RFC 6749 §3.2: the request is the form body; the query string does not count."""
    cid, secret = reader
    response = client.post(
        f"{TOKEN}?grant_type=client_credentials",
        data={"scope": "read"},
        headers=basic_auth(cid, secret),
    )
    assert_oauth_error(response, 400, "invalid_request")
    response = client.post(f"{TOKEN}?scope=admin", data=GRANT, headers=basic_auth(cid, secret))
    assert response.status_code == 200
    assert response.get_json()["scope"] == "read write"


@pytest.mark.parametrize("name", ["grant_type", "scope", "audience", "client_id"])
def test_repeated_parameter_is_invalid_request(client, reader, name):
    cid, secret = reader
    value = {"grant_type": "client_credentials", "scope": "read", "audience": API}.get(name, cid)
    # grant_type is already there once, every other parameter is sent twice.
    body = "grant_type=client_credentials" + f"&{name}={value}" * (1 if name == "grant_type" else 2)
    response = client.post(
        TOKEN,
        data=body,
        headers={**basic_auth(cid, secret), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_basic_and_post_together_is_invalid_request(client, reader):
    cid, secret = reader
    response = post_token(
        client, {**GRANT, "client_id": cid, "client_secret": secret}, basic_auth(cid, secret)
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_basic_client_id_must_match_form_client_id(client, reader, factory):
    cid, secret = reader
    other, _ = factory.client()
    response = post_token(client, {**GRANT, "client_id": other}, basic_auth(cid, secret))
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/json", b'{"grant_type": "client_credentials"}'),
        ("text/plain", b"grant_type=client_credentials"),
        ("multipart/form-data; boundary=x", b"--x\r\n--x--\r\n"),
        (None, b"grant_type=client_credentials"),
    ],
)
def test_non_form_body_is_invalid_request(client, reader, content_type, data):
    cid, secret = reader
    headers = basic_auth(cid, secret)
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post(TOKEN, data=data, headers=headers)
    assert 400 <= response.status_code < 500
    assert_oauth_error(response, response.status_code, "invalid_request")


@pytest.mark.parametrize(
    "data",
    [
        b"grant_type=client_credentials&scope=\xff\xfe",
        b"grant_type=client_credentials&scope=%FF%FE",
        b"grant_type=client_credentials&scope=r%00ead",
        b"\xc3\x28=1&grant_type=client_credentials",
    ],
)
def test_non_utf8_body_is_invalid_request(client, reader, data):
    cid, secret = reader
    response = client.post(
        TOKEN,
        data=data,
        headers={**basic_auth(cid, secret), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_huge_body_is_413_in_oauth_shape(client, reader):
    cid, secret = reader
    response = client.post(
        TOKEN,
        data="grant_type=client_credentials&scope=" + "a" * (64 * 1024),
        headers={**basic_auth(cid, secret), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(response, 413, "invalid_request")


def test_body_just_under_limit_is_accepted(client, reader):
    cid, secret = reader
    body = "grant_type=client_credentials&pad="
    body += "a" * (64 * 1024 - len(body))
    response = client.post(
        TOKEN,
        data=body,
        headers={**basic_auth(cid, secret), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_4xx_in_oauth_shape(client, method):
    response = client.open(TOKEN, method=method)
    assert_oauth_error(response, 405, "invalid_request")
    assert "POST" in response.headers["Allow"]


# --- client authentication failures --------------------------------------------------


def _expire_secret(app, client_id: str) -> None:
    with app.app_context():
        db.session.execute(
            sa.update(ClientSecret)
            .where(ClientSecret.client_id == client_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
        runtime().clients.clear()


def _delete_secrets(app, client_id: str) -> None:
    with app.app_context():
        db.session.execute(sa.delete(ClientSecret).where(ClientSecret.client_id == client_id))
        db.session.commit()
        runtime().clients.clear()


def _failure_cases(app, factory) -> dict[str, tuple[str, str]]:
    """(client_id, secret) pairs that must all fail the same way."""
    good, good_secret = factory.client(scopes=["read"])
    expired, expired_secret = factory.client(scopes=["read"])
    deleted, deleted_secret = factory.client(scopes=["read"])
    disabled, disabled_secret = factory.client(scopes=["read"], disabled=True)
    _expire_secret(app, expired)
    _delete_secrets(app, deleted)
    return {
        "unknown client": ("00000000-0000-0000-0000-000000000000", good_secret),
        "wrong secret": (good, "ccs_" + "x" * 43),
        "other client's secret": (good, expired_secret),
        "expired secret": (expired, expired_secret),
        "deleted secret": (deleted, deleted_secret),
        "disabled client": (disabled, disabled_secret),
        "empty secret": (good, ""),
    }


def test_failed_basic_auth_is_identical_401(client, app, factory):
    responses = {
        name: post_token(client, headers=basic_auth(cid, secret))
        for name, (cid, secret) in _failure_cases(app, factory).items()
    }
    first = responses["wrong secret"]
    body = assert_oauth_error(first, 401, "invalid_client")
    assert first.headers["WWW-Authenticate"] == f'Basic realm="{ISSUER}"'
    for name, response in responses.items():
        assert response.status_code == 401, name
        assert response.data == first.data, name
        assert response.headers["WWW-Authenticate"] == first.headers["WWW-Authenticate"], name
        assert response.headers["Cache-Control"] == "no-store", name
    # The description must not hint at the cause.
    text = body.get("error_description", "").lower()
    for word in ("expired", "disabled", "unknown", "deleted", "not found", "secret"):
        assert word not in text


def test_failed_post_auth_is_identical_401(client, app, factory):
    responses = {
        name: post_token(client, {**GRANT, "client_id": cid, "client_secret": secret})
        for name, (cid, secret) in _failure_cases(app, factory).items()
    }
    first = responses["wrong secret"]
    assert_oauth_error(first, 401, "invalid_client")
    for name, response in responses.items():
        assert response.status_code == 401, name
        assert response.data == first.data, name


def test_disabled_client_with_right_secret_is_401(client, factory):
    cid, secret = factory.client(scopes=["read"], disabled=True)
    response = post_token(client, headers=basic_auth(cid, secret))
    assert_oauth_error(response, 401, "invalid_client")


def test_secret_with_future_expiry_works(client, app, factory):
    cid, secret = factory.client(scopes=["read"])
    with app.app_context():
        db.session.execute(
            sa.update(ClientSecret)
            .where(ClientSecret.client_id == cid)
            .values(expires_at=utcnow() + timedelta(hours=1))
        )
        db.session.commit()
        runtime().clients.clear()
    assert post_token(client, headers=basic_auth(cid, secret)).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + base64.b64encode(b":").decode(),
        "Basic " + base64.b64encode(b"x" * 500 + b":y").decode(),
        "Bearer abc",
        "Digest username=x",
    ],
)
def test_malformed_authorization_header_is_401(client, authorization):
    response = post_token(client, headers={"Authorization": authorization})
    assert_oauth_error(response, 401, "invalid_client")


def test_no_credentials_is_401(client):
    response = post_token(client)
    assert_oauth_error(response, 401, "invalid_client")


def test_client_id_without_secret_is_401(client, reader):
    cid, _ = reader
    response = post_token(client, {**GRANT, "client_id": cid})
    assert_oauth_error(response, 401, "invalid_client")


def test_huge_client_id_is_401(client):
    response = post_token(client, {**GRANT, "client_id": "x" * 5000, "client_secret": "y"})
    assert_oauth_error(response, 401, "invalid_client")
