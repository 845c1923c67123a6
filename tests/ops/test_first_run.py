"""A first run that explains itself (issue 17, item 1) and the production path (item 3).

Integration through Flask's test client: `GET /`, PORT and ISSUER, the
failed-authentication log line, METRICS_TOKEN. The `slow` tests run the real
servers as `make run` and `make serve-prod` do (`flask --app wsgi dev serve`,
serve.py) and read what they print.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import sys
import time
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.http import logs
from app.http.access_log import ACCESS_LOGGER, JSONFormatter, _access_record
from app.models import Client
from tests.conftest import basic_auth
from tests.ops.helpers import flask, operator_env, read_until, start, stop

TOKEN = {"grant_type": "client_credentials"}


# --- GET /, PORT and ISSUER ------------------------------------------------------------------


def test_root_redirects_to_the_console(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/"


def test_port_alone_moves_the_issuer(base_config, migrated, monkeypatch):
    monkeypatch.setenv("PORT", "5001")
    app = create_app({k: v for k, v in base_config.items() if k != "ISSUER"})
    try:
        assert app.config["ISSUER"] == "http://localhost:5001"
        assert app.config["MANAGEMENT_AUDIENCE"] == "http://localhost:5001/api"
        metadata = app.test_client().get("/.well-known/oauth-authorization-server").get_json()
        assert metadata["issuer"] == "http://localhost:5001"
        assert metadata["token_endpoint"] == "http://localhost:5001/oauth2/token"
    finally:
        with app.app_context():
            db.engine.dispose()


def test_an_explicit_issuer_wins_over_port(base_config, migrated, monkeypatch):
    monkeypatch.setenv("PORT", "5001")
    monkeypatch.setenv("ISSUER", "https://auth.example.com/")
    app = create_app({k: v for k, v in base_config.items() if k != "ISSUER"})
    try:
        assert app.config["ISSUER"] == "https://auth.example.com"
    finally:
        with app.app_context():
            db.engine.dispose()


# --- what a start loaded ----------------------------------------------------------------------


def test_a_start_without_a_signing_key_says_so(app, caplog):
    from app.cli.serve import report_loaded
    from app.extensions import db
    from app.models import SigningKey

    caplog.set_level(logging.INFO, logger="app.cli.serve")
    with app.app_context():
        found = report_loaded(app)
        assert found.current_keys and found.next_keys
        assert any(
            f"signing keys: current {found.current_keys[0]}" in r.getMessage()
            for r in caplog.records
        )
        assert "database: " in caplog.records[0].getMessage()
        caplog.clear()
        db.session.execute(sa.delete(SigningKey))
        db.session.commit()
        report_loaded(app)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no signing key" in warning.getMessage() and "keys init" in warning.getMessage()


# --- failed authentications are logged --------------------------------------------------------


@pytest.fixture
def auth_log(caplog):
    caplog.set_level(logging.INFO, logger="ccserver.auth")
    return caplog


def _failures(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ccserver.auth"]


def test_a_wrong_secret_logs_the_client_id_and_a_coarse_reason(client, factory, auth_log):
    cid, secret = factory.client()
    wrong = "ccs_wrong-" + "x" * 30
    assert (
        client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, wrong)).status_code == 401
    )
    [line] = _failures(auth_log)
    assert f"client_id={cid}" in line
    assert "reason=invalid_credentials" in line
    assert "method=client_secret_basic" in line and "endpoint=token" in line
    assert wrong not in auth_log.text and secret not in auth_log.text


def test_each_coarse_reason(app, client, factory, auth_log):
    cid, secret = factory.client()
    unknown = "00000000-0000-0000-0000-000000000000"
    client.post("/oauth2/token", data={**TOKEN, "client_id": unknown, "client_secret": "s3cr3t"})
    client.post("/oauth2/token", data=TOKEN)
    with app.app_context():
        db.session.execute(sa.update(Client).where(Client.id == cid).values(disabled=True))
        db.session.commit()
        app.extensions["ccserver"].clients.clear()
    client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret))
    lines = _failures(auth_log)
    assert f"client_id={unknown} reason=unknown_client method=client_secret_post" in lines[0]
    assert "client_id=- reason=no_credentials method=none" in lines[1]
    assert f"client_id={cid} reason=client_disabled" in lines[2]
    assert "s3cr3t" not in auth_log.text and secret not in auth_log.text


def test_a_failed_assertion_without_client_id_logs_the_client_it_names(client, factory, auth_log):
    """The log line names the client the failure limits count against: the assertion's sub."""
    from tests.oauth.assertions import claims_for, make_key, sign, token_request

    cid, _ = factory.client()
    unregistered = make_key("ES256")  # the client has no such key: the signature fails
    assert token_request(client, sign(unregistered, claims_for(cid))).status_code == 401
    [line] = _failures(auth_log)
    assert f"client_id={cid} reason=" in line
    assert "method=private_key_jwt" in line


def test_a_hostile_client_id_stays_one_short_line(client, auth_log):
    forged = "x\nINFO fake line " + "y" * 200
    client.post("/oauth2/token", data={**TOKEN, "client_id": forged, "client_secret": "s"})
    [line] = _failures(auth_log)
    assert "\n" not in line and "y" * 70 not in line


def test_introspection_failures_are_logged_too(client, auth_log):
    client.post("/oauth2/introspect", data={"token": "t"}, headers=basic_auth("nobody", "no"))
    [line] = _failures(auth_log)
    assert "client_id=nobody" in line and "endpoint=introspection" in line


def test_a_refused_console_sign_in_is_logged_alike(factory, client, auth_log):
    from tests.console.test_console import Console

    cid, secret = factory.client()  # a standard client: not an admin
    admin, _ = factory.admin()
    console = Console(client)
    assert console.signin(admin, "ccs_wrong-" + "z" * 30).status_code == 401
    assert console.signin(cid, secret).status_code == 401
    lines = _failures(auth_log)
    assert f"client_id={admin} reason=invalid_credentials method=console_sign_in" in lines[0]
    assert f"client_id={cid} reason=not_an_admin" in lines[1]
    assert "endpoint=console" in lines[0]
    assert "ccs_wrong-" not in auth_log.text and secret not in auth_log.text


# --- log formats ----------------------------------------------------------------------------


def _access_fields() -> dict:
    return {
        "method": "POST",
        "path": "/oauth2/token",
        "status": 200,
        "duration_ms": 3.14159,
        "request_id": "abc123",
        "remote_addr": "127.0.0.1",
        "client_id": "c-1",
    }


def test_text_format_is_one_readable_line_per_request():
    line = logs.TextFormatter().format(_access_record(_access_fields()))
    assert "\n" not in line
    stamp, rest = line.split(" ", 1)
    assert len(stamp) == 8 and stamp.count(":") == 2
    assert rest == "POST /oauth2/token 200 3.1ms client=c-1 from 127.0.0.1 id=abc123"


def test_json_format_puts_a_traceback_inside_the_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "app", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    line = JSONFormatter().format(record)
    parsed = json.loads(line)
    assert parsed["message"] == "failed" and "ValueError: boom" in parsed["exc_info"]
    assert "\n" not in line


def test_configure_sets_the_access_log_format():
    access = logging.getLogger(ACCESS_LOGGER)
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        logs.configure("text")
        ours = [h for h in root.handlers if getattr(h, "ccserver_root", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.TextFormatter)
        logs.configure("json")
        ours = [h for h in root.handlers if getattr(h, "ccserver_root", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JSONFormatter)
        for handler in access.handlers:
            if getattr(handler, "ccserver_access", False):
                assert isinstance(handler.formatter, JSONFormatter)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)


def test_granian_gets_the_json_formatter_in_production():
    config = logs.granian_log_config("json")
    assert config is not None
    assert config["formatters"]["json"]["()"] == "app.http.access_log.JSONFormatter"
    assert set(config["loggers"]) == {"_granian", "granian.access"}
    assert logs.granian_log_config("text") is None


# --- /metrics behind METRICS_TOKEN --------------------------------------------------------------


@pytest.fixture
def metrics_token_app(base_config, migrated):
    app = create_app({**base_config, "METRICS_TOKEN": "scrape-me-0123456789"})
    yield app
    with app.app_context():
        db.engine.dispose()


def test_metrics_need_the_token_when_one_is_set(metrics_token_app):
    client = metrics_token_app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"ccserver_" not in refused.data
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = "Basic " + base64.b64encode(b"x:scrape-me-0123456789").decode()
    assert client.get("/metrics", headers={"Authorization": basic}).status_code == 401
    allowed = client.get("/metrics", headers={"Authorization": "Bearer scrape-me-0123456789"})
    assert allowed.status_code == 200
    assert b"ccserver_token_requests" in allowed.data


def test_metrics_are_open_without_a_token(client):
    assert client.get("/metrics").status_code == 200


# --- the real servers ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, headers: dict | None = None, data: bytes | None = None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    # No proxy from the environment: the server is on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get(f"{base}/readyz")[0] == 200:
                return
        except urllib.error.URLError:
            pass  # the worker is not accepting yet
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.2)


def _token(base: str, cid: str, secret: str) -> int:
    auth = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    status, _, _ = _get(
        f"{base}/oauth2/token",
        headers={"Authorization": f"Basic {auth}"},
        data=b"grant_type=client_credentials",
    )
    return status


def _box(process) -> list[str]:
    """The lines up to the end of the welcome box."""
    lines = read_until(process, "ccserver is ready")
    lines += read_until(process, "+---")
    return lines


@pytest.mark.slow
def test_make_run_explains_itself(tmp_path):
    port = _free_port()
    env = operator_env(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "keys", PORT=str(port))
    for args in (["db", "upgrade"], ["keys", "init"]):
        assert flask(env, *args).returncode == 0
    base = f"http://localhost:{port}"
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "dev", "serve"]

    first = start(command, env)
    try:
        lines = _box(first)
        text = "\n".join(lines)
        banner = next(
            i for i, line in enumerate(lines) if f"Running on http://127.0.0.1:{port}" in line
        )
        top = next(i for i, line in enumerate(lines) if line.startswith("+---"))
        assert banner < top, "the box comes after the server's banner"
        assert "starting: database: SQLite" in text and "signing keys: current" in text
        for url in (
            f"{base}/console/",
            f"{base}/docs",
            f"{base}/.well-known/oauth-authorization-server",
        ):
            assert url in text
        [cid] = [line.split()[-2] for line in lines if "client_id:" in line]
        [secret] = [line.split()[-2] for line in lines if "client_secret:" in line]

        # A second server on the same port is refused in one line.
        busy = flask(env, "dev", "serve")
        assert busy.returncode == 1 and "Traceback" not in busy.stderr
        assert f"PORT: 127.0.0.1:{port} is already in use" in busy.stderr

        status, headers, _ = _get(f"{base}/")
        assert status == 302 and headers["Location"] == "/console/"
        assert _token(base, cid, secret) == 200
        assert _token(base, cid, "ccs_wrong-secret-xxxxxxxxxxxx") == 401
        time.sleep(0.5)
    finally:
        rest = stop(first)
    text = "\n".join(rest)
    # One human-readable line per request, not werkzeug's as well.
    assert any(" GET / 302 " in line for line in rest), text
    assert any(" POST /oauth2/token 200 " in line and f"client={cid}" in line for line in rest)
    assert '"GET / HTTP/1.1"' not in text
    assert not any(line.lstrip().startswith("{") for line in rest)
    assert f"client authentication failed: client_id={cid} reason=invalid_credentials" in text
    assert "ccs_wrong-secret" not in text

    second = start(command, env)
    try:
        lines = _box(second)
    finally:
        stop(second)
    text = "\n".join(lines)
    assert "client_secret:" not in text and secret not in text
    assert f"a system admin client exists ({cid})" in text


@pytest.mark.slow
def test_serve_prod_logs_json_only_and_says_how_to_make_the_admin(tmp_path):
    port = _free_port()
    env = operator_env(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        tmp_path / "keys",
        PORT=str(port),
        HOST="127.0.0.1",
        WORKERS="1",
        ACCESS_LOG="1",
    )
    server = start([sys.executable, "serve.py"], env)
    try:
        read_until(server, "Started worker")
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base)
        assert _token(base, "nobody", "ccs_not-a-secret-xxxxxxxx") == 401
        time.sleep(0.5)
    finally:
        rest = stop(server)
    lines = [line for line in rest if line.strip()]
    # Everything read so far and the rest: JSON, every line.
    parsed = [json.loads(line) for line in lines]
    loggers = {line["logger"] for line in parsed}
    assert {"_granian", "ccserver.access", "ccserver.auth"} <= loggers
    assert "granian.access" in loggers
    messages = [line.get("message", "") for line in parsed]
    assert any("client_id=nobody reason=unknown_client" in m for m in messages)
    assert "ccs_not-a-secret" not in "\n".join(rest)


@pytest.mark.slow
def test_serve_prod_start_up_lines_are_json_and_name_the_first_admin_command(tmp_path):
    port = _free_port()
    env = operator_env(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "keys", PORT=str(port), WORKERS="1"
    )
    server = start([sys.executable, "serve.py"], env)
    try:
        lines = read_until(server, "Started worker")
    finally:
        stop(server)
    parsed = [json.loads(line) for line in lines if line.strip()]
    messages = {line["message"] for line in parsed if "message" in line}
    assert any(m.startswith("starting: database: SQLite") for m in messages)
    assert any("created current signing key" in m for m in messages)
    [admin] = [line for line in parsed if "no admin client exists" in line.get("message", "")]
    assert admin["level"] == "warning"
    assert "admin bootstrap" in admin["message"]
    assert any(m.startswith("serving console http://localhost:") for m in messages)
    assert not any("client_secret" in m for m in messages)
