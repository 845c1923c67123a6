"""Unit: the address classifier and the URL rules of app.federation.fetch (pure functions)."""

from __future__ import annotations

import ipaddress

import pytest

from app.federation.fetch import FETCH_OUTCOMES, FetchError, address_refusal, checked_url


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud instance metadata
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("100.64.0.1", "shared"),
        ("192.0.2.10", "address"),  # documentation (TEST-NET-1)
        ("198.18.0.1", "address"),  # benchmarking
        ("240.0.0.1", "address"),
        ("255.255.255.255", "address"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b:1::1", "local-use NAT64"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("2001:db8::1", "address"),  # documentation
        ("::127.0.0.1", "address"),  # deprecated IPv4-compatible
    ],
)
# ("address": a class that Python versions name differently, private or reserved.)
def test_non_public_addresses_are_refused_with_a_reason(address, reason):
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "140.82.112.3",
        "2606:4700:4700::1111",
        "2a00:1450:4001:82a::200e",
        "::ffff:8.8.8.8",  # IPv4-mapped public address
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    ],
)
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_an_ipv6_address_with_a_zone_is_refused():
    assert "zone" in address_refusal(ipaddress.ip_address("2606:4700::1%eth0"))


@pytest.mark.parametrize(
    ("url", "outcome"),
    [
        ("http://issuer.example/jwks", "refused_url"),
        ("ftp://issuer.example/jwks", "refused_url"),
        ("file:///etc/passwd", "refused_url"),
        ("https://user:pw@issuer.example/jwks", "refused_url"),
        ("https:///jwks", "refused_url"),
        ("not a url at all", "refused_url"),
        ("https://127.0.0.1/jwks", "refused_address"),
        ("https://10.0.0.1/jwks", "refused_address"),
        ("https://[::1]/jwks", "refused_address"),
        ("https://169.254.169.254/latest/meta-data/", "refused_address"),
        ("https://[::ffff:127.0.0.1]/jwks", "refused_address"),
        ("https://[fd00::1]:8443/jwks", "refused_address"),
    ],
)
def test_checked_url_refuses(url, outcome):
    with pytest.raises(FetchError) as caught:
        checked_url(url)
    assert caught.value.outcome == outcome
    assert caught.value.outcome in FETCH_OUTCOMES


def test_checked_url_keeps_a_public_https_url_and_drops_the_fragment():
    url = checked_url("https://issuer.example:8443/keys?x=1#frag")
    assert str(url) == "https://issuer.example:8443/keys?x=1"
    # A name is judged when it resolves, at connect time, not here.
    assert str(checked_url("https://localhost/jwks")) == "https://localhost/jwks"


def test_insecure_mode_allows_http_and_any_address_but_no_other_scheme():
    assert str(checked_url("http://127.0.0.1:8080/jwks", allow_insecure=True))
    assert str(checked_url("https://10.0.0.1/jwks", allow_insecure=True))
    with pytest.raises(FetchError):
        checked_url("file:///etc/passwd", allow_insecure=True)
