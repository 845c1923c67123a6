"""Unit tests: app.http.client_address, TRUSTED_PROXIES parsing and X-Forwarded-For resolution.

Pure functions of strings; the HTTP side (the limiter counting the resolved
address) is tests/hardening/test_rate_limit.py's
`test_forwarded_for_is_honoured_only_from_trusted_proxies`.
"""

from __future__ import annotations

import ipaddress

import pytest

from app.http.client_address import parse_trusted_proxies, resolve_client_address

TRUSTED = parse_trusted_proxies("10.0.0.0/8,2001:db8::/32")


# --- TRUSTED_PROXIES ----------------------------------------------------------


@pytest.mark.parametrize("empty", [None, "", [], ()])
def test_no_trusted_proxies(empty):
    assert parse_trusted_proxies(empty) == ()


def test_addresses_and_blocks_with_spaces_and_empty_entries():
    networks = parse_trusted_proxies(" 10.0.0.0/8 , 192.0.2.7,, 2001:db8::/32 ,")
    assert networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_a_list_reads_as_the_comma_separated_string():
    listed = parse_trusted_proxies(["10.0.0.0/8", "2001:db8::/32"])
    assert listed == parse_trusted_proxies("10.0.0.0/8,2001:db8::/32") == TRUSTED


def test_host_bits_mean_the_block():
    """ "10.1.2.3/8" is what an operator writes for 10.0.0.0/8; refusing it helps nobody."""
    assert parse_trusted_proxies("10.1.2.3/8") == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    "bad", ["proxy.example", "10.0.0.0/33", "10.0.0", "::g", "10.0.0.1 10.0.0.2"]
)
def test_an_entry_that_is_no_address_is_a_configuration_error(bad):
    with pytest.raises(ValueError):
        parse_trusted_proxies(f"10.0.0.0/8,{bad}")


# --- resolving the client -----------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("192.0.2.1", "203.0.113.5", "192.0.2.1"),  # untrusted peer: header ignored
        ("10.0.0.1", "", "10.0.0.1"),  # trusted peer, no header
        ("10.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("10.0.0.1", "1.1.1.1, 203.0.113.5", "203.0.113.5"),  # leftmost is spoofable
        ("10.0.0.1", "203.0.113.5, 10.1.2.3", "203.0.113.5"),  # two trusted hops
        ("10.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # all trusted: leftmost
        ("10.0.0.1", "garbage, 10.1.2.3", "10.1.2.3"),  # stop at the last good hop
        ("10.0.0.1", "203.0.113.5:4711", "203.0.113.5"),
        ("2001:db8::1", "[2001:db8:1::5]:443, 2001:0db8::2", "2001:db8:1::5"),
        ("::ffff:10.0.0.1", "198.51.100.1", "198.51.100.1"),
    ],
)
def test_resolve_client_address(remote, forwarded, expected):
    assert resolve_client_address(remote, [forwarded], TRUSTED) == expected


def test_without_trusted_proxies_the_header_is_never_read():
    assert resolve_client_address("10.0.0.1", ["203.0.113.5"], ()) == "10.0.0.1"


def test_several_header_lines_are_one_list_in_order():
    """RFC 9110 §5.3: repeated header lines are one comma-separated list."""
    lines = ["198.51.100.9, 203.0.113.5", "10.1.2.3"]
    assert resolve_client_address("10.0.0.1", lines, TRUSTED) == "203.0.113.5"


def test_empty_hops_are_skipped():
    assert resolve_client_address("10.0.0.1", [" , 203.0.113.5 , ,"], TRUSTED) == "203.0.113.5"


def test_a_bad_hop_next_to_the_proxy_leaves_the_proxy():
    """Nothing to the left of an unreadable entry is believed, not even a good address."""
    assert resolve_client_address("10.0.0.1", ["203.0.113.5, nonsense"], TRUSTED) == "10.0.0.1"


def test_peer_addresses_are_normalised():
    assert resolve_client_address("::ffff:192.0.2.1", [], TRUSTED) == "192.0.2.1"
    assert resolve_client_address("2001:0DB8:0000::0001", [], ()) == "2001:db8::1"
    assert resolve_client_address("192.0.2.1:5555", [], ()) == "192.0.2.1"


def test_ipv4_mapped_hops_count_as_their_ipv4_address():
    # A mapped form of a trusted proxy is that proxy; of a client, that client.
    hops = ["::ffff:203.0.113.5, ::ffff:10.1.2.3"]
    assert resolve_client_address("10.0.0.1", hops, TRUSTED) == "203.0.113.5"


@pytest.mark.parametrize(("remote", "expected"), [(None, "unknown"), ("", "unknown"), ("x", "x")])
def test_an_unreadable_peer_is_reported_as_given(remote, expected):
    # No trusted network contains it, so the header is ignored as from anyone.
    assert resolve_client_address(remote, ["203.0.113.5"], TRUSTED) == expected
