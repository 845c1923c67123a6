"""Integration tests: hostile input at the form endpoints (/oauth2/*) never gets a 5xx.

Property-based (hypothesis) with a bounded number of examples: random bytes,
parameters, content types and authorization headers, some of them carrying a
real client's credentials so the deeper paths (scope, audience) are reached.
Every answer must be RFC 6749 JSON with Cache-Control: no-store.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import basic_auth

ENDPOINTS = ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"]
PARAMS = [
    "grant_type",
    "scope",
    "resource",
    "audience",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "token",
    "token_type_hint",
]
RFC6749_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "unsupported_token_type",
    "slow_down",
    "temporarily_unavailable",
}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@pytest.fixture
def app_config(base_config, migrated) -> dict:
    # Limits off: a fuzz run fails authentication hundreds of times and must
    # keep reaching the code behind the limiter.
    return {**base_config, "AUTH_FAILURE_LIMIT_CLIENT": 0, "AUTH_FAILURE_LIMIT_ADDRESS": 0}


@pytest.fixture
def known(factory) -> dict:
    cid, secret = factory.client(scopes=["read", "write"], audiences=["https://api.example"])
    token = factory.token(cid, secret)["access_token"]
    return {"client_id": cid, "secret": secret, "token": token}


text = st.text(max_size=40) | st.sampled_from(
    [
        "client_credentials",
        "read write",
        "https://api.example",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "\x00",
        "%00",
        "\ud800",
        "a" * 5000,
    ]
)


def _encode_value(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


@st.composite
def requests(draw, known_values: dict):
    """A raw request: (body bytes, headers)."""
    knowns = st.sampled_from(
        [known_values["client_id"], known_values["secret"], known_values["token"]]
    )
    value = text | knowns
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(PARAMS) | st.text(max_size=10), value), max_size=8)
    )
    kind = draw(st.sampled_from(["form", "form", "raw", "json"]))
    if kind == "form":
        from urllib.parse import quote_from_bytes

        body = "&".join(
            f"{quote_from_bytes(_encode_value(k))}={quote_from_bytes(_encode_value(v))}"
            for k, v in pairs
        ).encode()
        if draw(st.booleans()):
            # Raw, unencoded bytes spliced in: invalid UTF-8, NULs, stray % and &.
            body += draw(st.binary(max_size=30))
    elif kind == "json":
        body = json.dumps(dict(pairs)).encode()
    else:
        body = draw(st.binary(max_size=200))
    headers = {}
    content_type = draw(
        st.sampled_from(
            [
                "application/x-www-form-urlencoded",
                "application/x-www-form-urlencoded; charset=latin-1",
                "application/json",
                "text/plain",
                "multipart/form-data; boundary=x",
                None,
            ]
        )
    )
    if content_type:
        headers["Content-Type"] = content_type
    auth = draw(st.sampled_from(["none", "good", "random", "garbage"]))
    if auth == "good":
        headers.update(basic_auth(known_values["client_id"], known_values["secret"]))
    elif auth == "random":
        user = draw(value)
        password = draw(value)
        raw = _encode_value(user) + b":" + _encode_value(password)
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    elif auth == "garbage":
        headers["Authorization"] = draw(
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
        )
    return body, headers


def assert_rfc6749(response) -> None:
    assert response.status_code < 500, response.get_data()[:300]
    # Every endpoint here exists and takes POST: these would mean a missing route.
    assert response.status_code not in (404, 405), response.get_data()[:300]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if response.status_code == 200:
        # Success bodies are each endpoint's own (RFC 7009 §2.2: revocation may send none).
        return
    body = response.get_json()
    assert isinstance(body, dict), response.get_data()[:300]
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert body["error"] in RFC6749_ERRORS, body


@pytest.mark.parametrize("path", ENDPOINTS)
def test_form_endpoints_survive_random_requests(app, client, known, path):
    @FUZZ
    @given(request=requests(known))
    def run(request):
        body, headers = request
        response = client.post(path, data=body, headers=headers)
        assert_rfc6749(response)

    run()


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "body",
    [
        b"grant_type=client_credentials&client_id=%00&client_secret=x",
        b"grant_type=client_credentials&client_id=\xff\xfe&client_secret=x",
        b"grant_type=client_credentials&scope=" + b"%ff" * 10,
        b"grant_type=client_credentials&" + b"&".join(b"p%d=1" % i for i in range(500)),
        b"grant_type=client_credentials&grant_type=client_credentials",
        b"%",
        b"=&=&&==",
        b"grant_type=client_credentials&client_id=" + b"a" * 60000,
    ],
)
def test_form_endpoints_refuse_malformed_bodies(client, path, body):
    response = client.post(
        path, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_rfc6749(response)
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "client_id",
    ["\x00", "a\x00b", "é" * 10, "x" * 70, "x" * 5000, "%00", "\ud800"],
)
def test_hostile_client_ids_in_basic_auth(client, path, client_id):
    raw = client_id.encode("utf-8", "surrogatepass") + b":secret"
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    response = client.post(path, data={"grant_type": "client_credentials"}, headers=headers)
    assert_rfc6749(response)
    # No such client: the one failed-authentication answer (RFC 6749 §5.2).
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_bodies_over_64_kib_are_413_in_rfc6749_shape(client, path):
    body = b"grant_type=client_credentials&scope=" + b"a" * (64 * 1024)
    response = client.post(
        path, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 413
    assert_rfc6749(response)


def test_chunked_body_over_64_kib_is_413(client):
    """No Content-Length: the limit is enforced while reading the stream."""
    import io

    body = b"grant_type=client_credentials&scope=" + b"a" * (80 * 1024)
    response = client.post(
        "/oauth2/token",
        input_stream=io.BytesIO(body),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Transfer-Encoding": "chunked",
        },
        # As gunicorn sets it for a chunked request: the stream ends by itself.
        environ_base={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert_rfc6749(response)


def test_chunked_body_under_the_limit_is_read_whole(client, factory):
    import io

    cid, secret = factory.client()
    body = b"grant_type=client_credentials&scope=" + b"+" * (60 * 1024)
    response = client.post(
        "/oauth2/token",
        input_stream=io.BytesIO(body),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Transfer-Encoding": "chunked",
            **basic_auth(cid, secret),
        },
        environ_base={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200, response.get_json()
