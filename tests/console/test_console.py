"""Integration: the admin console through Flask's test client, real database and crypto."""

from __future__ import annotations

import html
import json
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from tests.conftest import basic_auth

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET_RE = re.compile(r'id="shown-secret" class="secret" value="([^"]+)"')
CLIENT_ID_RE = re.compile(r'id="shown-client-id">([^<]+)<')


class Console:
    """A browser-like session on the console: cookies, CSRF token from the pages."""

    def __init__(self, http) -> None:
        self.http = http
        self.token = ""

    def get(self, path: str, **kwargs):
        response = self.http.get(path, **kwargs)
        match = CSRF_RE.search(response.get_data(as_text=True))
        if match:
            self.token = match.group(1)
        return response

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.token)
        return self.http.post(path, data=data)

    def shown(self, response):
        """Follow a POST's 303 to the page that shows its secret once (post/redirect/get)."""
        assert response.status_code == 303, response.get_data(as_text=True)
        page = self.get(response.headers["Location"])
        assert page.status_code == 200, page.get_data(as_text=True)
        return page

    def signin(self, client_id: str, secret: str):
        self.get("/console/signin")
        response = self.post("/console/signin", {"client_id": client_id, "client_secret": secret})
        if response.status_code == 303:
            # Signing in starts a new session with a new CSRF token.
            self.get("/console/clients")
        return response

    def create(self, **fields) -> tuple[str, str, object]:
        """Create a client through the form; returns (id, shown secret, response)."""
        self.get("/console/clients/new")
        response = self.shown(self.post("/console/clients/new", fields))
        text = response.get_data(as_text=True)
        return CLIENT_ID_RE.search(text).group(1), SECRET_RE.search(text).group(1), response


@pytest.fixture
def console(client) -> Console:
    return Console(client)


@pytest.fixture
def system_admin(factory, console) -> str:
    cid, secret = factory.admin("system")
    assert console.signin(cid, secret).status_code == 303
    return cid


def token_status(http, client_id: str, secret: str) -> int:
    return http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(client_id, secret),
    ).status_code


def audit(http, factory) -> list[dict]:
    headers = factory.admin_headers("system")
    return http.get("/api/v1/audit-events?limit=100", headers=headers).get_json()["data"]


# --- Sign-in, session cookie, CSRF ---------------------------------------------------


def test_signin_sets_a_strict_httponly_cookie_scoped_to_the_console(factory, console):
    cid, secret = factory.admin("acme")
    response = console.signin(cid, secret)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/console/clients")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("ccserver_console=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # the test issuer is http://
    assert secret not in cookie
    page = console.get("/console/clients")
    assert page.status_code == 200
    assert cid in page.get_data(as_text=True)


def test_cookie_is_secure_when_the_issuer_is_https(make_app, factory):
    https_app = make_app(ISSUER="https://auth.example.com")
    cid, secret = factory.admin("acme")
    response = Console(https_app.test_client()).signin(cid, secret)
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]


@pytest.mark.parametrize("kind", ["wrong_secret", "standard_client", "disabled_admin", "unknown"])
def test_signin_refused_alike(factory, console, client, kind):
    admin_id, admin_secret = factory.admin("acme")
    if kind == "wrong_secret":
        cid, secret = admin_id, "ccs_wrong"
    elif kind == "standard_client":
        cid, secret = factory.client("acme")
    elif kind == "disabled_admin":
        cid, secret = factory.admin("acme")
        console.signin(admin_id, admin_secret)
        console.post(f"/console/clients/{cid}/state", {"action": "disable", "confirm": "yes"})
        console.post("/console/signout")
    else:
        cid, secret = "no-such-client", admin_secret
    response = console.signin(cid, secret)
    assert response.status_code == 401
    assert "Sign-in failed" in response.get_data(as_text=True)
    assert console.get("/console/clients").status_code == 302


def test_signin_is_rate_limited_like_the_token_endpoint(make_app, factory):
    limited = make_app(AUTH_FAILURE_LIMIT_CLIENT=3)
    cid, secret = factory.admin("acme")
    console = Console(limited.test_client())
    for _ in range(3):
        assert console.signin(cid, "ccs_wrong").status_code == 401
    response = console.signin(cid, secret)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1


def test_signin_limits_are_per_address_then_client_wide(make_app, factory):
    """A client blocked from one address signs in from another, until the client-wide limit."""
    limited = make_app(AUTH_FAILURE_LIMIT_CLIENT=3, AUTH_FAILURE_LIMIT_CLIENT_TOTAL=5)
    cid, secret = factory.admin("acme")

    def console_from(address: str) -> Console:
        http = limited.test_client()
        http.environ_base["REMOTE_ADDR"] = address
        return Console(http)

    attacker, home = console_from("203.0.113.66"), console_from("198.51.100.10")
    for _ in range(3):
        assert attacker.signin(cid, "ccs_wrong").status_code == 401
    assert attacker.signin(cid, secret).status_code == 429
    assert home.signin(cid, secret).status_code == 303
    # Two failures more from a third address: five in all, so no address works now.
    elsewhere = console_from("192.0.2.44")
    for _ in range(2):
        assert elsewhere.signin(cid, "ccs_wrong").status_code == 401
    for console in (elsewhere, console_from("192.0.2.45"), console_from("198.51.100.10")):
        response = console.signin(cid, secret)
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1


def test_form_posts_without_a_valid_csrf_token_are_refused(factory, console, client):
    cid, secret = factory.admin("acme")
    console.get("/console/signin")
    # Sign-in itself needs the token (no login CSRF).
    form = {"client_id": cid, "client_secret": secret}
    assert console.post("/console/signin", form, csrf=False).status_code == 403
    assert console.signin(cid, secret).status_code == 303
    target, _ = factory.client("acme", scopes=["read"])
    for data in ({}, {"csrf_token": ""}, {"csrf_token": "forged-" + console.token[7:]}):
        body = {"name": "sneaky", **data}
        assert console.post("/console/clients/new", body, csrf=False).status_code == 403
        state = {"action": "lock", **data}
        assert (
            console.post(f"/console/clients/{target}/state", state, csrf=False).status_code == 403
        )
    listing = console.get("/console/clients?name_prefix=sneaky").get_data(as_text=True)
    assert "sneaky" not in listing.split("<tbody>")[1]
    assert not [e for e in audit(client, factory) if e["actor"] == cid]


def test_csrf_token_of_another_session_is_refused(factory, client, app):
    cid, secret = factory.admin("acme")
    first = Console(app.test_client())
    second = Console(app.test_client())
    first.signin(cid, secret)
    second.signin(cid, secret)
    first.get("/console/clients")
    second.get("/console/clients")
    assert first.token != second.token
    data = {"csrf_token": second.token, "name": "crossed"}
    assert first.post("/console/clients/new", data, csrf=False).status_code == 403


def test_pages_need_a_session(console):
    for path in ("/console/", "/console/clients", "/console/audit", "/console/clients/new"):
        response = console.get(path)
        assert response.status_code == 302
        assert "/console/signin" in response.headers["Location"]
    response = console.post("/console/clients/new", {"name": "x"})
    assert response.status_code == 303


def test_signout_ends_the_session(factory, console):
    cid, secret = factory.admin("acme")
    console.signin(cid, secret)
    console.get("/console/clients")
    assert console.post("/console/signout").status_code == 303
    assert console.get("/console/clients").status_code == 302


def test_session_ends_when_its_secret_is_deleted(factory, console, app):
    cid, secret = factory.admin("acme")
    console.signin(cid, secret)
    assert console.get("/console/clients").status_code == 200
    other_admin = Console(app.test_client())
    other_id, other_secret = factory.admin("acme")
    other_admin.signin(other_id, other_secret)
    other_admin.get(f"/console/clients/{cid}")
    # Rotating without grace expires the secret the first session signed in with.
    response = other_admin.post(
        f"/console/clients/{cid}/secrets/rotate", {"grace_period": "0", "confirm": "yes"}
    )
    assert response.status_code == 303
    assert console.get("/console/clients").status_code == 302


def test_next_parameter_cannot_leave_the_console(factory, app):
    cid, secret = factory.admin("acme")
    for target, expected in (
        ("https://evil.example/", "/console/clients"),
        ("//evil.example/console/", "/console/clients"),
        ("/console/audit", "/console/audit"),
    ):
        fresh = Console(app.test_client())
        fresh.get("/console/signin")
        response = fresh.post(
            "/console/signin", {"client_id": cid, "client_secret": secret, "next": target}
        )
        assert response.headers["Location"] == expected


def test_console_pages_are_not_cached_and_forbid_inline_scripts(system_admin, console):
    response = console.get("/console/clients")
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    text = response.get_data(as_text=True)
    assert "<script>" not in text and "http://" not in text.replace("http://localhost", "")
    css = console.get("/console/static/console.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    css.close()


# --- Clients -------------------------------------------------------------------------


def test_create_client_shows_a_working_secret_once_and_audits_the_admin(
    system_admin, console, client, factory
):
    factory.resource_server("acme", "https://api.example.com")
    cid, secret, response = console.create(
        name="web-reader",
        friendly_name="Web reader",
        scopes="read write",
        audiences="https://api.example.com",
        tags="test, web",
        access_token_ttl="600",
        account_id="acme",
    )
    assert secret.startswith("ccs_")
    assert token_status(client, cid, secret) == 200
    detail = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    assert secret not in detail
    assert "Web reader" in detail and "acme" in detail
    created = [e for e in audit(client, factory) if e["target"] == cid]
    assert created and created[0]["actor"] == system_admin
    assert created[0]["action"] == "client.created"


def test_create_client_validation_errors_rerender_the_form(system_admin, console):
    console.get("/console/clients/new")
    response = console.post("/console/clients/new", {"name": "Bad Name!", "access_token_ttl": "5"})
    assert response.status_code == 400
    text = html.unescape(response.get_data(as_text=True))
    assert "name:" in text and "access_token_ttl:" in text
    assert 'value="Bad Name!"' in text
    console.create(name="taken")
    response = console.post("/console/clients/new", {"name": "taken"})
    assert response.status_code == 409
    assert "already exists" in response.get_data(as_text=True)


def test_tenancy_matches_the_api(factory, console, app):
    acme_client, _ = factory.client("acme", name="acme-app")
    other_client, _ = factory.client("globex", name="globex-app")
    cid, secret = factory.admin("acme")
    console.signin(cid, secret)
    listing = console.get("/console/clients").get_data(as_text=True)
    assert "acme-app" in listing and "globex-app" not in listing
    assert console.get(f"/console/clients/{other_client}").status_code == 404
    assert console.post(
        f"/console/clients/{other_client}/state", {"action": "lock"}
    ).status_code == (404)
    # An account admin cannot create in another account: the field is ignored.
    new_id, _, _ = console.create(name="mine", account_id="globex")
    assert "acme" in console.get(f"/console/clients/{new_id}").get_data(as_text=True)

    system = Console(app.test_client())
    system.signin(*factory.admin("system"))
    listing = system.get("/console/clients").get_data(as_text=True)
    assert "acme-app" in listing and "globex-app" in listing
    filtered = system.get("/console/clients?account_id=globex").get_data(as_text=True)
    assert "globex-app" in filtered and "acme-app" not in filtered
    assert acme_client


def test_search_filters_and_keyset_paging(factory, console):
    for i in range(27):
        factory.client("acme", name=f"svc-{i:02d}", tags=["batch"] if i % 2 else [])
    factory.client("acme", name="other-admin-ish", client_type="admin", scopes=["clients:read"])
    console.signin(*factory.admin("acme", scopes=["clients:read", "clients:write"]))

    def names(text: str) -> list[str]:
        body = text.split("<tbody>")[1]
        return re.findall(r'/console/clients/[0-9a-f-]+">([^<]+)</a>', body)

    first = console.get("/console/clients?name_prefix=svc-").get_data(as_text=True)
    page1 = names(first)
    assert len(page1) == 25
    next_url = html.unescape(re.search(r'href="([^"]+)" rel="next"', first).group(1))
    assert "name_prefix=svc-" in next_url
    page2 = names(console.get(next_url).get_data(as_text=True))
    assert sorted(page1 + page2) == [f"svc-{i:02d}" for i in range(27)]

    tagged = names(console.get("/console/clients?tag=batch").get_data(as_text=True))
    assert len(tagged) == 13 and all(int(n[4:]) % 2 for n in tagged)
    admins = names(console.get("/console/clients?client_type=admin").get_data(as_text=True))
    assert "other-admin-ish" in admins and not any(n.startswith("svc-") for n in admins)
    response = console.get("/console/clients?cursor=forged.cursor")
    assert response.status_code == 400


def test_edit_client_and_stale_form(system_admin, console, client, factory):
    cid, secret, _ = console.create(name="editable", scopes="read")
    page = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    form = {
        "version": version,
        "name": "editable",
        "friendly_name": "Edited",
        "scopes": "read write",
        "audiences": "",
        "client_type": "standard",
        "access_token_ttl": "900",
        "tags": "",
    }
    response = console.post(f"/console/clients/{cid}/edit", form)
    assert response.status_code == 303
    api = client.get(f"/api/v1/clients/{cid}", headers=factory.admin_headers("system")).get_json()
    assert api["friendly_name"] == "Edited"
    assert api["scopes"] == ["read", "write"]
    assert api["access_token_ttl"] == 900
    # The same form again carries the old version: refused, nothing changes.
    response = console.post(f"/console/clients/{cid}/edit", {**form, "friendly_name": "Stale"})
    assert response.status_code == 412
    api = client.get(f"/api/v1/clients/{cid}", headers=factory.admin_headers("system")).get_json()
    assert api["friendly_name"] == "Edited"


def test_lock_blocks_changes_in_console_and_api_until_unlocked(
    system_admin, console, client, factory
):
    cid, _, _ = console.create(name="lockable")
    assert console.post(f"/console/clients/{cid}/state", {"action": "lock"}).status_code == 303
    headers = factory.admin_headers("system")
    response = client.patch(f"/api/v1/clients/{cid}", json={"owner": "x@y"}, headers=headers)
    assert response.status_code == 409
    assert response.get_json()["code"] == "client_locked"
    response = console.post(f"/console/clients/{cid}/secrets", {"expires_in": "0"})
    assert response.status_code == 409
    assert "locked" in response.get_data(as_text=True)
    response = console.post(f"/console/clients/{cid}/delete", {"confirm_name": "lockable"})
    assert response.status_code == 409
    assert console.post(f"/console/clients/{cid}/state", {"action": "unlock"}).status_code == 303
    response = client.patch(f"/api/v1/clients/{cid}", json={"owner": "x@y"}, headers=headers)
    assert response.status_code == 200


def test_disable_and_enable(system_admin, console, client):
    cid, secret, _ = console.create(name="switch")
    console.post(f"/console/clients/{cid}/state", {"action": "disable", "confirm": "yes"})
    assert token_status(client, cid, secret) == 401
    console.post(f"/console/clients/{cid}/state", {"action": "enable"})
    assert token_status(client, cid, secret) == 200
    assert console.post(f"/console/clients/{cid}/state", {"action": "explode"}).status_code == 400


def test_delete_needs_confirmation(system_admin, console, client, factory):
    cid, secret, _ = console.create(name="doomed")
    page = console.get(f"/console/clients/{cid}/delete")
    assert page.status_code == 200 and "cannot be undone" in page.get_data(as_text=True)
    response = console.post(f"/console/clients/{cid}/delete", {"confirm_name": "wrong"})
    assert response.status_code == 400
    assert token_status(client, cid, secret) == 200
    response = console.post(f"/console/clients/{cid}/delete", {"confirm_name": "doomed"})
    assert response.status_code == 303
    assert console.get(f"/console/clients/{cid}").status_code == 404
    assert token_status(client, cid, secret) == 401
    deleted = [e for e in audit(client, factory) if e["action"] == "client.deleted"]
    assert deleted[0]["target"] == cid and deleted[0]["actor"] == system_admin


def test_scopes_of_the_admin_client_apply(factory, console):
    console.signin(*factory.admin("acme", scopes=["clients:read"]))
    assert console.get("/console/clients").status_code == 200
    assert "New client" not in console.get("/console/clients").get_data(as_text=True)
    assert console.get("/console/clients/new").status_code == 403
    assert console.get("/console/audit").status_code == 403


# --- Secrets and keys -------------------------------------------------------------------


def test_secrets_add_rotate_delete(system_admin, console, client, factory):
    cid, first, _ = console.create(name="rotating")
    response = console.shown(
        console.post(
            f"/console/clients/{cid}/secrets", {"description": "ci deploy", "expires_in": "86400"}
        )
    )
    second = SECRET_RE.search(response.get_data(as_text=True)).group(1)
    assert token_status(client, cid, second) == 200
    headers = factory.admin_headers("system")
    listed = client.get(f"/api/v1/clients/{cid}/secrets", headers=headers).get_json()["data"]
    described = [s for s in listed if s["description"] == "ci deploy"]
    assert described and described[0]["expires_at"] is not None

    response = console.shown(
        console.post(
            f"/console/clients/{cid}/secrets/rotate", {"grace_period": "0", "confirm": "yes"}
        )
    )
    third = SECRET_RE.search(response.get_data(as_text=True)).group(1)
    assert token_status(client, cid, third) == 200
    assert token_status(client, cid, first) == 401
    assert token_status(client, cid, second) == 401

    response = console.shown(
        console.post(
            f"/console/clients/{cid}/secrets/rotate", {"grace_period": "3600", "confirm": "yes"}
        )
    )
    fourth = SECRET_RE.search(response.get_data(as_text=True)).group(1)
    assert token_status(client, cid, third) == 200  # still in its grace period

    listed = client.get(f"/api/v1/clients/{cid}/secrets", headers=headers).get_json()["data"]
    third_id = next(s["id"] for s in listed if s["hint"] == third[-4:])
    response = console.post(f"/console/clients/{cid}/secrets/{third_id}/delete", {"confirm": "yes"})
    assert response.status_code == 303
    assert token_status(client, cid, third) == 401
    assert token_status(client, cid, fourth) == 200

    assert console.post(f"/console/clients/{cid}/secrets", {"expires_in": "5"}).status_code == 400
    response = console.post(
        f"/console/clients/{cid}/secrets/rotate", {"grace_period": "-1", "confirm": "yes"}
    )
    assert response.status_code == 400
    actions = {e["action"] for e in audit(client, factory) if e["actor"] == system_admin}
    assert {"secret.created", "secret.rotated", "secret.deleted"} <= actions


def test_keys_generate_register_delete(system_admin, console, client, factory):
    cid, _, _ = console.create(name="keyed")
    posted = console.post(f"/console/clients/{cid}/keys", {"action": "generate"})
    assert posted.headers["Location"].endswith(f"/console/clients/{cid}/keys/new")
    text = html.unescape(console.shown(posted).get_data(as_text=True))
    assert "-----BEGIN PRIVATE KEY-----" in text
    # Shown once: a refresh shows no key and generates none.
    again = console.get(posted.headers["Location"])
    assert again.status_code == 302 and "PRIVATE KEY" not in again.get_data(as_text=True)
    assert console.get(f"/console/clients/{cid}").get_data(as_text=True).count("PRIVATE KEY") == 0

    private = ed25519.Ed25519PrivateKey.generate()
    public_jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    response = console.post(
        f"/console/clients/{cid}/keys", {"action": "register", "public_jwk": json.dumps(public_jwk)}
    )
    assert response.status_code == 303
    headers = factory.admin_headers("system")
    keys = client.get(f"/api/v1/clients/{cid}/keys", headers=headers).get_json()["data"]
    assert len(keys) == 2

    private_jwk = OKPAlgorithm.to_jwk(private, as_dict=True)
    response = console.post(
        f"/console/clients/{cid}/keys",
        {"action": "register", "public_jwk": json.dumps(private_jwk)},
    )
    assert response.status_code == 400
    response = console.post(f"/console/clients/{cid}/keys", {"public_jwk": "{not json"})
    assert response.status_code == 400

    kid = keys[0]["kid"]
    assert console.post(f"/console/clients/{cid}/keys/{kid}/delete").status_code == 303
    keys = client.get(f"/api/v1/clients/{cid}/keys", headers=headers).get_json()["data"]
    assert [k["kid"] for k in keys] != [] and kid not in [k["kid"] for k in keys]


# --- Audit log --------------------------------------------------------------------------


def test_audit_log_page_is_paged_and_scoped(factory, console, app):
    for i in range(27):
        factory.client("acme", name=f"a-{i:02d}")
    globex, _ = factory.client("globex", name="g-0")
    console.signin(*factory.admin("acme"))
    first = console.get("/console/audit").get_data(as_text=True)
    assert first.split("<tbody>")[1].count("client.created") == 25
    assert globex not in first
    next_url = html.unescape(re.search(r'href="([^"]+)" rel="next"', first).group(1))
    second = console.get(next_url).get_data(as_text=True)
    assert second.count("client.created") >= 2

    system = Console(app.test_client())
    system.signin(*factory.admin("system"))
    assert globex in system.get("/console/audit").get_data(as_text=True)


# --- The API's privilege rule holds in the console too ----------------------------------


def test_console_create_cannot_grant_scopes_the_admin_lacks(factory, console, client):
    """A tenant admin with clients:read/write cannot mint an admin with audit:read."""
    console.signin(*factory.admin("acme", scopes=["clients:read", "clients:write"]))
    console.get("/console/clients/new")
    response = console.post(
        "/console/clients/new",
        {"name": "escalated", "client_type": "admin", "scopes": "clients:read audit:read"},
    )
    assert response.status_code == 403
    assert "audit:read" in html.unescape(response.get_data(as_text=True))
    listed = client.get(
        "/api/v1/clients?name_prefix=escalated&account_id=acme",
        headers=factory.admin_headers("system"),
    ).get_json()["data"]
    assert listed == []


def test_console_edit_cannot_grant_itself_scopes_it_lacks(factory, console, client):
    """The same admin cannot edit itself (or another admin) into audit:read."""
    cid, secret = factory.admin("acme", scopes=["clients:read", "clients:write"])
    console.signin(cid, secret)
    page = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    form = {
        "version": version,
        "name": "x",
        "friendly_name": "x",
        "scopes": "clients:read clients:write audit:read",
        "audiences": "",
        "client_type": "admin",
        "access_token_ttl": "900",
        "tags": "",
    }
    api = client.get(f"/api/v1/clients/{cid}", headers=factory.admin_headers("system")).get_json()
    form["name"] = api["name"]
    form["audiences"] = " ".join(api["audiences"])
    response = console.post(f"/console/clients/{cid}/edit", form)
    assert response.status_code == 403
    assert "audit:read" in html.unescape(response.get_data(as_text=True))
    after = client.get(f"/api/v1/clients/{cid}", headers=factory.admin_headers("system")).get_json()
    assert after["scopes"] == ["clients:read", "clients:write"]


def test_console_system_admin_without_keys_scopes_cannot_create_a_keys_admin(factory, console):
    console.signin(*factory.admin("system", scopes=["clients:read", "clients:write"]))
    console.get("/console/clients/new")
    response = console.post(
        "/console/clients/new",
        {"name": "keyadmin", "client_type": "admin", "scopes": "keys:write"},
    )
    assert response.status_code == 403


def test_signin_and_the_token_endpoint_share_one_limit(make_app, factory):
    limited = make_app(AUTH_FAILURE_LIMIT_CLIENT=3)
    cid, secret = factory.admin("acme")
    http = limited.test_client()
    for _ in range(2):
        response = http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(cid, "ccs_wrong"),
        )
        assert response.status_code == 401
    console = Console(http)
    assert console.signin(cid, "ccs_wrong").status_code == 401
    # Three failures in all: both faces now refuse even the right secret.
    assert console.signin(cid, secret).status_code == 429
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic_auth(cid, secret)
    )
    assert response.status_code == 429
