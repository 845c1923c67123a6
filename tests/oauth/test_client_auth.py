"""Integration: client authentication as the authorization server runs it (app.oauth.client_auth).

Through the real server, database and crypto; the failure hook is replaced
by a recorder only to see what it is told.
"""

from __future__ import annotations

import pytest
from authlib.oauth2.rfc6749 import InvalidRequestError
from werkzeug.datastructures import EnvironHeaders

from app.oauth.client_auth import ClientAuthenticationFailed
from app.oauth.requests import RawFormRequest
from app.runtime import runtime_of
from tests.conftest import basic_auth
from tests.oauth.assertions import assertion_form, claims_for, make_key, register_key, sign

FORM = {"CONTENT_TYPE": "application/x-www-form-urlencoded"}


@pytest.fixture
def server(app):
    return runtime_of(app).oauth


@pytest.fixture
def failures(server, monkeypatch) -> list:
    """(client id the hook was told, request.client at that moment) per failed authentication."""
    seen: list = []
    monkeypatch.setattr(server, "on_auth_failure", lambda req, cid: seen.append((cid, req.client)))
    return seen


def raw(body: str, headers: dict | None = None) -> RawFormRequest:
    environ = dict(FORM)
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return RawFormRequest("POST", EnvironHeaders(environ), body.encode())


def authenticate(app, server, request: RawFormRequest, methods, endpoint: str = "token"):
    with app.test_request_context("/oauth2/token", method="POST"):
        form = server.create_oauth2_request(request, endpoint)
        return form, server.authenticate_client(form, methods, endpoint)


def test_each_method_authenticates(app, server, factory):
    cid, secret = factory.client()
    form, client = authenticate(
        app, server, raw("", basic_auth(cid, secret)), ["client_secret_basic"]
    )
    assert client.id == cid and form.client is client
    assert form.auth_method == "client_secret_basic"
    body = f"client_id={cid}&client_secret={secret}"
    form, client = authenticate(app, server, raw(body), ["client_secret_post"])
    assert client.id == cid and form.auth_method == "client_secret_post"


def test_a_method_the_endpoint_does_not_take_is_refused(app, server, factory, failures):
    cid, secret = factory.client()
    with pytest.raises(ClientAuthenticationFailed) as caught:
        authenticate(app, server, raw("", basic_auth(cid, secret)), ["client_secret_post"])
    assert caught.value.status_code == 401
    assert failures == [(cid, None)]


def test_two_methods_are_invalid_request_and_not_counted(app, server, factory, failures):
    cid, secret = factory.client()
    body = f"client_id={cid}&client_secret={secret}"
    with pytest.raises(InvalidRequestError):
        authenticate(app, server, raw(body, basic_auth(cid, secret)), ["client_secret_basic"])
    assert failures == []


def test_failures_tell_the_hook_the_claimed_client(app, server, factory, failures):
    cid, secret = factory.client()
    methods = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
    attempts = [
        raw("", basic_auth(cid, "wrong")),
        raw(f"client_id={cid}&client_secret=wrong"),
        raw("client_secret=wrong"),
        raw("", {"Authorization": "Basic !!"}),
        raw(""),
        raw(f"client_id={cid}&client_assertion_type=x&client_assertion=y"),
    ]
    for attempt in attempts:
        with pytest.raises(ClientAuthenticationFailed):
            authenticate(app, server, attempt, methods)
    assert failures == [
        (cid, None),
        (cid, None),
        (None, None),
        (None, None),
        (None, None),
        (cid, None),
    ]


def test_a_disabled_client_fails_after_its_credentials_check_out(
    app, client, server, factory, failures
):
    """Its id is counted even when the request did not name it (no client_id beside the JWT)."""
    admin = factory.admin_headers("acme")
    cid, _ = factory.client("acme")
    pair = make_key("ES256")
    register_key(client, admin, cid, pair)
    client.patch(f"/api/v1/clients/{cid}", json={"disabled": True}, headers=admin)
    form = assertion_form(sign(pair, claims_for(cid)))
    body = "&".join(f"{name}={value}" for name, value in form.items())
    with pytest.raises(ClientAuthenticationFailed) as caught:
        authenticate(app, server, raw(body), ["private_key_jwt"])
    # No challenge for a client that did not use Basic (RFC 6749 §5.2).
    assert caught.value.realm is None
    assert failures == [(cid, None)]


def test_a_mismatched_client_id_leaves_the_assertion_unused(client, factory):
    """RFC 7521 §4.2 is checked before the jti is spent: the same assertion then still works."""
    admin = factory.admin_headers("acme")
    cid, _ = factory.client("acme")
    other, _ = factory.client("acme")
    pair = make_key("EdDSA")
    register_key(client, admin, cid, pair)
    assertion = sign(pair, claims_for(cid))
    grant = {"grant_type": "client_credentials"}
    refused = client.post(
        "/oauth2/token", data={**grant, **assertion_form(assertion, client_id=other)}
    )
    assert refused.status_code == 401
    accepted = client.post("/oauth2/token", data={**grant, **assertion_form(assertion)})
    assert accepted.status_code == 200, accepted.get_json()


def test_assertion_audience_is_the_endpoint_called(app, client, server, factory):
    """The request names its endpoint; each endpoint takes its own URL in aud (RFC 7523 §3)."""
    admin = factory.admin_headers("acme")
    cid, _ = factory.client("acme")
    pair = make_key("ES256")
    register_key(client, admin, cid, pair)

    def body(path: str) -> str:
        form = assertion_form(sign(pair, claims_for(cid, aud=f"http://localhost:5000{path}")))
        return "&".join(f"{name}={value}" for name, value in form.items())

    for endpoint, path in (
        ("introspection", "/oauth2/introspect"),
        ("revocation", "/oauth2/revoke"),
    ):
        request, authenticated = authenticate(
            app, server, raw(body(path)), ["private_key_jwt"], endpoint
        )
        assert authenticated.id == cid and request.endpoint == endpoint
        with pytest.raises(ClientAuthenticationFailed):
            authenticate(app, server, raw(body(path)), ["private_key_jwt"], "token")
