"""The client's network address, honouring X-Forwarded-For only from trusted proxies.

`TRUSTED_PROXIES` is a comma-separated list of addresses or CIDR blocks
(default empty). When the peer (`REMOTE_ADDR`) is not in it, the header is
ignored: anyone can write X-Forwarded-For, so trusting it from an untrusted
peer would let an attacker pick the address that rate limits count against.
When the peer is trusted, the header is read from the right: each trusted
proxy appends the address it saw, so the first entry (from the right) that is
not itself a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from flask import current_app, g, has_request_context, request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=32)
def _parse_networks(spec: str) -> tuple[Network, ...]:
    networks = []
    for part in spec.split(","):
        part = part.strip()
        if part:
            # strict=False: "10.0.0.1/8" means the block, as operators expect.
            networks.append(ipaddress.ip_network(part, strict=False))
    return tuple(networks)


def parse_trusted_proxies(value: str | Iterable[str] | None) -> tuple[Network, ...]:
    """Networks from a comma-separated string or a list of strings.

    :raise ValueError: an entry is not an address or CIDR block.
    """
    if not value:
        return ()
    if not isinstance(value, str):
        value = ",".join(value)
    return _parse_networks(value)


# Every request parses its peer's address (and the limiter and the access log
# both ask): the same few peers come back, so keep their parses. Bounded, and
# a pure function of the string, so a flood of odd values only evicts entries.
@lru_cache(maxsize=1024)
def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    # "[2001:db8::1]:443" and "192.0.2.1:443" forms some proxies write.
    if value.startswith("[") and "]" in value:
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=1024)
def _text(value: str) -> str:
    """The canonical text of an address, or the value itself when it is none."""
    address = _ip(value)
    return str(address) if address is not None else (value or "unknown")


def _trusted(address, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def resolve_client_address(
    remote_addr: str | None, forwarded_for: list[str], networks: tuple[Network, ...]
) -> str:
    """The client address given the peer, the X-Forwarded-For values and trusted networks."""
    peer = _ip(remote_addr or "")
    fallback = _text(remote_addr or "")
    if not networks or not _trusted(peer, networks):
        return fallback
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = fallback
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            # A trusted proxy wrote something that is not an address: stop at
            # the last hop we could trust rather than believe what lies left of it.
            return client
        client = str(address)
        if not _trusted(address, networks):
            return client
    # Every hop is a trusted proxy: the leftmost one is as far as we can see.
    return client


def peer_is_trusted(environ: dict) -> bool:
    """Whether the socket peer of `environ` is one of TRUSTED_PROXIES."""
    networks = parse_trusted_proxies(current_app.config.get("TRUSTED_PROXIES"))
    return bool(networks) and _trusted(_ip(environ.get("REMOTE_ADDR") or ""), networks)


_ENVIRON_KEY = "ccserver.client_address"


def request_environ() -> dict:
    """The WSGI environ of the request being served.

    app.oauth.fastpath serves token requests in an app context alone and keeps their
    environ in `g.wsgi_environ`; everything else has Flask's request context.

    :raise RuntimeError: no request is being served.
    """
    if has_request_context():
        return request.environ
    environ = g.get("wsgi_environ")
    if environ is None:
        raise RuntimeError("no request is being served")
    return environ


def client_address(environ: dict | None = None) -> str:
    """The address of the client of `environ`, by default the current request's.

    See the module docstring for how trusted proxies are honoured.
    """
    if environ is None:
        environ = request_environ()
    address = environ.get(_ENVIRON_KEY)
    if address is None:
        networks = parse_trusted_proxies(current_app.config.get("TRUSTED_PROXIES"))
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "") if networks else ""
        address = resolve_client_address(environ.get("REMOTE_ADDR"), [forwarded], networks)
        # Asked twice per token request (rate limit, access log): resolve once.
        environ[_ENVIRON_KEY] = address
    return address
