"""Integration: the token endpoint rules of docs/api.md §1 (issue 13, item 5).

Query-string credentials are refused and never logged; the management
audience never shares a token; `create_secret: false`; `allowed_auth_methods`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import requests

from app.http.access_log import ACCESS_LOGGER, DEV_SERVER_LOGGER
from tests.conftest import ISSUER, basic_auth, free_port, serve_wsgi
from tests.oauth.test_token import assert_oauth_error

TOKEN = "/oauth2/token"
GRANT = {"grant_type": "client_credentials"}
CREDENTIAL_NAMES = ["client_id", "client_secret", "client_assertion", "client_assertion_type"]
API = "https://api.example.com"


@pytest.fixture
def reader(factory):
    return factory.client("acme", scopes=["read"], audiences=[API])


def flask_path(app) -> None:
    """A request hook the token fast path does not know sends every request through Flask."""
    app.before_request(lambda: None)


# --- Credentials in the query string --------------------------------------------------------------


@pytest.mark.parametrize("through_flask", [False, True])
@pytest.mark.parametrize("name", CREDENTIAL_NAMES)
def test_credentials_in_the_query_are_invalid_request(app, client, reader, name, through_flask):
    """RFC 6749 §2.3.1: credentials MUST NOT be in the request URI, even beside good ones."""
    if through_flask:
        flask_path(app)
    cid, secret = reader
    response = client.post(f"{TOKEN}?{name}=x", data=GRANT, headers=basic_auth(cid, secret))
    body = assert_oauth_error(response, 400, "invalid_request")
    assert "query" in body["error_description"]
    # Another query parameter is still only ignored.
    assert (
        client.post(f"{TOKEN}?x=1", data=GRANT, headers=basic_auth(cid, secret)).status_code == 200
    )


@pytest.mark.parametrize("endpoint", ["/oauth2/introspect", "/oauth2/revoke"])
@pytest.mark.parametrize("name", CREDENTIAL_NAMES)
def test_credentials_in_the_query_refused_at_introspection_and_revocation(
    client, reader, factory, endpoint, name
):
    cid, secret = reader
    token = factory.token(cid, secret)["access_token"]
    response = client.post(
        f"{endpoint}?{name}={cid}", data={"token": token}, headers=basic_auth(cid, secret)
    )
    assert_oauth_error(response, 400, "invalid_request")
    # Refused, so nothing was revoked.
    answer = client.post(
        "/oauth2/introspect", data={"token": token}, headers=basic_auth(cid, secret)
    )
    assert answer.get_json()["active"] is True


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + " " + repr(getattr(record, "access", "")))


def test_query_string_is_in_no_log_line_of_the_app_or_the_development_server(app, reader):
    """The issue: query-string credentials were written to the dev server's access log."""
    cid, _secret = reader
    leaked = "s3cr3t-in-the-query-" + "x" * 20
    captured = Lines()
    loggers = [logging.getLogger(ACCESS_LOGGER), logging.getLogger(DEV_SERVER_LOGGER)]
    for logger in loggers:
        logger.addHandler(captured)
    try:
        # werkzeug's development server, as `flask run` serves: it logs each request line.
        for base in serve_wsgi(app, free_port()):
            for path in (TOKEN, "/oauth2/introspect", "/api/v1/clients", "/healthz"):
                requests.post(f"{base}{path}?client_id={cid}&client_secret={leaked}", timeout=5)
                requests.get(f"{base}{path}?client_secret={leaked}", timeout=5)
    finally:
        for logger in loggers:
            logger.removeHandler(captured)
    assert any("/oauth2/token" in line and "POST" in line for line in captured.lines)
    assert [line for line in captured.lines if leaked in line or "client_secret" in line] == []


def test_gunicorn_access_log_format_has_no_query_string():
    text = (Path(__file__).resolve().parents[2] / "gunicorn.conf.py").read_text()
    line = next(x for x in text.splitlines() if x.startswith("access_log_format"))
    # %(r)s is the request line and %(q)s the query; %(U)s is the path alone.
    assert "%(U)s" in line and "%(r)s" not in line and "%(q)s" not in line


# --- The management audience alone --------------------------------------------------------------


@pytest.mark.parametrize("through_flask", [False, True])
def test_management_audience_never_shares_a_token(app, client, factory, through_flask):
    if through_flask:
        flask_path(app)
    management = app.config["MANAGEMENT_AUDIENCE"]
    cid, secret = factory.client(
        "system", client_type="admin", scopes=["clients:read"], audiences=[management, API]
    )
    both = client.post(
        TOKEN, data={**GRANT, "resource": [management, API]}, headers=basic_auth(cid, secret)
    )
    assert_oauth_error(both, 400, "invalid_target")
    reversed_order = client.post(
        TOKEN, data={**GRANT, "resource": [API, management]}, headers=basic_auth(cid, secret)
    )
    assert_oauth_error(reversed_order, 400, "invalid_target")
    alone = client.post(
        TOKEN, data={**GRANT, "resource": management}, headers=basic_auth(cid, secret)
    )
    assert alone.status_code == 200
    other = client.post(TOKEN, data={**GRANT, "audience": API}, headers=basic_auth(cid, secret))
    assert other.status_code == 200


# --- Metadata ---------------------------------------------------------------------------------


def test_metadata_offers_no_token_response_type(client):
    body = client.get("/.well-known/oauth-authorization-server").get_json()
    # RFC 8414 §2 requires the member; there is no authorization endpoint, so none.
    assert body["response_types_supported"] == []
    assert "token" not in body["response_types_supported"]
    assert body["grant_types_supported"] == ["client_credentials"]


# --- create_secret: false ---------------------------------------------------------------------


def test_create_without_a_secret(client, factory):
    headers = factory.admin_headers("acme")
    response = client.post(
        "/api/v1/clients", json={"name": "keys-only", "create_secret": False}, headers=headers
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert "client_secret" not in body and "secret_id" not in body
    assert response.headers["Location"].endswith(body["id"])
    secrets = client.get(f"/api/v1/clients/{body['id']}/secrets", headers=headers).get_json()
    assert secrets["data"] == []
    # No secret at all: nothing authenticates as it with a secret.
    denied = client.post(TOKEN, data={**GRANT, "client_id": body["id"], "client_secret": ""})
    assert denied.status_code == 401
    # The default and an explicit true still give a secret.
    for extra in ({}, {"create_secret": True}):
        made = client.post(
            "/api/v1/clients", json={"name": f"with-{len(extra)}", **extra}, headers=headers
        ).get_json()
        assert made["client_secret"] and made["secret_id"]
    wrong = client.post(
        "/api/v1/clients", json={"name": "bad", "create_secret": "no"}, headers=headers
    )
    assert wrong.status_code == 400
    assert [e["field"] for e in wrong.get_json()["errors"]] == ["create_secret"]
    # Not a client field: PATCH and PUT refuse it.
    patched = client.patch(
        f"/api/v1/clients/{body['id']}", json={"create_secret": False}, headers=headers
    )
    assert patched.status_code == 400


def test_console_creates_a_client_without_a_secret(factory, client):
    from tests.console.test_console import Console

    console = Console(client)
    cid, secret = factory.admin("acme")
    assert console.signin(cid, secret).status_code == 303
    console.get("/console/clients/new")
    response = console.post("/console/clients/new", {"name": "no-secret", "no_secret": "1"})
    assert response.status_code == 303
    page = console.get(response.headers["Location"]).get_data(as_text=True)
    assert "no-secret" in page
    headers = factory.admin_headers("acme")
    listed = client.get("/api/v1/clients?name_prefix=no-secret", headers=headers).get_json()
    made = listed["data"][0]["id"]
    assert client.get(f"/api/v1/clients/{made}/secrets", headers=headers).get_json()["data"] == []


# --- allowed_auth_methods ---------------------------------------------------------------------


def _post_auth(cid: str, secret: str) -> dict:
    return {"client_id": cid, "client_secret": secret}


@pytest.mark.parametrize("through_flask", [False, True])
def test_allowed_auth_methods_refuses_every_other_method(app, client, factory, through_flask):
    if through_flask:
        flask_path(app)
    headers = factory.admin_headers("acme")
    cid, secret = factory.client("acme", scopes=["read"])
    assert (
        client.get(f"/api/v1/clients/{cid}", headers=headers).get_json()["allowed_auth_methods"]
        is None
    )
    token = factory.token(cid, secret)["access_token"]

    patched = client.patch(
        f"/api/v1/clients/{cid}",
        json={"allowed_auth_methods": ["client_secret_post"]},
        headers=headers,
    )
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["allowed_auth_methods"] == ["client_secret_post"]
    # The right secret by Basic is now invalid_client, at every endpoint.
    basic = client.post(TOKEN, data=GRANT, headers=basic_auth(cid, secret))
    assert_oauth_error(basic, 401, "invalid_client")
    for endpoint in ("/oauth2/introspect", "/oauth2/revoke"):
        refused = client.post(endpoint, data={"token": token}, headers=basic_auth(cid, secret))
        assert_oauth_error(refused, 401, "invalid_client")
    assert client.post(TOKEN, data={**GRANT, **_post_auth(cid, secret)}).status_code == 200
    answer = client.post("/oauth2/introspect", data={"token": token, **_post_auth(cid, secret)})
    assert answer.get_json()["active"] is True

    # Only private_key_jwt: no secret method works any more.
    client.patch(
        f"/api/v1/clients/{cid}",
        json={"allowed_auth_methods": ["private_key_jwt"]},
        headers=headers,
    )
    assert client.post(TOKEN, data={**GRANT, **_post_auth(cid, secret)}).status_code == 401
    # Back to null: any method again.
    client.patch(f"/api/v1/clients/{cid}", json={"allowed_auth_methods": None}, headers=headers)
    assert client.post(TOKEN, data=GRANT, headers=basic_auth(cid, secret)).status_code == 200


@pytest.mark.parametrize(
    "value", [[], ["none"], ["client_secret_basic", "client_secret_basic"], "client_secret_basic"]
)
def test_allowed_auth_methods_validation(client, factory, value):
    headers = factory.admin_headers("acme")
    response = client.post(
        "/api/v1/clients", json={"name": "m", "allowed_auth_methods": value}, headers=headers
    )
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"].startswith("allowed_auth_methods")


def test_allowed_auth_methods_on_create_and_put(client, factory):
    headers = factory.admin_headers("acme")
    made = client.post(
        "/api/v1/clients",
        json={"name": "m", "allowed_auth_methods": ["client_secret_basic"]},
        headers=headers,
    ).get_json()
    assert made["allowed_auth_methods"] == ["client_secret_basic"]
    assert (
        client.post(
            TOKEN, data=GRANT, headers=basic_auth(made["id"], made["client_secret"])
        ).status_code
        == 200
    )
    post = client.post(TOKEN, data={**GRANT, **_post_auth(made["id"], made["client_secret"])})
    assert_oauth_error(post, 401, "invalid_client")
    # PUT without the field resets it to null.
    put = client.put(f"/api/v1/clients/{made['id']}", json={"name": "m"}, headers=headers)
    assert put.get_json()["allowed_auth_methods"] is None


def test_console_edit_keeps_and_sets_allowed_auth_methods(client, factory):
    from tests.console.test_console import Console

    headers = factory.admin_headers("acme")
    cid, secret = factory.client("acme", name="edited", allowed_auth_methods=["client_secret_post"])
    console = Console(client)
    admin_id, admin_secret = factory.admin("acme")
    assert console.signin(admin_id, admin_secret).status_code == 303
    page = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    assert 'value="client_secret_post" checked' in page
    assert 'value="client_secret_basic" checked' not in page
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    form = {"name": "edited", "client_type": "standard", "access_token_ttl": "3600"}
    response = console.post(
        f"/console/clients/{cid}/edit",
        {
            **form,
            "version": version,
            "allowed_auth_methods": ["client_secret_basic", "private_key_jwt"],
        },
    )
    assert response.status_code in (200, 303), response.get_data(as_text=True)
    shown = client.get(f"/api/v1/clients/{cid}", headers=headers).get_json()
    assert shown["allowed_auth_methods"] == ["client_secret_basic", "private_key_jwt"]
    # Nothing ticked: null.
    page = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    assert (
        console.post(f"/console/clients/{cid}/edit", {**form, "version": version}).status_code
        == 303
    )
    assert (
        client.get(f"/api/v1/clients/{cid}", headers=headers).get_json()["allowed_auth_methods"]
        is None
    )


# --- The Link header ----------------------------------------------------------------------------


def test_link_header_is_built_from_the_issuer_not_the_host(client, factory):
    headers = factory.admin_headers("acme")
    for n in range(3):
        factory.client("acme", name=f"paged-{n}")
    response = client.get("/api/v1/clients?limit=1", headers={**headers, "Host": "evil.example"})
    assert response.status_code == 200
    link = response.headers["Link"]
    assert link.startswith(f"<{ISSUER}/api/v1/clients?")
    assert "evil.example" not in link
