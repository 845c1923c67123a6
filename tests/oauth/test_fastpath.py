"""Integration: simple token requests skip Flask dispatch (app.oauth.fastpath) and answer the same.

Every comparison sends one request twice through WSGI: once to the app as a
server calls it, once straight into Flask's own `wsgi_app`, which the fast
path wraps. The two answers must agree on status, header names in order and
header values, the body (the token itself apart), the access-log line and
the metrics. A spy on Flask's `full_dispatch_request` tells which way each
request went: a request the fast path serves never reaches it.
"""

from __future__ import annotations

import io
import json
import logging
import re
import types
from dataclasses import dataclass

import jwt
import pytest
import requests
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder

from app import create_app
from app.extensions import db
from app.http.access_log import ACCESS_LOGGER
from app.runtime import runtime_of
from tests.conftest import basic_auth, free_port, serve_wsgi

FORM = "application/x-www-form-urlencoded"
GRANT = b"grant_type=client_credentials"
COUNTED = (
    "ccserver_token_requests_total",
    "ccserver_http_request_duration_seconds_count",
    "ccserver_rate_limit_rejections_total",
)


@dataclass
class Answer:
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    log: dict | None
    counted: dict


class AccessLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access_lines():
    handler = AccessLines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def watch(app, monkeypatch) -> list[str]:
    """Paths of the requests that go through the app's full Flask dispatch from now on."""
    from flask import request

    seen: list[str] = []
    original = app.full_dispatch_request

    def spy():
        seen.append(request.path)
        return original()

    monkeypatch.setattr(app, "full_dispatch_request", spy)
    return seen


@pytest.fixture
def flask_dispatched(app, monkeypatch) -> list[str]:
    return watch(app, monkeypatch)


def counted() -> dict:
    samples = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name in COUNTED:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def environ(
    body: bytes = GRANT, headers: dict | None = None, path: str = "/oauth2/token", **kwargs
) -> dict:
    kwargs.setdefault("content_type", FORM)
    kwargs.setdefault("environ_base", {"REMOTE_ADDR": "192.0.2.7"})
    builder = EnvironBuilder(path=path, method="POST", data=body, headers=headers or {}, **kwargs)
    return builder.get_environ()


def call(wsgi, env: dict, lines: AccessLines) -> Answer:
    """Run a WSGI app on `env`: its answer, access-log line and metric changes."""
    started: list = []
    before = counted()
    lines.records.clear()
    result = wsgi(env, lambda status, headers, exc_info=None: started.append((status, headers)))
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    after = counted()
    changes = {key: after[key] - before.get(key, 0.0) for key in after}
    fields = [dict(r.access) for r in lines.records]
    assert len(fields) <= 1
    log = fields[0] if fields else None
    if log is not None:
        log.pop("duration_ms")
    status, headers = started[0]
    return Answer(status, list(headers), body, log, {k: v for k, v in changes.items() if v})


def both_ways(app, lines, make_env) -> tuple[Answer, Answer]:
    """The same request served by the app (fast path) and by Flask's own wsgi_app."""
    fast = call(app.wsgi_app, make_env(), lines)
    slow = call(app.wsgi_app.wsgi_app, make_env(), lines)
    return fast, slow


def assert_same(fast: Answer, slow: Answer, vary: tuple[str, ...] = ()) -> None:
    """Identical answers; `vary` names headers whose values may differ (present in both)."""
    assert fast.status == slow.status
    assert [name for name, _ in fast.headers] == [name for name, _ in slow.headers]
    for (name, a), (_, b) in zip(fast.headers, slow.headers, strict=True):
        if name not in vary:
            assert a == b, name
    if fast.status.startswith("200") and b"access_token" in fast.body:
        fast_body, slow_body = json.loads(fast.body), json.loads(slow.body)
        assert fast_body.keys() == slow_body.keys()
        fast_claims = jwt.decode(fast_body.pop("access_token"), options={"verify_signature": False})
        slow_claims = jwt.decode(slow_body.pop("access_token"), options={"verify_signature": False})
        assert fast_body == slow_body
        assert fast_claims.keys() == slow_claims.keys()
        for claim in ("iss", "sub", "client_id", "aud", "scope", "account_id"):
            assert fast_claims[claim] == slow_claims[claim]
    else:
        assert fast.body == slow.body
    if "X-Request-ID" in vary and fast.log is not None:
        assert fast.log.pop("request_id") != slow.log.pop("request_id")
    assert fast.log == slow.log
    assert fast.counted == slow.counted


def header(answer: Answer, name: str) -> str:
    [value] = [v for k, v in answer.headers if k.lower() == name.lower()]
    return value


# --- the fast path answers as Flask does -------------------------------------------------


def cases(cid: str, secret: str) -> dict[str, tuple[bytes, dict, dict]]:
    """name -> (body, headers, EnvironBuilder arguments)."""
    basic = basic_auth(cid, secret)
    rid = {"X-Request-ID": "req-1"}
    post = f"grant_type=client_credentials&client_id={cid}&client_secret={secret}".encode()
    return {
        "basic 200": (GRANT, {**basic, **rid}, {}),
        "post 200": (post, rid, {}),
        "scope 200": (GRANT + b"&scope=read", {**basic, **rid}, {}),
        "charset 200": (GRANT, {**basic, **rid}, {"content_type": FORM + "; charset=UTF-8"}),
        "upper-case type 200": (GRANT, {**basic, **rid}, {"content_type": FORM.upper()}),
        "wrong secret 401": (GRANT, {**basic_auth(cid, "ccs_wrong"), **rid}, {}),
        "unknown client 401": (
            b"grant_type=client_credentials&client_id=nobody&client_secret=x",
            rid,
            {},
        ),
        "no credentials 401": (GRANT, rid, {}),
        "bad scope 400": (GRANT + b"&scope=admin", {**basic, **rid}, {}),
        "bad audience 400": (GRANT + b"&audience=https://elsewhere", {**basic, **rid}, {}),
        "password grant 400": (b"grant_type=password", {**basic, **rid}, {}),
        "no grant_type 400": (b"scope=read", {**basic, **rid}, {}),
        "empty body 400": (b"", {**basic, **rid}, {}),
        "repeated 400": (GRANT + b"&scope=a&scope=b", {**basic, **rid}, {}),
        "bad utf-8 400": (b"grant_type=%ff", {**basic, **rid}, {}),
        "nul 400": (b"grant_type=client%00credentials", {**basic, **rid}, {}),
        "two methods 400": (post, {**basic, **rid}, {}),
        "query string ignored": (GRANT, {**basic, **rid}, {"query_string": "scope=admin"}),
    }


CASE_NAMES = list(cases("c", "s"))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_fast_path_answers_as_flask_does(app, factory, access_lines, flask_dispatched, name):
    cid, secret = factory.client(scopes=["read", "write"])
    body, headers, extra = cases(cid, secret)[name]
    fast, slow = both_ways(app, access_lines, lambda: environ(body, headers, **extra))
    assert flask_dispatched == ["/oauth2/token"]  # the second call only
    assert_same(fast, slow)
    assert header(fast, "X-Request-ID") == "req-1"
    assert header(fast, "X-Content-Type-Options") == "nosniff"
    assert header(fast, "Cache-Control") == "no-store"
    assert fast.log["path"] == "/oauth2/token"
    assert fast.log["remote_addr"] == "192.0.2.7"
    if fast.status.startswith("200"):
        assert fast.log["client_id"] == cid
    latency = ("ccserver_http_request_duration_seconds_count", (("endpoint", "oauth.issue_token"),))
    assert fast.counted[latency] == 1


def test_a_generated_request_id_and_trusted_proxies(app, factory, access_lines, flask_dispatched):
    cid, secret = factory.client()
    app.config["TRUSTED_PROXIES"] = "10.0.0.0/8"
    headers = {**basic_auth(cid, secret), "X-Request-ID": "no spaces allowed"}
    headers["X-Forwarded-For"] = "203.0.113.9"
    fast, slow = both_ways(
        app,
        access_lines,
        lambda: environ(GRANT, headers, environ_base={"REMOTE_ADDR": "10.1.2.3"}),
    )
    assert len(flask_dispatched) == 1
    assert_same(fast, slow, vary=("X-Request-ID",))
    assert re.fullmatch(r"[0-9a-f]{32}", header(fast, "X-Request-ID"))
    assert fast.log["remote_addr"] == "203.0.113.9"


def test_hsts_on_an_https_issuer(base_config, app, factory, access_lines, monkeypatch):
    secure = create_app({**base_config, "ISSUER": "https://auth.example"})
    dispatched = watch(secure, monkeypatch)
    try:
        cid, secret = factory.client()
        for headers in (basic_auth(cid, secret), basic_auth(cid, "wrong")):
            fast, slow = both_ways(secure, access_lines, lambda h=headers: environ(GRANT, h))
            assert_same(fast, slow, vary=("X-Request-ID",))
            assert header(fast, "Strict-Transport-Security").startswith("max-age=")
        assert dispatched == ["/oauth2/token"] * 2  # the Flask half of each pair
    finally:
        with secure.app_context():
            db.engine.dispose()


def test_rate_limited_answers_match(base_config, app, factory, access_lines, monkeypatch):
    limited = create_app({**base_config, "AUTH_FAILURE_LIMIT_CLIENT": 1})
    dispatched = watch(limited, monkeypatch)
    try:
        cid, secret = factory.client()
        call(limited.wsgi_app, environ(GRANT, basic_auth(cid, "wrong")), access_lines)
        fast, slow = both_ways(
            limited, access_lines, lambda: environ(GRANT, basic_auth(cid, secret))
        )
        assert fast.status == "429 TOO MANY REQUESTS"
        # Retry-After counts down the window: the two calls may straddle a second.
        assert_same(fast, slow, vary=("X-Request-ID", "Retry-After"))
        assert fast.counted[("ccserver_rate_limit_rejections_total", ())] == 1
        assert dispatched == ["/oauth2/token"]
    finally:
        with limited.app_context():
            db.engine.dispose()


def test_no_signing_key_answers_match(app, factory, access_lines, flask_dispatched):
    cid, secret = factory.client()
    server = runtime_of(app).oauth
    server.token_generator.keyring = types.SimpleNamespace(
        snapshot=lambda: types.SimpleNamespace(current=None)
    )
    fast, slow = both_ways(app, access_lines, lambda: environ(GRANT, basic_auth(cid, secret)))
    assert len(flask_dispatched) == 1
    assert fast.status == "503 SERVICE UNAVAILABLE"
    assert json.loads(fast.body)["error"] == "temporarily_unavailable"
    assert_same(fast, slow, vary=("X-Request-ID",))


def test_a_slow_stream_is_read_whole(app, factory, access_lines, flask_dispatched):
    """A socket may hand the body over a few bytes at a time."""

    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            n = min(3, size) if size >= 0 else 3
            chunk, self.data = self.data[:n], self.data[n:]
            return chunk

    cid, secret = factory.client()
    env = environ(GRANT + b"&scope=", basic_auth(cid, secret))
    env["wsgi.input"] = Trickle(GRANT + b"&scope=")
    answer = call(app, env, access_lines)
    assert answer.status == "200 OK", answer.body
    assert flask_dispatched == []


def test_a_real_server_socket(app, factory, flask_dispatched):
    cid, secret = factory.client()
    for base in serve_wsgi(app, free_port()):
        response = requests.post(
            f"{base}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(cid, secret),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Request-ID"]
    assert flask_dispatched == []


# --- exceptions are Flask's to answer ------------------------------------------------------


@pytest.fixture
def down_app(base_config, tmp_path):
    """An app whose database is a closed port: every client lookup fails."""
    config = {**base_config, "REDIS_URL": None, "KEYS_DIR": str(tmp_path / "keys")}
    config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
    made = create_app(config)
    yield made
    with made.app_context():
        db.engine.dispose()


def test_database_down_answers_match(down_app, access_lines, monkeypatch):
    dispatched = watch(down_app, monkeypatch)
    fast, slow = both_ways(down_app, access_lines, lambda: environ(GRANT, basic_auth("a", "b")))
    assert fast.status == "503 SERVICE UNAVAILABLE"
    assert header(fast, "Retry-After") == "1"
    assert json.loads(fast.body) == {
        "error": "temporarily_unavailable",
        "error_description": "The database is unavailable; retry later.",
    }
    assert_same(fast, slow, vary=("X-Request-ID",))
    assert dispatched == ["/oauth2/token"]


def test_a_bug_is_a_logged_500(app, factory, access_lines, flask_dispatched, monkeypatch, caplog):
    cid, secret = factory.client()
    server = runtime_of(app).oauth

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(server, "authenticate_client", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    caplog.set_level(logging.ERROR, logger=app.logger.name)
    fast, slow = both_ways(app, access_lines, lambda: environ(GRANT, basic_auth(cid, secret)))
    assert fast.status == "500 INTERNAL SERVER ERROR"
    assert json.loads(fast.body)["error"] == "server_error"
    assert_same(fast, slow, vary=("X-Request-ID",))
    logged = [r for r in caplog.records if r.getMessage() == "Exception on /oauth2/token [POST]"]
    assert len(logged) == 2
    assert all(r.exc_info[0] is RuntimeError for r in logged)
    assert flask_dispatched == ["/oauth2/token"]


def test_a_bug_propagates_under_testing(app, factory, access_lines, monkeypatch):
    cid, secret = factory.client()
    server = runtime_of(app).oauth
    monkeypatch.setattr(server, "authenticate_client", lambda *a, **k: 1 / 0)
    for wsgi in (app.wsgi_app, app.wsgi_app.wsgi_app):
        with pytest.raises(ZeroDivisionError):
            call(wsgi, environ(GRANT, basic_auth(cid, secret)), access_lines)
    monkeypatch.undo()
    # Both popped their contexts: the next request is served normally.
    assert call(app.wsgi_app, environ(GRANT), access_lines).status.startswith("401")


# --- odd requests go to Flask untouched ----------------------------------------------------


def test_chunked_body_goes_to_flask(client, factory, flask_dispatched):
    cid, secret = factory.client()
    response = client.post(
        "/oauth2/token",
        input_stream=io.BytesIO(GRANT),
        headers={"Content-Type": FORM, "Transfer-Encoding": "chunked", **basic_auth(cid, secret)},
        environ_base={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200, response.get_json()
    assert flask_dispatched == ["/oauth2/token"]


def test_wrong_content_type_goes_to_flask(client, factory, flask_dispatched):
    cid, secret = factory.client()
    response = client.post(
        "/oauth2/token", json={"grant_type": "client_credentials"}, headers=basic_auth(cid, secret)
    )
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "invalid_request",
        "error_description": f"The request body must be {FORM}.",
    }
    assert response.headers["X-Request-ID"]
    assert flask_dispatched == ["/oauth2/token"]


def test_oversized_content_length_is_flasks_413(client, flask_dispatched):
    body = GRANT + b"&x=" + b"a" * (64 * 1024)
    response = client.post("/oauth2/token", data=body, headers={"Content-Type": FORM})
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "invalid_request",
        "error_description": "The request body is larger than 64 KiB.",
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert flask_dispatched == ["/oauth2/token"]


@pytest.mark.parametrize("terminated", [False, True])
def test_short_body_goes_to_flask_with_what_was_read(
    app, factory, access_lines, flask_dispatched, terminated
):
    """A body shorter than its Content-Length is Flask's to judge, with every byte read."""
    cid, secret = factory.client()
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def short() -> dict:
        env = environ(GRANT, basic_auth(cid, secret))
        env["CONTENT_LENGTH"] = str(len(GRANT) + 10)
        if terminated:
            env["wsgi.input_terminated"] = True
        return env

    fast, slow = both_ways(app, access_lines, short)
    assert flask_dispatched == ["/oauth2/token", "/oauth2/token"]
    if terminated:
        # werkzeug reads a terminated stream to its end, whatever Content-Length says.
        assert fast.status == "200 OK"
    else:
        # The client went away mid-body: a 400 in RFC 6749 shape, logged, never a 500.
        assert fast.status.startswith("400"), fast.status
        assert json.loads(fast.body)["error"] == "invalid_request"
        assert fast.log is not None and fast.log["status"] == 400
        assert "X-Request-ID" in dict(fast.headers)
    assert_same(fast, slow, vary=("X-Request-ID",))


def test_other_requests_go_to_flask(client, factory, flask_dispatched):
    cid, secret = factory.client()
    auth = basic_auth(cid, secret)
    client.get("/oauth2/token")
    client.post("/oauth2/token/", data={"grant_type": "client_credentials"}, headers=auth)
    client.get("/oauth2/introspect")
    client.post("/oauth2/revoke/", data={"token": "x"}, headers=auth)
    client.post("/oauth2/introspect", json={"token": "x"}, headers=auth)
    assert flask_dispatched == [
        "/oauth2/token",
        "/oauth2/token/",
        "/oauth2/introspect",
        "/oauth2/revoke/",
        "/oauth2/introspect",
    ]


# --- introspection and revocation take the same path ----------------------------------------


def token_for(app, cid: str, secret: str) -> str:
    answer = call(app.wsgi_app, environ(GRANT, basic_auth(cid, secret)), AccessLines())
    return json.loads(answer.body)["access_token"]


ENDPOINT_CASES = {
    # name -> (path, body maker taking (own token, other's token), who authenticates)
    "introspect active 200": ("/oauth2/introspect", lambda own, other: f"token={own}", "own"),
    "introspect other's token 200": (
        "/oauth2/introspect",
        lambda own, other: f"token={other}&token_type_hint=access_token",
        "own",
    ),
    "introspect garbage 200": ("/oauth2/introspect", lambda own, other: "token=abc", "own"),
    "introspect no token 400": ("/oauth2/introspect", lambda own, other: "x=1", "own"),
    "introspect wrong secret 401": ("/oauth2/introspect", lambda own, other: f"token={own}", "bad"),
    "introspect repeated 400": (
        "/oauth2/introspect",
        lambda own, other: f"token={own}&token={own}",
        "own",
    ),
    "revoke own 200": ("/oauth2/revoke", lambda own, other: f"token={own}", "own"),
    "revoke other's token": ("/oauth2/revoke", lambda own, other: f"token={other}", "own"),
    "revoke no token 400": ("/oauth2/revoke", lambda own, other: "", "own"),
    "revoke wrong secret 401": ("/oauth2/revoke", lambda own, other: f"token={own}", "bad"),
}


@pytest.mark.parametrize("name", list(ENDPOINT_CASES))
def test_introspection_and_revocation_answer_as_flask_does(
    app, factory, access_lines, flask_dispatched, name
):
    path, make_body, who = ENDPOINT_CASES[name]
    cid, secret = factory.client()
    other_cid, other_secret = factory.client()
    own, other = token_for(app, cid, secret), token_for(app, other_cid, other_secret)
    auth = basic_auth(cid, secret if who == "own" else "ccs_wrong")
    body = make_body(own, other).encode()
    headers = {**auth, "X-Request-ID": "req-2"}
    fast, slow = both_ways(app, access_lines, lambda: environ(body, headers, path=path))
    assert flask_dispatched == [path]  # the second call only
    assert_same(fast, slow)
    assert header(fast, "Cache-Control") == "no-store"
    assert header(fast, "X-Content-Type-Options") == "nosniff"
    assert fast.log["path"] == path
    endpoint = "oauth.introspect_token" if "introspect" in path else "oauth.revoke_token"
    latency = ("ccserver_http_request_duration_seconds_count", (("endpoint", endpoint),))
    assert fast.counted[latency] == 1
    if name == "introspect active 200":
        assert json.loads(fast.body)["active"] is True
        assert json.loads(fast.body)["client_id"] == cid
    if name == "revoke own 200":
        # Revoked by the first (fast) call: inactive on either path now.
        after = call(
            app.wsgi_app,
            environ(f"token={own}".encode(), basic_auth(cid, secret), path="/oauth2/introspect"),
            access_lines,
        )
        assert json.loads(after.body) == {"active": False}


def test_introspection_over_a_real_socket_skips_flask(app, factory, flask_dispatched):
    cid, secret = factory.client()
    token = token_for(app, cid, secret)
    flask_dispatched.clear()
    for base in serve_wsgi(app, free_port()):
        answer = requests.post(
            f"{base}/oauth2/introspect", data={"token": token}, auth=(cid, secret), timeout=10
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["active"] is True
        revoked = requests.post(
            f"{base}/oauth2/revoke", data={"token": token}, auth=(cid, secret), timeout=10
        )
        assert revoked.status_code == 200
    assert flask_dispatched == []


def test_an_unknown_hook_sends_token_requests_to_flask(app, client, factory, flask_dispatched):
    """A hook the fast path does not stand in for (here a test's recorder) must still run."""
    cid, secret = factory.client()
    seen: list[int] = []

    def record(response):
        seen.append(response.status_code)
        return response

    app.after_request_funcs.setdefault(None, []).insert(0, record)
    assert (
        client.post(
            "/oauth2/token", data=GRANT, headers={**basic_auth(cid, secret), "Content-Type": FORM}
        ).status_code
        == 200
    )
    assert seen == [200]
    assert flask_dispatched == ["/oauth2/token"]


def test_a_kept_request_context_goes_to_flask(client, factory, flask_dispatched):
    from flask import g

    cid, secret = factory.client()
    with client:
        client.post(
            "/oauth2/token", data=GRANT, headers={**basic_auth(cid, secret), "Content-Type": FORM}
        )
        assert g.client_id == cid
    assert flask_dispatched == ["/oauth2/token"]
