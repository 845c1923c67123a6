"""Unit: the pure parts of app.oauth.rfc9449 (URL comparison, ath, nonces, key cache)."""

from __future__ import annotations

import time

import pytest

from app.oauth import rfc9449
from tests.oauth.dpop import make_dpop_key, proof, public_members, thumbprint

URL = "https://server.example.com/oauth2/token"


@pytest.mark.parametrize(
    "sent",
    [
        URL,
        "HTTPS://SERVER.EXAMPLE.COM/oauth2/token",
        "https://server.example.com:443/oauth2/token",
        URL + "?query=1",
        URL + "#fragment",
        "https://server.example.com/oauth2/%74oken",  # an escaped unreserved character
        "https://server.example.com/oauth2/./token",
        "https://server.example.com/a/../oauth2/token",
    ],
)
def test_htu_equal_after_rfc_3986_normalization(sent):
    # RFC 9449 §4.3 check 9 with RFC 3986 §6.2.2 and §6.2.3.
    assert rfc9449.normalize_url(sent) == rfc9449.normalize_url(URL)


@pytest.mark.parametrize(
    "sent",
    [
        "http://server.example.com/oauth2/token",
        "https://server.example.com:8443/oauth2/token",
        "https://server.example.com/OAUTH2/token",  # the path is case-sensitive
        "https://server.example.com/oauth2/token/",
        "https://other.example.com/oauth2/token",
        "https://user@server.example.com/oauth2/token",
    ],
)
def test_htu_different(sent):
    assert rfc9449.normalize_url(sent) != rfc9449.normalize_url(URL)


@pytest.mark.parametrize("sent", ["/oauth2/token", "ftp://server.example.com/x", "https://", "x"])
def test_not_an_http_url(sent):
    assert rfc9449.normalize_url(sent) is None


def test_empty_path_and_default_port():
    assert rfc9449.normalize_url("http://Example.COM:80") == "http://example.com/"
    assert rfc9449.normalize_url("http://[::1]:8080/a") == "http://[::1]:8080/a"
    assert rfc9449.normalize_url("https://x.example/%2f") == "https://x.example/%2F"


def test_ath_matches_rfc_9449_example():
    # RFC 9449 §7.1, Figure 12 (access token) and Figure 13 (its ath).
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert rfc9449.access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_single_header():
    assert rfc9449.single_header(None) is None
    assert rfc9449.single_header(" a.b.c ") == "a.b.c"
    for bad in ("a.b.c, d.e.f", "a.b.c,d.e.f", "", "  "):
        with pytest.raises(rfc9449.ProofError):
            rfc9449.single_header(bad)


def test_nonces_live_two_steps_and_need_the_key():
    nonces = rfc9449.Nonces(b"p" * 32, step=60)
    now = 1_000_000_020.0  # the first second of a step
    nonce = nonces.issue(now)
    assert nonces.accepts(nonce, now)
    assert nonces.accepts(nonce, now + 60)  # the next step
    assert nonces.accepts(nonce, now - 60)  # an instance whose clock is a step behind
    assert not nonces.accepts(nonce, now + 120)
    assert not rfc9449.Nonces(b"q" * 32).accepts(nonce, now)
    assert not nonces.accepts(None, now)
    assert not nonces.accepts(nonce + "x", now)
    # The key is derived: a nonce is no HMAC keyed by the pepper itself.
    import hashlib
    import hmac

    step = int(now // 60).to_bytes(8, "big", signed=True)
    direct = hmac.new(b"p" * 32, step, hashlib.sha256).digest()
    assert rfc9449._b64url(direct[:18]) != nonce


def test_key_cache_parses_a_key_once_and_stays_bounded(monkeypatch):
    parsed: list[str] = []
    real = rfc9449.parse_public_key

    def counting(jwk, alg):
        parsed.append(alg)
        return real(jwk, alg)

    monkeypatch.setattr(rfc9449, "parse_public_key", counting)
    cache = rfc9449.KeyCache(size=2)
    pairs = [make_dpop_key("ES256") for _ in range(3)]
    url = rfc9449.normalize_url(URL)
    for _ in range(3):
        rfc9449.verify_proof(
            proof(pairs[0], htu=URL), method="POST", url=url, now=time.time(), keys=cache
        )
    assert parsed == ["ES256"]
    for pair in pairs[1:]:
        rfc9449.verify_proof(
            proof(pair, htu=URL), method="POST", url=url, now=time.time(), keys=cache
        )
    assert len(cache) == 2 and len(parsed) == 3
    # The first key was dropped (least recently used): parsed again.
    rfc9449.verify_proof(
        proof(pairs[0], htu=URL), method="POST", url=url, now=time.time(), keys=cache
    )
    assert len(parsed) == 4


def test_verified_proof_names_the_rfc_7638_thumbprint():
    pair = make_dpop_key("EdDSA")
    url = rfc9449.normalize_url(URL)
    found = rfc9449.verify_proof(
        proof(pair, htu=URL, jti="j1"),
        method="POST",
        url=url,
        now=time.time(),
        keys=rfc9449.KeyCache(),
    )
    assert found.thumbprint == thumbprint(public_members(pair))
    key, expires = found.replay_entry()
    assert key == f"dpop:{found.thumbprint}:j1"
    assert abs(expires.timestamp() - (found.iat + rfc9449.IAT_LEEWAY + 1)) < 1


def test_nonce_is_checked_last():
    pair = make_dpop_key()
    url = rfc9449.normalize_url(URL)
    nonces = rfc9449.Nonces(b"p" * 32)
    with pytest.raises(rfc9449.NonceRequired):
        rfc9449.verify_proof(
            proof(pair, htu=URL),
            method="POST",
            url=url,
            now=time.time(),
            keys=rfc9449.KeyCache(),
            nonces=nonces,
        )
    # A proof that also fails another check is invalid, not a nonce request.
    with pytest.raises(rfc9449.ProofError) as caught:
        rfc9449.verify_proof(
            proof(pair, htu=URL, htm="GET"),
            method="POST",
            url=url,
            now=time.time(),
            keys=rfc9449.KeyCache(),
            nonces=nonces,
        )
    assert not isinstance(caught.value, rfc9449.NonceRequired)


def test_iat_window_is_60_seconds_each_way():
    pair = make_dpop_key()
    url = rfc9449.normalize_url(URL)
    now = 2_000_000_000.0
    keys = rfc9449.KeyCache()
    for iat in (now - 60, now + 60, now - 0.5):
        rfc9449.verify_proof(
            proof(pair, htu=URL, iat=iat), method="POST", url=url, now=now, keys=keys
        )
    for iat in (now - 61, now + 61, now - 60.5):
        with pytest.raises(rfc9449.ProofError):
            rfc9449.verify_proof(
                proof(pair, htu=URL, iat=iat), method="POST", url=url, now=now, keys=keys
            )
