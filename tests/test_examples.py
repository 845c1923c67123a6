"""Integration: the examples/ programs against this server, served over real HTTP.

The authorization server runs in a werkzeug server thread on a loopback
port; the Flask resource server runs the same way, the FastAPI one under
uvicorn; PyJWKClient fetches the JWKS over HTTP like it would in production.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import jwt
import pytest
import requests

from app.runtime import runtime
from examples import resource_server_fastapi, resource_server_flask
from examples.client import TokenClient, TokenError
from tests.conftest import free_port, serve_wsgi

AUDIENCE = "https://api.example.com"


@pytest.fixture
def app_config(live_config) -> dict:
    # The issuer is the address the examples reach, as in a deployment.
    return live_config


@pytest.fixture
def issuer(live_url) -> str:
    return live_url


@pytest.fixture
def reader(factory) -> tuple[str, str]:
    return factory.client(scopes=["read", "write"], audiences=[AUDIENCE, "https://other"])


@pytest.fixture
def flask_rs(issuer) -> Iterator[str]:
    yield from serve_wsgi(resource_server_flask.create_app(issuer, AUDIENCE), free_port())


@pytest.fixture
def fastapi_rs(issuer) -> Iterator[str]:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        resource_server_fastapi.create_app(issuer, AUDIENCE),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_client_caches_until_shortly_before_expiry(issuer, reader):
    cid, secret = reader
    clock = FakeClock()
    tokens = TokenClient(
        f"{issuer}/oauth2/token", cid, secret, scope="read", leeway=30, clock=clock
    )
    first = tokens.token()
    assert tokens.token() == first
    clock.now += 3600 - 31  # expires_in is 3600: still 31 s of life left
    assert tokens.token() == first
    assert tokens.requests_made == 1
    clock.now += 1  # within the leeway: fetch a fresh one
    second = tokens.token()
    assert second != first
    assert tokens.requests_made == 2
    assert jwt.decode(second, options={"verify_signature": False})["scope"] == "read"


def test_client_reports_token_endpoint_errors(issuer, reader):
    cid, _ = reader
    tokens = TokenClient(f"{issuer}/oauth2/token", cid, "ccs_wrong")
    with pytest.raises(TokenError) as caught:
        tokens.token()
    assert caught.value.status == 401
    assert caught.value.error == "invalid_client"


def _forged(issuer: str, app, **overrides) -> str:
    """A token signed with the server's real current key, with chosen claims or typ."""
    with app.app_context():
        key = runtime().keyring.snapshot().current
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "forged",
        "client_id": "forged",
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "scope": "read",
    }
    typ = overrides.pop("typ", "at+jwt")
    claims.update(overrides)
    return jwt.encode(
        claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid, "typ": typ}
    )


def _check_resource_server(base: str, issuer: str, app, reader) -> None:
    cid, secret = reader
    token_url = f"{issuer}/oauth2/token"
    reading = TokenClient(token_url, cid, secret, scope="read", audience=AUDIENCE)
    response = reading.get(f"{base}/hello")
    assert response.status_code == 200, response.text
    assert response.json() == {"hello": cid, "scope": "read"}

    writing = TokenClient(token_url, cid, secret, scope="write", audience=AUDIENCE)
    response = requests.get(
        f"{base}/hello", headers={"Authorization": f"Bearer {writing.token()}"}, timeout=5
    )
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]

    elsewhere = TokenClient(token_url, cid, secret, scope="read", audience="https://other")
    bad_tokens = [
        elsewhere.token(),  # another audience
        _forged(issuer, app, typ="JWT"),  # not an access token
        _forged(issuer, app, iss="https://evil.example"),
        _forged(issuer, app, exp=int(time.time()) - 120),  # expired beyond the leeway
        "not.a.jwt",
    ]
    assert requests.get(
        f"{base}/hello", headers={"Authorization": f"Bearer {_forged(issuer, app)}"}, timeout=5
    ).ok, "the forging helper itself must make an acceptable token"
    for bad in bad_tokens:
        response = requests.get(
            f"{base}/hello", headers={"Authorization": f"Bearer {bad}"}, timeout=5
        )
        assert response.status_code == 401, bad
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]

    response = requests.get(f"{base}/hello", timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_flask_resource_server(flask_rs, issuer, app, reader):
    _check_resource_server(flask_rs, issuer, app, reader)


def test_fastapi_resource_server(fastapi_rs, issuer, app, reader):
    _check_resource_server(fastapi_rs, issuer, app, reader)
