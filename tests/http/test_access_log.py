"""Integration: one JSON access-log line per request, X-Request-ID in and out, no secrets."""

from __future__ import annotations

import json
import logging
import re

import pytest

from app.http.access_log import ACCESS_LOGGER, JSONFormatter
from tests.conftest import basic_auth


class Lines(logging.Handler):
    """Collects the formatted lines, exactly as the production handler writes them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JSONFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def access_lines(app):
    handler = Lines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_one_json_line_per_request(client, access_lines):
    response = client.get("/healthz")
    assert response.status_code == 200
    [line] = access_lines.records()
    assert line["logger"] == ACCESS_LOGGER
    assert line["method"] == "GET"
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])
    assert line["ts"].endswith("Z")


def test_request_id_is_accepted_and_returned(client, access_lines):
    response = client.get("/healthz", headers={"X-Request-ID": "edge-7f3a:1/2"})
    assert response.headers["X-Request-ID"] == "edge-7f3a:1/2"
    assert access_lines.records()[0]["request_id"] == "edge-7f3a:1/2"


@pytest.mark.parametrize(
    "bad",
    ["x" * 129, "has space", 'quote"injection', "semi;colon", "tab\tchar", "ünïcode"],
)
def test_unsafe_request_id_is_replaced(client, access_lines, bad):
    response = client.get("/healthz", headers={"X-Request-ID": bad})
    returned = response.headers["X-Request-ID"]
    assert returned != bad
    assert re.fullmatch(r"[0-9a-f]{32}", returned)
    assert access_lines.records()[0]["request_id"] == returned
    assert bad not in "\n".join(access_lines.lines)


def test_error_responses_are_logged_with_a_request_id(client, access_lines):
    response = client.get("/no/such/path")
    assert response.status_code == 404
    assert response.headers["X-Request-ID"]
    assert access_lines.records()[0]["status"] == 404


def test_token_request_logs_client_id_but_no_credentials(client, factory, access_lines):
    cid, secret = factory.client(scopes=["read"])
    # A secret in the query is refused (RFC 6749 §2.3.1) and never logged.
    refused = client.post(
        "/oauth2/token?client_secret=" + secret,
        data={"grant_type": "client_credentials"},
        headers=basic_auth(cid, secret),
    )
    assert refused.status_code == 400
    response = client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic_auth(cid, secret)
    )
    assert response.status_code == 200
    token = response.get_json()["access_token"]
    first, line = access_lines.records()
    assert first["path"] == "/oauth2/token" and first["status"] == 400
    assert line["path"] == "/oauth2/token"
    assert line["status"] == 200
    assert line["client_id"] == cid
    text = "\n".join(access_lines.lines)
    authorization = basic_auth(cid, secret)["Authorization"]
    for needle in (secret, token, authorization.split()[1], "Basic", "client_secret"):
        assert needle not in text


def test_failed_authentication_logs_no_client_id(client, factory, access_lines):
    cid, _ = factory.client()
    response = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": cid, "client_secret": "ccs_guess"},
    )
    assert response.status_code == 401
    [line] = access_lines.records()
    assert line["status"] == 401
    assert "client_id" not in line
    assert "ccs_guess" not in access_lines.lines[0]


def test_management_api_logs_the_admin_client(client, factory, access_lines):
    admin_id, admin_secret = factory.admin("acme")
    token = factory.token(admin_id, admin_secret)["access_token"]
    access_lines.lines.clear()
    response = client.get("/api/v1/clients", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    [line] = access_lines.records()
    assert line["client_id"] == admin_id
    assert token not in access_lines.lines[0]


def test_logged_address_honours_trusted_proxies_only(app, client, access_lines):
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    client.get("/healthz", headers=forwarded, environ_base={"REMOTE_ADDR": "10.0.0.5"})
    app.config["TRUSTED_PROXIES"] = "10.0.0.0/8"
    client.get("/healthz", headers=forwarded, environ_base={"REMOTE_ADDR": "10.0.0.5"})
    untrusted, trusted = access_lines.records()
    assert untrusted["remote_addr"] == "10.0.0.5"
    assert trusted["remote_addr"] == "203.0.113.7"


def test_the_direct_write_is_the_line_the_logging_path_writes(client, monkeypatch):
    """Our handler alone gets the line written straight to its stream (app.http.access_log)."""
    import io

    from app.http import access_log as module

    logger = logging.getLogger(ACCESS_LOGGER)
    [ours] = [h for h in logger.handlers if getattr(h, "ccserver_access", False)]
    # Alone: pytest's own capture handlers are set aside for this test.
    monkeypatch.setattr(logger, "handlers", [ours])
    monkeypatch.setattr(ours, "stream", io.StringIO())
    assert module._sole_handler() is ours
    client.get("/healthz", headers={"X-Request-ID": "direct-1"})
    [direct] = ours.stream.getvalue().splitlines()

    # Another handler: the record takes the logging path, and ours formats it.
    monkeypatch.setattr(ours, "stream", io.StringIO())
    collected = Lines()
    logger.addHandler(collected)
    try:
        assert module._sole_handler() is None
        client.get("/healthz", headers={"X-Request-ID": "direct-1"})
    finally:
        logger.removeHandler(collected)
    [through_logging] = ours.stream.getvalue().splitlines()
    assert collected.lines == [through_logging]

    def shape(line: str) -> dict:
        fields = json.loads(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields.pop("ts"))
        assert isinstance(fields.pop("duration_ms"), float)
        return fields

    assert list(json.loads(direct)) == list(json.loads(through_logging))
    assert shape(direct) == shape(through_logging)
    assert shape(direct)["request_id"] == "direct-1"


def test_a_filter_on_the_access_logger_still_applies(client, monkeypatch):
    import io

    logger = logging.getLogger(ACCESS_LOGGER)
    [ours] = [h for h in logger.handlers if getattr(h, "ccserver_access", False)]
    monkeypatch.setattr(logger, "handlers", [ours])
    monkeypatch.setattr(ours, "stream", io.StringIO())
    dropped = logging.Filter("nothing.matches")
    logger.addFilter(dropped)
    try:
        client.get("/healthz")
    finally:
        logger.removeFilter(dropped)
    assert ours.stream.getvalue() == ""
