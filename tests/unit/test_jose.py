"""Unit: app.jose reads and checks compact JWSs as PyJWT's decode would, without it.

Real keys and signatures throughout; PyJWT itself signs the tokens and is
the reference for what must verify.
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from app import jose

NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def keys():
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    return {
        "ES256": (ec_key, ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)),
        "PS256": (rsa_key, RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)),
        "RS256": (rsa_key, RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)),
        "EdDSA": (ed_key, OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True)),
    }


@pytest.mark.parametrize("alg", ["ES256", "PS256", "RS256", "EdDSA"])
def test_a_signed_token_verifies_with_its_key_only(keys, alg):
    private, jwk = keys[alg]
    token = jwt.encode({"sub": "x"}, private, algorithm=alg, headers={"kid": "k"})
    parsed = jose.parse(token, 16384)
    assert parsed is not None
    assert parsed.header["kid"] == "k" and parsed.claims == {"sub": "x"}
    assert jose.verify(parsed, alg, jose.public_key(jwk, alg)) is True
    other = "ES256" if alg != "ES256" else "EdDSA"
    assert jose.verify(parsed, alg, jose.public_key(keys[other][1], other)) is False
    tampered = jose.parse(token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"), 16384)
    assert tampered is not None and jose.verify(tampered, alg, jose.public_key(jwk, alg)) is False


def test_symmetric_and_none_are_never_verified(keys):
    _, jwk = keys["ES256"]
    token = jwt.encode({"sub": "x"}, "secret-secret-secret-secret-1234", algorithm="HS256")
    parsed = jose.parse(token, 16384)
    assert parsed is not None
    assert "HS256" not in jose.ALGORITHMS and "none" not in jose.ALGORITHMS
    assert jose.verify(parsed, "HS256", b"secret-secret-secret-secret-1234") is False
    unsigned = b64(b'{"alg":"none"}') + "." + b64(b"{}") + "."
    parsed_none = jose.parse(unsigned, 16384)
    assert parsed_none is not None and parsed_none.signature == b""
    assert jose.verify(parsed_none, "none", None) is False


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "!!!!.e30.c2ln",
        f"{b64(b'[1]')}.{b64(b'{}')}.c2ln",  # header not an object
        f"{b64(b'{}')}.{b64(b'not json')}.c2ln",
        f"{b64(b'{}')}.{b64(b'{}')}.a",  # 4n+1 characters: no base64
        f"{b64(bytes([0xFF, 0xFE]))}.{b64(b'{}')}.c2ln",  # not UTF-8
        f"{b64(b'{}')}.{b64(b'{}')}=.c2ln",  # padding is not base64url
        # Not JSON: RFC 8259 has no NaN or Infinity.
        b64(b"{}") + "." + b64(b'{"exp":NaN}') + ".c2ln",
        b64(b"{}") + "." + b64(b'{"exp":Infinity}') + ".c2ln",
    ],
)
def test_malformed_tokens_are_none(token):
    assert jose.parse(token, 16384) is None


def test_size_and_type_limits():
    token = f"{b64(b'{}')}.{b64(json.dumps({'x': 'y' * 100}).encode())}.c2ln"
    assert jose.parse(token, len(token)) is not None
    assert jose.parse(token, len(token) - 1) is None
    assert jose.parse(12345, 100) is None


def test_each_parse_gets_its_own_dicts():
    token = b64(b"{}") + "." + b64(b'{"a":1}') + ".c2ln"
    first = jose.parse(token, 100)
    assert first is not None
    first.claims["a"] = 2
    second = jose.parse(token, 100)
    assert second is not None and second.claims == {"a": 1}


def test_key_objects_are_built_once_per_jwk(keys):
    _, jwk = keys["ES256"]
    assert jose.public_key(jwk, "ES256") is jose.public_key(dict(jwk), "ES256")
    with pytest.raises(ValueError):
        jose.public_key(jwk, "HS256")


AUD = ["https://as.example", "https://as.example/oauth2/token"]


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"aud": AUD[0], "exp": NOW + 60}, True),
        ({"aud": ["other", AUD[1]], "exp": NOW + 60, "nbf": NOW, "iat": NOW}, True),
        ({"aud": "other", "exp": NOW + 60}, False),
        ({"aud": [AUD[0], 7], "exp": NOW + 60}, False),
        ({"aud": {"x": AUD[0]}, "exp": NOW + 60}, False),
        ({"exp": NOW + 60}, False),  # audiences given, none named
        ({"aud": AUD[0], "exp": NOW - 31}, False),
        ({"aud": AUD[0], "exp": NOW - 29}, True),  # within the leeway
        ({"aud": AUD[0], "exp": NOW + 60, "nbf": NOW + 31}, False),
        ({"aud": AUD[0], "exp": NOW + 60, "iat": NOW + 31}, False),
        ({"aud": AUD[0], "exp": NOW + 60, "iat": NOW + 29}, True),
        ({"aud": AUD[0], "exp": "1900000000"}, False),  # a string is no NumericDate
        ({"aud": AUD[0], "exp": True}, False),
        ({"aud": AUD[0], "exp": float("nan")}, False),
    ],
)
def test_registered_claims(claims, ok):
    assert jose.registered_claims_ok(claims, audiences=AUD, now=NOW, leeway=30, required=()) is ok


def test_required_claims():
    claims = {"aud": AUD[0], "exp": NOW + 60}
    assert jose.registered_claims_ok(
        claims, audiences=AUD, now=NOW, leeway=30, required=("aud", "exp")
    )
    assert not jose.registered_claims_ok(
        claims, audiences=AUD, now=NOW, leeway=30, required=("aud", "exp", "jti")
    )


def test_agrees_with_pyjwt_on_a_real_assertion(keys):
    private, jwk = keys["ES256"]
    now = int(time.time())
    claims = {"iss": "c", "sub": "c", "aud": AUD[1], "iat": now, "exp": now + 60, "jti": "j"}
    token = jwt.encode(claims, private, algorithm="ES256")
    reference = jwt.decode(token, jose.public_key(jwk, "ES256"), algorithms=["ES256"], audience=AUD)
    parsed = jose.parse(token, 16384)
    assert parsed is not None and parsed.claims == reference
    assert jose.registered_claims_ok(parsed.claims, audiences=AUD, now=time.time(), leeway=30)


@pytest.mark.parametrize(
    ("alg", "curve"),
    [("ES256", ec.SECP256R1()), ("ES384", ec.SECP384R1()), ("ES512", ec.SECP521R1())],
)
def test_ecdsa_r_and_s_agree_with_pyjwt_both_ways(alg, curve):
    """jose.sign and jose.verify build R || S themselves (RFC 7518 §3.4); PyJWT is the reference."""
    key = ec.generate_private_key(curve)
    algorithm = jwt.get_algorithm_by_name(alg)
    ours = jose.sign(alg, b"header.payload", key)
    assert len(ours) == 2 * ((curve.key_size + 7) // 8)
    assert algorithm.verify(b"header.payload", key.public_key(), ours)
    theirs = algorithm.sign(b"header.payload", key)
    jws = jose.CompactJWS({}, {}, b"header.payload", theirs)
    assert jose.verify(jws, alg, key.public_key())
    assert not jose.verify(
        jose.CompactJWS({}, {}, b"header.payload!", theirs), alg, key.public_key()
    )
    for wrong in (theirs[:-1], theirs + b"\0", b"", bytes(len(theirs))):
        assert not jose.verify(
            jose.CompactJWS({}, {}, b"header.payload", wrong), alg, key.public_key()
        )
    other = ec.generate_private_key(curve).public_key()
    assert not jose.verify(jws, alg, other)
