"""Unit: the pure functions of the /oauth2/* endpoints (form and Basic parsing, assertion checks).

No app, no database: each function takes values and gives values or raises.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from authlib.oauth2.rfc6749 import InvalidRequestError

from app.clients.records import KeyRecord
from app.oauth.client_auth import methods_used
from app.oauth.requests import FormRequest, parse_basic_credentials, parse_form
from app.oauth.rfc7523 import (
    LEEWAY,
    MAX_LIFETIME,
    audiences,
    candidate_keys,
    claims_acceptable,
    parse_unverified,
)

# --- parse_form: RFC 6749 §3.2 bodies ---------------------------------------------------------


def test_form_pairs_in_order_with_blank_values():
    assert parse_form(b"grant_type=client_credentials&scope=&resource=a&resource=b") == [
        ("grant_type", "client_credentials"),
        ("scope", ""),
        ("resource", "a"),
        ("resource", "b"),
    ]


def test_form_is_percent_and_plus_decoded():
    assert parse_form(b"scope=a+b%20c&x=%C3%A9") == [("scope", "a b c"), ("x", "é")]


def test_empty_body_is_no_pairs():
    assert parse_form(b"") == []


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe=1",  # not UTF-8
        b"x=%FF",  # percent-encoded bytes that are not UTF-8
        b"x=a%00b",  # NUL in a value
        b"%00=1",  # NUL in a name
        b"&".join(b"f%d=1" % i for i in range(101)),  # more than 100 fields
    ],
    ids=["raw-bytes", "escaped-bytes", "nul-value", "nul-name", "too-many-fields"],
)
def test_unacceptable_bodies(body):
    with pytest.raises(InvalidRequestError) as caught:
        parse_form(body)
    assert caught.value.description == "The request body is not valid form data."


def test_a_hundred_fields_are_accepted():
    assert len(parse_form(b"&".join(b"f%d=1" % i for i in range(100)))) == 100


def test_repeated_parameter_is_named_when_safe():
    with pytest.raises(InvalidRequestError) as caught:
        parse_form(b"scope=a&scope=b")
    assert caught.value.description == "scope is repeated."


@pytest.mark.parametrize("name", ['a"b', "a\\b", "é", "x" * 65, "a b"])
def test_repeated_parameter_name_is_never_echoed_when_odd(name):
    """RFC 6749 §5.2: error_description is printable ASCII without '"' or '\\'."""
    body = f"{name}=1&{name}=2".encode()
    with pytest.raises(InvalidRequestError) as caught:
        parse_form(body)
    assert caught.value.description == "A parameter is repeated."


# --- parse_basic_credentials: RFC 7617 with RFC 6749 §2.3.1 form-encoding --------------------


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_basic_credentials():
    assert parse_basic_credentials(basic(b"client:secret")) == ("client", "secret")


def test_basic_scheme_is_case_insensitive_and_token_trimmed():
    assert parse_basic_credentials("bAsIc  " + base64.b64encode(b"a:b").decode() + " ") == (
        "a",
        "b",
    )


def test_basic_credentials_are_form_decoded():
    """RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding."""
    assert parse_basic_credentials(basic(b"my+client%3A1:p%40ss+word%3A")) == (
        "my client:1",
        "p@ss word:",
    )


def test_basic_secret_may_contain_colons():
    assert parse_basic_credentials(basic(b"id:a:b")) == ("id", "a:b")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "Basic",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        "Basic " + base64.b64encode(b"a:b").decode()[:-1],  # bad padding
    ],
)
def test_unusable_basic_headers(header):
    assert parse_basic_credentials(header) is None


# --- client authentication: which methods a request carries ------------------------------------


def form_request(pairs, headers=None) -> FormRequest:
    return FormRequest("POST", "http://localhost/oauth2/token", headers or {}, pairs)


def test_methods_used():
    auth = {"Authorization": basic(b"a:b")}
    assert methods_used(form_request([])) == []
    assert methods_used(form_request([], auth)) == ["client_secret_basic"]
    assert methods_used(form_request([("client_secret", "")])) == ["client_secret_post"]
    assert methods_used(form_request([("client_assertion_type", "x")])) == ["private_key_jwt"]
    assert methods_used(
        form_request([("client_assertion", "x"), ("client_secret", "s")], auth)
    ) == [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ]


# --- RFC 7523 client assertions -----------------------------------------------------------------


def b64url(value) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_parse_unverified():
    header, claims = {"alg": "ES256", "kid": "k"}, {"sub": "c", "iss": "c"}
    assert parse_unverified(f"{b64url(header)}.{b64url(claims)}.c2ln") == (header, claims)


@pytest.mark.parametrize(
    "assertion",
    [
        "",
        "a.b",
        "a.b.c.d",
        "a*b.c.d",
        f"{b64url([1, 2])}.{b64url({})}.c2ln",  # header not an object
        f"{b64url({})}.{b64url('text')}.c2ln",  # claims not an object
        f"{b64url(b'{oops')}.{b64url({})}.c2ln",
        f"{b64url({})}.{b64url(bytes([0xFF]))}.c2ln",
        f"{b64url(b'[' * 5000 + b']' * 5000)}.{b64url({})}.c2ln",  # too deep, and too long
        f"{b64url({'kid': 'k' * 3000})}.{b64url({})}.c2ln",  # header over 2 KB
        "a" * 20000 + ".b.c",
    ],
)
def test_parse_unverified_refuses(assertion):
    assert parse_unverified(assertion) is None


def good_claims(now: float, **changes) -> dict:
    claims = {"iss": "c", "sub": "c", "aud": "x", "iat": now, "exp": now + 60, "jti": "j1"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_claims_acceptable():
    now = time.time()
    assert claims_acceptable(good_claims(now), now)
    assert claims_acceptable(good_claims(now, iat=None, nbf=now), now)
    assert claims_acceptable(good_claims(now, exp=now + MAX_LIFETIME + LEEWAY), now)
    assert claims_acceptable(good_claims(now, iat=now + LEEWAY), now)


REFUSED_CLAIMS = {
    "iss-not-sub": lambda now: {"iss": "other"},
    "sub-number": lambda now: {"sub": 5},
    "no-sub-no-iss": lambda now: {"sub": None, "iss": None},
    "no-exp": lambda now: {"exp": None},
    "exp-string": lambda now: {"exp": str(now + 60)},
    "exp-bool": lambda now: {"exp": True},
    "exp-too-far": lambda now: {"exp": now + MAX_LIFETIME + LEEWAY + 1},
    "iat-string": lambda now: {"iat": "now"},
    "iat-bool": lambda now: {"iat": False},
    "iat-future": lambda now: {"iat": now + LEEWAY + 1},
    "nbf-future": lambda now: {"nbf": now + LEEWAY + 1},
    "no-jti": lambda now: {"jti": None},
    "jti-empty": lambda now: {"jti": ""},
    "jti-number": lambda now: {"jti": 7},
    "jti-too-long": lambda now: {"jti": "j" * 256},
}


@pytest.mark.parametrize("case", REFUSED_CLAIMS)
def test_claims_refused(case):
    now = time.time()
    assert not claims_acceptable(good_claims(now, **REFUSED_CLAIMS[case](now)), now)


def key(kid: str, alg: str) -> KeyRecord:
    return KeyRecord(kid, alg, {"kty": "EC"}, datetime(2100, 1, 1, tzinfo=UTC))


def test_candidate_keys_by_alg_and_kid():
    keys = [key("a", "ES256"), key("b", "ES256"), key("c", "EdDSA")]
    algs = {"ES256", "EdDSA"}
    assert candidate_keys(keys, {"alg": "ES256"}, algs) == keys[:2]
    assert candidate_keys(keys, {"alg": "ES256", "kid": "b"}, algs) == [keys[1]]
    # A kid names one key, and only under that key's own alg.
    assert candidate_keys(keys, {"alg": "ES256", "kid": "c"}, algs) == []
    assert candidate_keys(keys, {"alg": "EdDSA"}, {"ES256"}) == []
    for header in ({"alg": "none"}, {"alg": "HS256"}, {"alg": 256}, {"alg": "ES256", "kid": 7}):
        assert candidate_keys(keys, header, algs) == [], header


def test_audiences_per_endpoint():
    issuer = "https://as.example.com"
    assert audiences(issuer, "token") == [issuer, f"{issuer}/oauth2/token"]
    assert audiences(issuer, "introspection") == [
        issuer,
        f"{issuer}/oauth2/token",
        f"{issuer}/oauth2/introspect",
    ]
    assert audiences(issuer, "revocation")[-1] == f"{issuer}/oauth2/revoke"
