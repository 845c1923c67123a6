"""Integration: app.federation.fetch against real local servers (plain TCP, werkzeug, TLS).

Plain-http servers are reached with FEDERATION_ALLOW_INSECURE's policy; the
https path runs against a local TLS server whose certificate comes from a
trustme CA, with the address rule relaxed through the policy's test hook.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time

import pytest
import trustme
from pytest_httpserver import HTTPServer
from werkzeug import Response

from app.federation.fetch import FetchError, FetchPolicy, fetch_json

INSECURE = FetchPolicy(allow_insecure=True, timeout=2.0)
JWKS = {"keys": []}


class RawServer:
    """A TCP server on 127.0.0.1 that runs `handler(connection)` per connection and counts them."""

    def __init__(self, handler=None) -> None:
        self.handler = handler or (lambda conn: time.sleep(5))
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.recv(65536)  # the request
            self.handler(conn)

    def url(self, path: str = "/jwks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def raw_server():
    made = []

    def make(handler=None) -> RawServer:
        server = RawServer(handler)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def _failure(url: str, policy: FetchPolicy = INSECURE) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch_json(url, policy)
    return caught.value


def test_a_json_document_is_fetched_with_its_cache_control(httpserver: HTTPServer, caplog):
    httpserver.expect_request("/jwks").respond_with_json(
        JWKS, headers={"Cache-Control": "public, max-age=600"}
    )
    with caplog.at_level(logging.WARNING, logger="app.federation.fetch"):
        fetched = fetch_json(httpserver.url_for("/jwks"), INSECURE)
    assert fetched.document == JWKS
    assert fetched.cache_control == "public, max-age=600"
    # FEDERATION_ALLOW_INSECURE is loud on every fetch.
    assert "FEDERATION_ALLOW_INSECURE=1" in caplog.text
    request, _ = httpserver.log[0]
    assert request.headers["Accept-Encoding"] == "identity"


def test_jwk_set_media_type_is_json(httpserver: HTTPServer):
    httpserver.expect_request("/jwks").respond_with_data(
        json.dumps(JWKS), content_type="application/jwk-set+json; charset=utf-8"
    )
    assert fetch_json(httpserver.url_for("/jwks"), INSECURE).document == JWKS


def test_a_redirect_is_refused_and_not_followed(httpserver: HTTPServer):
    httpserver.expect_request("/jwks").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_json(JWKS)
    failure = _failure(httpserver.url_for("/jwks"))
    assert failure.outcome == "redirect"
    assert [request.path for request, _ in httpserver.log] == ["/jwks"]


@pytest.mark.parametrize("status", [404, 500, 204])
def test_a_status_other_than_200_fails(httpserver: HTTPServer, status):
    httpserver.expect_request("/jwks").respond_with_json(JWKS, status=status)
    assert _failure(httpserver.url_for("/jwks")).outcome == "http_error"


@pytest.mark.parametrize(
    ("body", "content_type", "headers"),
    [
        ("<html>hello</html>", "text/html", {}),
        ('{"keys": []}', "text/plain", {}),
        ("{not json", "application/json", {}),
        ('{"keys": []}', "application/json", {"Content-Encoding": "gzip"}),
    ],
)
def test_only_an_uncompressed_json_body_is_accepted(
    httpserver: HTTPServer, body, content_type, headers
):
    httpserver.expect_request("/jwks").respond_with_data(
        body, content_type=content_type, headers=headers
    )
    assert _failure(httpserver.url_for("/jwks")).outcome == "not_json"


def _chunked_forever(conn: socket.socket) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 16384
    while True:  # until the client hangs up
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def test_the_size_cap_holds_while_streaming_a_chunked_body(raw_server):
    server = raw_server(_chunked_forever)
    started = time.monotonic()
    failure = _failure(server.url())
    assert failure.outcome == "too_large"
    assert "262144" in failure.reason
    # An endless body: only stopping at the cap ends the fetch this soon.
    assert time.monotonic() - started < 1.5


def test_a_300_kib_chunked_body_is_refused(raw_server):
    def answer(conn):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        body = b'{"keys": [], "pad": "' + b"x" * (300 * 1024) + b'"}'
        for start in range(0, len(body), 8192):
            part = body[start : start + 8192]
            conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        conn.sendall(b"0\r\n\r\n")

    assert _failure(raw_server(answer).url()).outcome == "too_large"


def test_a_declared_content_length_over_the_cap_is_refused_before_reading(raw_server):
    def answer(conn):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10485760\r\n\r\n{"
        )
        time.sleep(5)  # the rest never comes: reading it would time out

    started = time.monotonic()
    assert _failure(raw_server(answer).url()).outcome == "too_large"
    assert time.monotonic() - started < 1.0


def test_a_body_of_exactly_the_cap_is_read(httpserver: HTTPServer):
    body = b'{"keys": [], "pad": "' + b"x" * (256 * 1024 - 23) + b'"}'
    assert len(body) == 256 * 1024
    httpserver.expect_request("/jwks").respond_with_data(body, content_type="application/json")
    assert fetch_json(httpserver.url_for("/jwks"), INSECURE).document["keys"] == []


def test_a_server_that_never_answers_times_out(raw_server):
    server = raw_server(lambda conn: time.sleep(5))
    started = time.monotonic()
    failure = _failure(server.url(), FetchPolicy(allow_insecure=True, timeout=0.5))
    assert failure.outcome == "timeout"
    assert time.monotonic() - started < 1.5


def test_the_time_limit_covers_the_whole_fetch_not_each_read(raw_server):
    def drip(conn):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        while True:  # a byte every 0.1 s: no single read ever waits 0.5 s
            conn.sendall(b"1\r\n \r\n")
            time.sleep(0.1)

    started = time.monotonic()
    failure = _failure(raw_server(drip).url(), FetchPolicy(allow_insecure=True, timeout=0.5))
    assert failure.outcome == "timeout"
    assert time.monotonic() - started < 1.2


def test_the_default_time_limit_is_3_s():
    assert FetchPolicy().timeout == 3.0
    assert FetchPolicy().max_bytes == 256 * 1024


def test_a_name_that_does_not_resolve_fails(raw_server):
    assert _failure("https://no-such-host.invalid/jwks", FetchPolicy()).outcome == "dns_error"


def test_a_closed_port_fails_to_connect():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert _failure(f"http://127.0.0.1:{port}/jwks").outcome == "connect_error"


# --- addresses: refused without any connection --------------------------------------------


@pytest.fixture
def no_connection(monkeypatch):
    """Fail the test if anything opens a TCP connection (a tripwire, beside real listeners)."""

    def tripwire(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", tripwire)


@pytest.fixture
def listeners():
    """A listening port on 127.0.0.1 and, when the host has IPv6, the same on ::1."""
    servers = [RawServer()]
    port = servers[0].port
    v6 = None
    if socket.has_ipv6:
        with contextlib.suppress(OSError):
            v6 = socket.socket(socket.AF_INET6)
            v6.bind(("::1", port))
            v6.listen(4)
            v6.setblocking(False)
    yield port, servers[0], v6
    for server in servers:
        server.close()
    if v6 is not None:
        v6.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/jwks",
        "http://issuer.example/jwks",
        "https://127.0.0.1:{port}/jwks",
        "https://10.0.0.1/jwks",
        "https://[::1]:{port}/jwks",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:127.0.0.1]:{port}/jwks",
        "https://localhost:{port}/jwks",
    ],
)
def test_without_the_flag_non_public_targets_are_refused_before_connecting(
    url, listeners, no_connection
):
    port, v4, v6 = listeners
    failure = _failure(url.format(port=port), FetchPolicy())
    assert failure.outcome in ("refused_url", "refused_address")
    time.sleep(0.1)  # time for a connection to show, had one been made
    assert v4.connections == 0
    if v6 is not None:
        with pytest.raises(BlockingIOError):
            v6.accept()


# --- https: a local TLS server with a trustme CA ----------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_server(ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def _trusting(ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _local_tls_policy(ca, **kwargs) -> FetchPolicy:
    # HTTPS rules as in production, only the address rule relaxed (the server is local).
    return FetchPolicy(refuse_address=lambda address: None, ssl_context=_trusting(ca), **kwargs)


def test_https_fetch_verifies_the_certificate_for_the_name(ca, tls_server, caplog):
    tls_server.expect_request("/jwks").respond_with_json(JWKS)
    url = f"https://localhost:{tls_server.port}/jwks"
    with caplog.at_level(logging.WARNING, logger="app.federation.fetch"):
        assert fetch_json(url, _local_tls_policy(ca)).document == JWKS
    assert "FEDERATION_ALLOW_INSECURE" not in caplog.text
    request, _ = tls_server.log[0]
    # Connected to the checked address, while Host (and SNI) stay the name.
    assert request.headers["Host"] == f"localhost:{tls_server.port}"


def test_https_with_an_untrusted_certificate_fails(tls_server):
    tls_server.expect_request("/jwks").respond_with_json(JWKS)
    url = f"https://localhost:{tls_server.port}/jwks"
    policy = FetchPolicy(refuse_address=lambda address: None)  # the public CAs only
    assert _failure(url, policy).outcome == "tls_error"
    assert tls_server.log == []


def test_https_with_a_certificate_for_another_name_fails(ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("other.example").configure_cert(context)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    try:
        server.expect_request("/jwks").respond_with_json(JWKS)
        failure = _failure(f"https://localhost:{server.port}/jwks", _local_tls_policy(ca))
        assert failure.outcome == "tls_error"
    finally:
        server.stop()


def test_https_redirect_is_refused_too(ca, tls_server):
    tls_server.expect_request("/jwks").respond_with_response(
        Response("", status=301, headers={"Location": "https://169.254.169.254/"})
    )
    failure = _failure(f"https://localhost:{tls_server.port}/jwks", _local_tls_policy(ca))
    assert failure.outcome == "redirect"


def test_https_time_limit_holds_during_the_tls_handshake(ca, raw_server):
    # A TCP server that never speaks TLS: the handshake must end at the deadline.
    server = raw_server(lambda conn: time.sleep(5))
    started = time.monotonic()
    failure = _failure(f"https://localhost:{server.port}/jwks", _local_tls_policy(ca, timeout=0.5))
    assert failure.outcome == "timeout"
    assert time.monotonic() - started < 1.5
