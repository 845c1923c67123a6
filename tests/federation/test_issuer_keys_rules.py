"""Unit: Cache-Control bounds and JWK Set rules of app.federation.issuer_keys (pure functions)."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from app.federation.issuer_keys import InvalidKeySet, cache_lifetime, public_signing_keys


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 300),
        ("", 300),
        ("public", 300),
        ("max-age=600", 600),
        ("public, max-age=3600, must-revalidate", 3600),
        ("MAX-AGE=120", 120),
        ('max-age="900"', 900),
        ("max-age=0", 60),
        ("max-age=5", 60),
        ("max-age=59", 60),
        ("max-age=60", 60),
        ("max-age=86400", 86400),
        ("max-age=86401", 86400),
        ("max-age=99999999999999999999999", 86400),
        ("max-age=-5", 300),
        ("max-age=abc", 300),
        ("max-age=", 300),
        ("no-store", 300),
        ("no-store, max-age=3600", 300),
        ("max-age=3600, no-cache", 300),
        ("s-maxage=7200", 300),
    ],
)
def test_cache_lifetime_is_bounded_to_60_s_through_24_h(header, seconds):
    assert cache_lifetime(header) == seconds


def _ec_jwk(**extra):
    key = ec.generate_private_key(ec.SECP256R1())
    return {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), **extra}, key


def _rsa_jwk(bits=2048, **extra):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), **extra}, key


def test_public_signature_keys_are_kept_with_their_kid():
    ec_jwk, _ = _ec_jwk(kid="e1", use="sig", alg="ES256")
    rsa_jwk, _ = _rsa_jwk(kid="r1")
    okp = ed25519.Ed25519PrivateKey.generate()
    okp_jwk = {**OKPAlgorithm.to_jwk(okp.public_key(), as_dict=True), "kid": "o1"}
    keys = public_signing_keys({"keys": [ec_jwk, rsa_jwk, okp_jwk]})
    assert [key.key_id for key in keys] == ["e1", "r1", "o1"]
    assert all(isinstance(key, jwt.PyJWK) for key in keys)


def test_keys_this_server_would_not_use_are_skipped():
    enc, _ = _ec_jwk(kid="enc", use="enc")
    wrap, _ = _ec_jwk(kid="wrap", key_ops=["wrapKey"])
    hmac_alg, _ = _ec_jwk(kid="hs", alg="HS256")
    none_alg, _ = _ec_jwk(kid="none", alg="none")
    small_rsa, _ = _rsa_jwk(bits=1024, kid="small")
    unknown_kty = {"kty": "XYZ", "kid": "x"}
    bad_curve = {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "kid": "c"}
    good, _ = _ec_jwk(kid="good")
    document = {"keys": [enc, wrap, hmac_alg, none_alg, small_rsa, unknown_kty, bad_curve, good]}
    assert [key.key_id for key in public_signing_keys(document)] == ["good"]


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "k"])
def test_a_key_set_with_private_members_is_refused_whole(member):
    good, _ = _ec_jwk(kid="good")
    leaky, _ = _ec_jwk(kid="leaky")
    leaky[member] = "AQAB"
    with pytest.raises(InvalidKeySet) as caught:
        public_signing_keys({"keys": [good, leaky]})
    assert caught.value.outcome == "private_key"
    assert "AQAB" not in caught.value.reason


def test_a_real_private_jwk_is_refused():
    _, key = _ec_jwk()
    private = ECAlgorithm.to_jwk(key, as_dict=True)
    with pytest.raises(InvalidKeySet, match="private"):
        public_signing_keys({"keys": [private]})


def test_a_symmetric_key_is_refused():
    with pytest.raises(InvalidKeySet):
        public_signing_keys({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})


@pytest.mark.parametrize(
    "document", [[], "keys", {"keys": "x"}, {"nokeys": []}, {"keys": ["not an object"]}, None]
)
def test_something_that_is_no_key_set_is_refused(document):
    with pytest.raises(InvalidKeySet) as caught:
        public_signing_keys(document)
    assert caught.value.outcome == "invalid_document"


def test_at_most_100_keys_are_kept():
    jwk, _ = _ec_jwk()
    keys = public_signing_keys({"keys": [dict(jwk, kid=str(n)) for n in range(150)]})
    assert len(keys) == 100
