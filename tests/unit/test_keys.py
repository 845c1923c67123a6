"""Unit tests: app.signing.keys, public JWKs, RFC 7638 thumbprints and which key signs.

Real keys from `cryptography`; no database, no key files.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from app.signing.keys import (
    KeyTiming,
    _Candidate,
    choose_signing_key,
    generate_private_key,
    jwk_thumbprint,
    public_jwk,
)

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
        "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4"
        "QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbO"
        "pbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
        "Cur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
# RFC 8037 Appendix A.3: an Ed25519 public key and its thumbprint.
RFC8037_KEY = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


# --- thumbprints --------------------------------------------------------------


def test_rfc7638_example_thumbprint():
    assert jwk_thumbprint(RFC7638_KEY) == RFC7638_THUMBPRINT


def test_rfc8037_example_thumbprint():
    assert jwk_thumbprint(RFC8037_KEY) == RFC8037_THUMBPRINT


def test_ec_thumbprint_hashes_the_required_members_in_order():
    jwk = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), "ES256", "k1")
    # RFC 7638 §3.2: required members only, sorted, no whitespace.
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    digest = hashlib.sha256(canonical.encode()).digest()
    assert jwk_thumbprint(jwk) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_optional_members_and_member_order_do_not_change_the_thumbprint():
    reordered = dict(reversed(list(RFC7638_KEY.items())))
    trimmed = {k: RFC7638_KEY[k] for k in ("kty", "n", "e")}
    assert jwk_thumbprint(reordered) == jwk_thumbprint(trimmed) == RFC7638_THUMBPRINT
    assert jwk_thumbprint({**RFC8037_KEY, "use": "sig", "kid": "other"}) == RFC8037_THUMBPRINT


def test_thumbprint_of_an_incomplete_or_unknown_key_raises():
    with pytest.raises(KeyError):
        jwk_thumbprint({"kty": "RSA", "n": RFC7638_KEY["n"]})
    with pytest.raises(KeyError):
        jwk_thumbprint({"kty": "oct", "k": "c2VjcmV0"})


# --- generated keys and their public JWKs -------------------------------------


@pytest.mark.parametrize(
    ("alg", "kty", "crv"),
    [
        ("ES256", "EC", "P-256"),
        ("RS256", "RSA", None),
        ("PS256", "RSA", None),
        ("EdDSA", "OKP", "Ed25519"),
    ],
)
def test_public_jwk_is_public_labelled_and_verifies(alg, kty, crv):
    private = generate_private_key(alg)
    jwk = public_jwk(private.public_key(), alg, "kid-1")
    assert not PRIVATE_MEMBERS & set(jwk)
    assert (jwk["kty"], jwk.get("crv"), jwk["alg"], jwk["kid"], jwk["use"]) == (
        kty,
        crv,
        alg,
        "kid-1",
        "sig",
    )
    # The JWK is the public half of the key: a signature by the private key verifies.
    token = jwt.encode({"sub": "x"}, private, algorithm=alg)
    assert jwt.decode(token, jwt.PyJWK.from_dict(jwk).key, algorithms=[alg]) == {"sub": "x"}
    assert len(jwk_thumbprint(jwk)) == 43


def test_an_unknown_algorithm_makes_no_key():
    with pytest.raises(ValueError):
        generate_private_key("HS256")


def test_a_private_key_is_not_taken_for_a_public_one():
    with pytest.raises(TypeError):
        public_jwk(ec.generate_private_key(ec.SECP256R1()), "ES256", "k")


# --- publish delay and the choice of signing key ------------------------------


def test_publish_delay_is_max_age_plus_refresh_plus_skew():
    assert KeyTiming(300, 10, 60).publish_delay == timedelta(seconds=370)
    config = {"JWKS_MAX_AGE": "2", "KEY_REFRESH_INTERVAL": "1", "KEY_CLOCK_SKEW": 1}
    assert KeyTiming.from_config(config).publish_delay == timedelta(seconds=4)
    assert KeyTiming.from_config({}) == KeyTiming()


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DELAY = timedelta(minutes=6)
OLD = NOW - timedelta(hours=2)
YOUNG = NOW - timedelta(seconds=5)


def test_choose_signing_key_never_picks_next_and_prefers_ripe():
    assert choose_signing_key([_Candidate("n", "next", OLD)], NOW, DELAY) is None
    keys = [_Candidate("r", "retired", OLD), _Candidate("c", "current", YOUNG)]
    assert choose_signing_key(keys, NOW, DELAY) == "r"
    keys = [_Candidate("r", "retired", OLD), _Candidate("c", "current", OLD + timedelta(1 / 24))]
    assert choose_signing_key(keys, NOW, DELAY) == "c"
    # Right after `keys init` nothing is ripe: the current key.
    keys = [_Candidate("c", "current", YOUNG), _Candidate("n", "next", YOUNG)]
    assert choose_signing_key(keys, NOW, DELAY) == "c"


def test_the_newest_ripe_retired_key_signs_while_the_current_one_ripens():
    keys = [
        _Candidate("r-oldest", "retired", NOW - timedelta(days=60)),
        _Candidate("r-newer", "retired", NOW - timedelta(days=30)),
        _Candidate("r-young", "retired", NOW - timedelta(minutes=1)),
        _Candidate("c", "current", YOUNG),
        _Candidate("n", "next", OLD),
    ]
    assert choose_signing_key(keys, NOW, DELAY) == "r-newer"


def test_a_key_exactly_publish_delay_old_is_ripe():
    keys = [_Candidate("r", "retired", OLD), _Candidate("c", "current", NOW - DELAY)]
    assert choose_signing_key(keys, NOW, DELAY) == "c"
    keys = [_Candidate("r", "retired", OLD), _Candidate("c", "current", NOW - DELAY + timedelta(1))]
    assert choose_signing_key(keys, NOW, DELAY) == "r"


def test_naive_creation_times_are_utc():
    """SQLite returns naive datetimes; they compare as the UTC they were stored as."""
    naive_old = OLD.replace(tzinfo=None)
    keys = [_Candidate("r", "retired", naive_old), _Candidate("c", "current", YOUNG)]
    assert choose_signing_key(keys, NOW, DELAY) == "r"


def test_only_young_retired_keys_sign_with_the_newest():
    keys = [
        _Candidate("r1", "retired", NOW - timedelta(minutes=2)),
        _Candidate("r2", "retired", NOW - timedelta(minutes=1)),
    ]
    assert choose_signing_key(keys, NOW, DELAY) == "r2"
    assert choose_signing_key([], NOW, DELAY) is None
