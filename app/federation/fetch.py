"""One GET of a JSON document from an issuer, made safe to aim at any URL an admin typed.

An admin names the URLs (a federated credential's `issuer` or `jwks_uri`),
and this server fetches them: without care that is a server-side request
forgery into the server's own network. So (docs/federation-keys.md):

- `https` only, and never a URL with user information;
- the host is resolved first and every address it resolves to must be a
  public unicast one (`address_refusal`), and the connection goes to an
  address that was checked: the check runs inside the connection itself
  (`_CheckedBackend`), so a DNS answer cannot change between check and
  connect (no DNS rebinding), while TLS still verifies the certificate for
  the name (SNI and `Host` are the name);
- no redirect is followed (a 3xx is a failure), no proxy from the
  environment is used;
- the whole fetch (DNS, connect, TLS, request, body) has one deadline,
  3 s by default; the body is read at most 256 KiB, counted while it
  streams in; only an uncompressed JSON body is accepted.

`FEDERATION_ALLOW_INSECURE=1` (`FetchPolicy.allow_insecure`) lifts the
`https` and address rules for tests and labs, and every such fetch logs a
warning. The time, size and JSON rules always hold.

Exceptions::

    FetchError            .outcome: a metric label from FETCH_OUTCOMES; .reason: for the log
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Total time of one fetch, seconds (docs/api.md §1.3).
DEFAULT_TIMEOUT = 3.0
#: Largest body read, bytes (docs/api.md §1.3).
DEFAULT_MAX_BYTES = 256 * 1024

#: The outcome of a fetch: the only values of the metric's `outcome` label.
FETCH_OUTCOMES = (
    "ok",
    "refused_url",  # not https, user information, not a URL
    "refused_address",  # resolves to a loopback, private, link-local ... address
    "dns_error",
    "connect_error",
    "tls_error",
    "network_error",  # the connection broke or the HTTP was malformed
    "timeout",
    "redirect",
    "http_error",  # a status other than 200 (and not a redirect)
    "too_large",
    "not_json",
    "invalid_document",  # JSON, but not a JWKS or discovery document
    "issuer_mismatch",  # discovery: the document's `issuer` is not the issuer asked
    "private_key",  # a JWKS holding private key members
)

# RFC 6598 shared address space (carrier-grade NAT): not global, though
# older Pythons do not count it as private.
_SHARED_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
# RFC 6052 well-known NAT64 prefix: the last 32 bits are an IPv4 address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 8215 local-use NAT64 prefix: leads into a private network by design.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


class FetchError(Exception):
    """A fetch failed; `outcome` is one of FETCH_OUTCOMES, `reason` says why (never a token)."""

    def __init__(self, outcome: str, reason: str) -> None:
        assert outcome in FETCH_OUTCOMES, outcome
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, where the network delivers it to that address."""
    if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d, RFC 4291 §2.5.5.2
        return address.ipv4_mapped
    if address.sixtofour is not None:  # 2002:abcd:...::/16, RFC 3056
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Why `address` is no public unicast address (a short phrase), or None when it is one.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, NAT64) are
    judged by that IPv4 address; a Teredo address hides its client's, so it
    is refused.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "an IPv6 address with a zone"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_refusal(embedded)
            return f"{reason} (as {address})" if reason else None
        if address.teredo is not None:
            return "a Teredo address"
        if address in _LOCAL_NAT64:
            return "a local-use NAT64 address"
        if address.is_site_local:
            return "a site-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_SPACE:
        return "a shared (carrier-grade NAT) address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "an address that is not globally reachable"
    return None


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def checked_url(
    url: str,
    *,
    allow_insecure: bool = False,
    refuse_address: Callable[[IPAddress], str | None] | None = address_refusal,
) -> httpx.URL:
    """`url` parsed, when the rules allow fetching it (an address literal is judged here, a
    name only when it is resolved, at connect time).

    :raises FetchError: `refused_url` or `refused_address`.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("refused_url", "not a valid URL") from None
    if parsed.scheme != "https" and not (allow_insecure and parsed.scheme == "http"):
        raise FetchError("refused_url", f"{parsed.scheme or 'no'} scheme: only https is fetched")
    if not parsed.host:
        raise FetchError("refused_url", "a URL without a host")
    if parsed.userinfo:
        raise FetchError("refused_url", "a URL with user information")
    if not allow_insecure and refuse_address is not None:
        literal = _ip_literal(parsed.host)
        refusal = refuse_address(literal) if literal is not None else None
        if refusal:
            raise FetchError("refused_address", f"{parsed.host} is {refusal}")
    return parsed.copy_with(fragment=None)


@dataclass(frozen=True)
class FetchPolicy:
    """How fetches are made; the defaults are the production rules."""

    #: Seconds for the whole fetch: DNS, connect, TLS, request and body.
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    #: FEDERATION_ALLOW_INSECURE: http allowed, any address.
    allow_insecure: bool = False
    #: The address rule; a test may pass a laxer one to reach a local TLS server.
    refuse_address: Callable[[IPAddress], str | None] = address_refusal
    #: Trust anchors for TLS; None: httpx's default (certifi).
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Fetched:
    """A fetched JSON document and the response's Cache-Control header."""

    document: Any
    cache_control: str | None


# getaddrinfo has no timeout of its own; it runs here so a fetch can stop
# waiting for it at the deadline (the lookup then finishes on its own).
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="issuer-dns")
_default_context: ssl.SSLContext | None = None
_context_lock = threading.Lock()


def _ssl_context(policy: FetchPolicy) -> ssl.SSLContext:
    global _default_context
    if policy.ssl_context is not None:
        return policy.ssl_context
    with _context_lock:
        if _default_context is None:
            context = httpx.create_ssl_context(trust_env=False)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            _default_context = context
        return _default_context


def _remaining(deadline: float, timeout: float | None, exc: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("the fetch's time limit was reached")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the fetch's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(
            max_bytes, _remaining(self._deadline, timeout, httpcore.ReadTimeout)
        )

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _remaining(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        budget = _remaining(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, budget), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _CheckedBackend(httpcore.NetworkBackend):
    """Opens connections only to addresses the policy allows, checked as the name resolves."""

    def __init__(self, policy: FetchPolicy, deadline: float) -> None:
        self._policy = policy
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def _addresses(self, host: str, port: int) -> list[str]:
        if self._policy.allow_insecure:
            return [host]
        literal = _ip_literal(host)
        if literal is not None:
            found = [literal]
        else:
            lookup = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
            try:
                answers = lookup.result(timeout=_remaining(self._deadline, None, FutureTimeout))
            except FutureTimeout:
                raise FetchError("timeout", f"resolving {host} took too long") from None
            except (OSError, UnicodeError) as exc:
                raise FetchError("dns_error", f"{host} does not resolve ({exc})") from None
            found = []
            for _family, _type, _proto, _name, sockaddr in answers:
                address = ipaddress.ip_address(sockaddr[0])
                if address not in found:
                    found.append(address)
        # Every answer must pass: an attacker's DNS that mixes a public and
        # a private address gets no chance at the private one.
        for address in found:
            refusal = self._policy.refuse_address(address)
            if refusal:
                raise FetchError("refused_address", f"{host} resolves to {address}, {refusal}")
        if not found:
            raise FetchError("dns_error", f"{host} has no address")
        return [str(address) for address in found]

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in self._addresses(host, port):
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    _remaining(self._deadline, timeout, httpcore.ConnectTimeout),
                    local_address,
                    socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc  # try the next checked address
                continue
            return _DeadlineStream(stream, self._deadline)
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise FetchError("refused_url", "a Unix socket")


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _CheckedTransport(httpx.BaseTransport):
    """httpx's transport over one httpcore connection pool that uses `_CheckedBackend`.

    (httpx.HTTPTransport builds its pool without a way to give it a network
    backend; this is its request and response mapping, without retries.)
    """

    def __init__(self, policy: FetchPolicy, deadline: float) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(policy),
            max_connections=1,
            retries=0,
            network_backend=_CheckedBackend(policy, deadline),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        response = self._pool.handle_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    # application/json, and RFC 6839 structured syntax suffixes such as
    # RFC 7517 §8.5's application/jwk-set+json.
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _read_body(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError("too_large", f"{url}: Content-Length {declared} > {max_bytes} bytes")
    body = bytearray()
    # Counted as it arrives: a chunked or lying body stops at the cap, not after.
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > max_bytes:
            raise FetchError("too_large", f"{url}: body larger than {max_bytes} bytes")
    return bytes(body)


def _network_failure(exc: Exception, url: str) -> FetchError:
    if isinstance(exc, httpcore.TimeoutException | httpx.TimeoutException):
        return FetchError("timeout", f"{url}: no answer within the time limit")
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError) or isinstance(exc, ssl.SSLError):
        detail = getattr(cause, "verify_message", None) or type(cause).__name__
        return FetchError("tls_error", f"{url}: TLS failed ({detail})")
    if isinstance(exc, httpcore.ConnectError | httpx.ConnectError):
        return FetchError("connect_error", f"{url}: cannot connect ({exc})")
    return FetchError("network_error", f"{url}: {type(exc).__name__}")


def fetch_json(url: str, policy: FetchPolicy | None = None) -> Fetched:
    """GET `url` and parse its JSON body, under `policy` (default: the production rules).

    :raises FetchError: anything short of a 200 answer with a JSON body, within the rules.
    """
    policy = policy or FetchPolicy()
    parsed = checked_url(
        url, allow_insecure=policy.allow_insecure, refuse_address=policy.refuse_address
    )
    shown = str(parsed)
    if policy.allow_insecure:
        log.warning(
            "FEDERATION_ALLOW_INSECURE=1: fetching %s without the https and public-address"
            " rules; never use this setting in production",
            shown,
        )
    deadline = time.monotonic() + policy.timeout
    client = httpx.Client(
        transport=_CheckedTransport(policy, deadline),
        follow_redirects=False,
        trust_env=False,  # no proxy, no .netrc: the address checked is the one connected to
        timeout=httpx.Timeout(policy.timeout),
        headers={
            "Accept": "application/json, application/jwk-set+json",
            "Accept-Encoding": "identity",
            "User-Agent": "ccserver-federation",
        },
    )
    try:
        with client, client.stream("GET", parsed) as response:
            if 300 <= response.status_code < 400:
                raise FetchError(
                    "redirect", f"{shown}: answered {response.status_code}; redirects are refused"
                )
            if response.status_code != 200:
                raise FetchError("http_error", f"{shown}: answered {response.status_code}")
            content_type = response.headers.get("content-type")
            if not _is_json(content_type):
                raise FetchError("not_json", f"{shown}: Content-Type {content_type!r}, not JSON")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                # Decompressing is where a small body becomes a large one.
                raise FetchError("not_json", f"{shown}: Content-Encoding {encoding!r}")
            body = _read_body(response, shown, policy.max_bytes)
            cache_control = response.headers.get("cache-control")
    except FetchError:
        raise
    except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError) as exc:
        raise _network_failure(exc, shown) from None
    except httpx.HTTPError as exc:
        raise _network_failure(exc, shown) from None
    except ssl.SSLError as exc:
        raise _network_failure(exc, shown) from None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise FetchError("not_json", f"{shown}: the body is not valid JSON") from None
    return Fetched(document, cache_control)
