"""End to end: the real server under gunicorn, an independent OAuth client, PyJWT's JWKS client.

The operator's commands run as subprocesses against an empty database (a fresh SQLite
file, or a scratch PostgreSQL database when DATABASE_URL is PostgreSQL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from tests.conftest import free_port, scratch_database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    tmp_path = tmp_path_factory.mktemp("e2e")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_PEPPER", "KEYS_PASSPHRASE")}
    env.update(
        KEYS_DIR=str(tmp_path / "keys"),
        ISSUER=f"http://127.0.0.1:{port}",
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="2",
        SIGNING_ALG="ES256",
    )
    env.pop("REDIS_URL", None)
    with scratch_database(tmp_path) as url:
        env["DATABASE_URL"] = url
        yield env


def flask(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def server(server_env):
    """Migrate, make keys and an admin, then serve with gunicorn until the test ends."""
    flask(server_env, "db", "upgrade")
    flask(server_env, "keys", "init")
    credentials = json.loads(
        flask(server_env, "admin", "create", "--account", "acme", "--name", "e2e", "--json")
    )
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = server_env["ISSUER"]
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                if requests.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield base, credentials
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stderr.close()


def test_token_from_independent_client_verifies_against_served_jwks(server, monkeypatch):
    base, credentials = server
    # oauthlib insists on https; this loopback server speaks plain http.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    metadata = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=5).json()
    assert metadata["issuer"] == base

    session = OAuth2Session(client=BackendApplicationClient(client_id=credentials["client_id"]))
    token = session.fetch_token(
        token_url=metadata["token_endpoint"],
        client_id=credentials["client_id"],
        client_secret=credentials["client_secret"],
        timeout=10,
    )
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600

    jwks_client = PyJWKClientNoCache(metadata["jwks_uri"])
    signing_key = jwks_client.get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(
        token["access_token"],
        signing_key.key,
        algorithms=["ES256"],
        audience=f"{base}/api",
        issuer=base,
    )
    assert claims["client_id"] == credentials["client_id"]
    assert claims["sub"] == credentials["client_id"]
    assert claims["account_id"] == "acme"
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(token["access_token"])["typ"] == "at+jwt"


def test_every_worker_signs_verifiable_tokens_and_refuses_bad_secrets(server):
    base, credentials = server
    jwks_client = PyJWKClientNoCache(f"{base}/.well-known/jwks.json")
    with requests.Session() as http:
        for _ in range(10):
            response = http.post(
                f"{base}/oauth2/token",
                data={"grant_type": "client_credentials", "scope": "clients:read"},
                auth=(credentials["client_id"], credentials["client_secret"]),
                timeout=5,
            )
            assert response.status_code == 200, response.text
            assert response.headers["Cache-Control"] == "no-store"
            access = response.json()["access_token"]
            key = jwks_client.get_signing_key_from_jwt(access)
            claims = jwt.decode(access, key.key, algorithms=["ES256"], audience=f"{base}/api")
            assert claims["scope"] == "clients:read"

        bad = http.post(
            f"{base}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(credentials["client_id"], "ccs_wrong"),
            timeout=5,
        )
        assert bad.status_code == 401
        assert bad.json()["error"] == "invalid_client"
        assert bad.headers["WWW-Authenticate"].startswith("Basic realm=")

        jwks = http.get(f"{base}/.well-known/jwks.json", timeout=5)
        assert jwks.headers["Cache-Control"].startswith("public, max-age=")
        cached = http.get(
            f"{base}/.well-known/jwks.json",
            headers={"If-None-Match": jwks.headers["ETag"]},
            timeout=5,
        )
        assert cached.status_code == 304
        assert http.get(f"{base}/healthz", timeout=5).status_code == 200


class PyJWKClientNoCache(jwt.PyJWKClient):
    """PyJWKClient without its process-wide cache, so tests never share keys."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri, cache_keys=False, cache_jwk_set=False, timeout=5)
