"""Integration: two real gunicorn instances, one database, one Redis.

Instance A and instance B are separate server processes on two loopback
ports. They share only what a real deployment shares: the database (the
test database the `app` fixture has just prepared), Redis (TEST_REDIS_URL
when set), KEYS_DIR and SECRET_PEPPER. Short JWKS_MAX_AGE,
KEY_REFRESH_INTERVAL and KEY_CLOCK_SKEW keep the rotation test to seconds.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
import requests

from app.extensions import db
from app.models import SigningKey
from app.runtime import runtime
from app.signing import keys as keys_service
from app.timeutil import utcnow
from tests.conftest import ISSUER, TEST_PEPPER, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
JWKS_MAX_AGE, REFRESH, SKEW = 2, 1, 1
PUBLISH_DELAY = JWKS_MAX_AGE + REFRESH + SKEW
CACHE_BOUND = 5.0
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Instance:
    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return requests.delete(self.url + path, timeout=10, **kwargs)


def _start(name: str, base_config: dict, tmp_path: Path) -> Instance:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KEYS_PASSPHRASE", "REDIS_URL")}
    env.update(
        DATABASE_URL=base_config["SQLALCHEMY_DATABASE_URI"],
        KEYS_DIR=base_config["KEYS_DIR"],
        SECRET_PEPPER=TEST_PEPPER,
        ISSUER=ISSUER,
        SIGNING_ALG="ES256",
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="1",
        THREADS="4",
        JWKS_MAX_AGE=str(JWKS_MAX_AGE),
        KEY_REFRESH_INTERVAL=str(REFRESH),
        KEY_CLOCK_SKEW=str(SKEW),
        CLIENT_CACHE_TTL="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / f"metrics-{name}"),
        AUTHLIB_INSECURE_TRANSPORT="1",
    )
    if os.environ.get("TEST_REDIS_URL"):
        env["REDIS_URL"] = os.environ["TEST_REDIS_URL"]
    log = tmp_path / f"gunicorn-{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Instance(name, f"http://127.0.0.1:{port}", process, log)


def _wait_up(instance: Instance, deadline: float) -> None:
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            pytest.fail(f"{instance.name} exited:\n{instance.log.read_text()[-3000:]}")
        try:
            if instance.get("/healthz").status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{instance.name} did not start:\n{instance.log.read_text()[-3000:]}")


def _stop(instance: Instance) -> None:
    instance.process.terminate()  # SIGTERM: gunicorn's graceful shutdown
    try:
        instance.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        instance.process.kill()
        instance.process.wait()


@pytest.fixture(scope="module")
def instances(base_config, migrated, tmp_path_factory) -> Iterator[tuple[Instance, Instance]]:
    """Instances A and B for the whole module (starting them is the slow part)."""
    tmp_path = tmp_path_factory.mktemp("multi")
    started = [_start(name, base_config, tmp_path) for name in ("a", "b")]
    try:
        deadline = time.monotonic() + 60
        for instance in started:
            _wait_up(instance, deadline)
        yield started[0], started[1]
    finally:
        for instance in started:
            _stop(instance)
    for instance in started:
        # A graceful stop exits 0.
        assert instance.process.returncode == 0, instance.log.read_text()[-3000:]


@pytest.fixture
def pair(app, instances) -> tuple[Instance, Instance]:
    """A and B once both serve this test's keys (the `app` fixture has just remade them)."""
    with app.app_context():
        expected = sorted(
            k["kid"] for k in json.loads(runtime().keyring.reload().jwks_body)["keys"]
        )
    deadline = time.monotonic() + 20
    for instance in instances:
        while True:
            response = instance.get("/readyz")
            jwks = instance.get("/.well-known/jwks.json").json()
            if response.status_code == 200 and sorted(k["kid"] for k in jwks["keys"]) == expected:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{instance.name} did not pick up the test's keys")
            time.sleep(0.1)
    # The JWKS refreshes with the key snapshot; one more interval and the
    # signing choice has been made from the same read.
    time.sleep(0.1)
    return instances


def basic(client_id: str, secret: str) -> tuple[str, str]:
    return (client_id, secret)


def get_token(instance: Instance, client_id: str, secret: str, **params) -> requests.Response:
    return instance.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", **params},
        auth=basic(client_id, secret),
    )


def token_of(instance: Instance, client_id: str, secret: str, **params) -> str:
    response = get_token(instance, client_id, secret, **params)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def admin_headers(factory, instance: Instance, account: str = "system") -> dict[str, str]:
    cid, secret = factory.admin(account)
    return {"Authorization": f"Bearer {token_of(instance, cid, secret)}"}


def test_token_from_a_verifies_with_b_jwks(pair, factory):
    a, b = pair
    cid, secret = factory.client(scopes=["read"], audiences=["https://api.example.com"])
    token = token_of(a, cid, secret)
    key = jwt.PyJWKClient(b.url + "/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token, key.key, algorithms=["ES256"], audience="https://api.example.com", issuer=ISSUER
    )
    assert claims["client_id"] == cid
    # Both publish the same key set, with the short max-age they were given.
    jwks_a, jwks_b = a.get("/.well-known/jwks.json"), b.get("/.well-known/jwks.json")
    assert jwks_a.json() == jwks_b.json()
    assert jwks_b.headers["Cache-Control"] == f"public, max-age={JWKS_MAX_AGE}"


def test_secret_deleted_via_a_is_refused_by_b_within_the_bound(pair, factory):
    a, b = pair
    admin = admin_headers(factory, a, "acme")
    cid, secret = factory.client("acme", scopes=["read"])
    assert get_token(b, cid, secret).status_code == 200  # B caches the record
    (secret_id,) = [
        s["id"] for s in a.get(f"/api/v1/clients/{cid}/secrets", headers=admin).json()["data"]
    ]
    assert a.delete(f"/api/v1/clients/{cid}/secrets/{secret_id}", headers=admin).status_code == 204
    deleted_at = time.monotonic()
    assert get_token(a, cid, secret).status_code == 401
    while get_token(b, cid, secret).status_code == 200:
        assert time.monotonic() - deleted_at <= CACHE_BOUND, "B still accepts the deleted secret"
        time.sleep(0.05)
    assert time.monotonic() - deleted_at <= CACHE_BOUND


def test_rotation_via_a_is_signed_with_by_b_only_after_b_published_it(pair, factory, app):
    a, b = pair
    cid, secret = factory.client(scopes=["read"])
    with app.app_context():
        keys = keys_service.keys_by_status()
        old, promoted = keys["current"][0].kid, keys["next"][0].kid
        # The current key is a month old; the next one was made seconds ago,
        # so instances must wait out the publish delay before signing with it.
        db.session.get(SigningKey, old).created_at = utcnow() - timedelta(days=30)
        db.session.commit()
        runtime().keyring.invalidate()
        promoted_created = db.session.get(SigningKey, promoted).created_at
    time.sleep(REFRESH + 0.2)  # both instances have re-read the keys
    assert jwt.get_unverified_header(token_of(b, cid, secret))["kid"] == old
    published_b = {k["kid"] for k in b.get("/.well-known/jwks.json").json()["keys"]}
    assert promoted in published_b  # B publishes the next key before any rotation

    response = a.post("/api/v1/signing-keys/rotate", headers=admin_headers(factory, a))
    assert response.status_code == 200, response.text
    current = [k["kid"] for k in response.json()["data"] if k["status"] == "current"]
    assert current == [promoted]
    rotated_at = time.monotonic()

    while True:
        jwks = {k["kid"] for k in b.get("/.well-known/jwks.json").json()["keys"]}
        token = token_of(b, cid, secret)
        kid = jwt.get_unverified_header(token)["kid"]
        # B never signs with a key its JWKS (fetched just before) lacks.
        assert kid in jwks
        if kid == promoted:
            break
        assert kid == old
        assert time.monotonic() - rotated_at <= 60, "B never switched to the new key"
        time.sleep(0.2)
    iat = jwt.decode(token, options={"verify_signature": False})["iat"]
    # Not before the key had been published for max-age + refresh + skew.
    assert iat >= int(promoted_created.timestamp()) + PUBLISH_DELAY - 1
    assert time.monotonic() - rotated_at <= 60
    # A signs with it too, and the old key is still published for its tokens.
    assert jwt.get_unverified_header(token_of(a, cid, secret))["kid"] == promoted
    assert old in {k["kid"] for k in a.get("/.well-known/jwks.json").json()["keys"]}


def test_revoke_on_a_is_inactive_at_b(pair, factory):
    a, b = pair
    cid, secret = factory.client(scopes=["read"])
    rs_id, rs_secret = factory.client(scopes=[])  # a resource server
    token = token_of(a, cid, secret)
    introspect = b.post("/oauth2/introspect", data={"token": token}, auth=(rs_id, rs_secret))
    assert introspect.status_code == 200
    assert introspect.json()["active"] is True
    revoke = a.post("/oauth2/revoke", data={"token": token}, auth=(cid, secret))
    assert revoke.status_code == 200
    # No delay is allowed for a revocation: inactive at B immediately.
    introspect = b.post("/oauth2/introspect", data={"token": token}, auth=(rs_id, rs_secret))
    assert introspect.json() == {"active": False}


def test_revoke_tokens_on_a_cuts_off_at_b_at_once(pair, factory):
    """docs/api.md §2.1 `revoke-tokens`: on every instance at once, like a revocation."""
    a, b = pair
    cid, secret = factory.client(scopes=["read"])
    rs_id, rs_secret = factory.client(scopes=[])
    admin_id, admin_secret = factory.admin()
    admin_token = token_of(b, admin_id, admin_secret)
    mine = {"Authorization": f"Bearer {admin_token}"}
    token = token_of(a, cid, secret)
    # B has both clients' records cached from here on.
    assert b.post("/oauth2/introspect", data={"token": token}, auth=(rs_id, rs_secret)).json()[
        "active"
    ]
    assert b.get("/api/v1/clients", headers=mine).status_code == 200
    headers = admin_headers(factory, a)
    assert a.post(f"/api/v1/clients/{cid}/revoke-tokens", headers=headers).status_code == 204
    assert a.post(f"/api/v1/clients/{admin_id}/revoke-tokens", headers=headers).status_code == 204
    introspect = b.post("/oauth2/introspect", data={"token": token}, auth=(rs_id, rs_secret))
    assert introspect.json() == {"active": False}
    assert b.get("/api/v1/clients", headers=mine).status_code == 401
    # A token issued afterwards, by either instance, works at the other.
    for issuer, checker in ((a, b), (b, a)):
        later = token_of(issuer, cid, secret)
        body = checker.post(
            "/oauth2/introspect", data={"token": later}, auth=(rs_id, rs_secret)
        ).json()
        assert body["active"] is True


def test_assertion_accepted_by_a_is_refused_when_replayed_at_b(pair, factory):
    a, b = pair
    admin = admin_headers(factory, a, "acme")
    cid, _secret = factory.client("acme", scopes=["read"])
    created = a.post(f"/api/v1/clients/{cid}/keys", json={}, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    private_key = jwt.PyJWK.from_dict(body["private_jwk"]).key
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": cid,
            "sub": cid,
            "aud": f"{ISSUER}/oauth2/token",
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(16),
        },
        private_key,
        algorithm="EdDSA",
        headers={"kid": body["kid"]},
    )
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    first = a.post("/oauth2/token", data=form)
    assert first.status_code == 200, first.text
    replay = b.post("/oauth2/token", data=form)
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_csrf(instance: Instance, browser: requests.Session, path: str) -> str:
    page = browser.get(instance.url + path, timeout=10)
    assert page.status_code == 200, page.text
    match = CSRF_RE.search(page.text)
    assert match is not None
    return match.group(1)


def console_signin(instance: Instance, cid: str, secret: str) -> requests.Session:
    """A browser signed in to the console of `instance`."""
    browser = requests.Session()
    form = {
        "client_id": cid,
        "client_secret": secret,
        "csrf_token": console_csrf(instance, browser, "/console/signin"),
    }
    response = browser.post(
        instance.url + "/console/signin", data=form, allow_redirects=False, timeout=10
    )
    assert response.status_code == 303, response.text
    return browser


def console_status(instance: Instance, browser: requests.Session) -> int:
    """200 while the browser's console session lasts; 302 to the sign-in page after."""
    response = browser.get(instance.url + "/console/clients", allow_redirects=False, timeout=10)
    return response.status_code


def test_console_sessions_end_on_every_instance_at_once(pair, factory):
    """The same cookie at A and B (a load balancer); sign-out or disabling at A ends it at B."""
    a, b = pair
    cid, secret = factory.admin("acme")
    first, second = console_signin(a, cid, secret), console_signin(a, cid, secret)
    assert console_status(b, first) == 200
    assert console_status(b, second) == 200  # B has the admin's record cached now

    copied = requests.Session()
    copied.cookies.update(first.cookies)
    csrf = console_csrf(a, first, "/console/clients")
    signed_out = first.post(
        a.url + "/console/signout", data={"csrf_token": csrf}, allow_redirects=False, timeout=10
    )
    assert signed_out.status_code == 303
    assert console_status(b, copied) == 302
    assert console_status(b, second) == 200

    system = admin_headers(factory, a)
    patched = requests.patch(
        f"{a.url}/api/v1/clients/{cid}", json={"disabled": True}, headers=system, timeout=10
    )
    assert patched.status_code == 200, patched.text
    # Within B's client cache time, yet refused: sessions are read from the database.
    assert console_status(b, second) == 302
