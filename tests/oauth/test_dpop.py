"""Integration: DPoP at the token endpoint (RFC 9449 §4-§8, §11; docs/api.md §1.1), through HTTP.

Requests go through the app as a server calls it (the token fast path);
`test_fast_path_and_flask_answer_alike` sends each kind through both paths.
"""

from __future__ import annotations

import time

import jwt
import pytest

from app.runtime import runtime
from tests.conftest import basic_auth
from tests.oauth.assertions import (
    ASSERTION_TYPE,
    TOKEN_URL,
    claims_for,
    make_key,
    register_key,
    sign,
)
from tests.oauth.dpop import DPOP_ALGS, make_dpop_key, proof, public_members, thumbprint

AUDIENCE = "https://api.example.com"
GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def reader(factory):
    return factory.client("acme", scopes=["read"], audiences=[AUDIENCE])


@pytest.fixture(scope="module")
def key():
    return make_dpop_key("ES256")


def token(http, client, dpop_value=None, *, headers=None, **params):
    sent = dict(basic_auth(*client))
    sent.update(headers or {})
    if dpop_value is not None:
        sent["DPoP"] = dpop_value
    return http.post("/oauth2/token", data={**GRANT, **params}, headers=sent)


def claims_of(body: dict) -> dict:
    return jwt.decode(body["access_token"], options={"verify_signature": False})


def assert_invalid_proof(response) -> None:
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_dpop_proof"
    assert response.headers["Cache-Control"] == "no-store"


# --- a valid proof binds the token ---------------------------------------------------


@pytest.mark.parametrize("alg", DPOP_ALGS)
def test_a_valid_proof_binds_the_token_to_its_key(client, reader, alg):
    pair = make_dpop_key(alg)
    response = token(client, reader, proof(pair))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body)["cnf"] == {"jkt": thumbprint(public_members(pair))}


def test_introspection_says_dpop_and_its_cnf(client, factory, reader, key):
    body = token(client, reader, proof(key)).get_json()
    resource_server = factory.client("acme")
    answer = client.post(
        "/oauth2/introspect",
        data={"token": body["access_token"]},
        headers=basic_auth(*resource_server),
    ).get_json()
    assert answer["active"] is True
    assert answer["token_type"] == "DPoP"
    assert answer["cnf"] == {"jkt": thumbprint(public_members(key))}


def test_without_a_proof_the_token_is_a_bearer_token(client, reader):
    body = token(client, reader).get_json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in claims_of(body)
    assert "DPoP-Nonce" not in token(client, reader).headers  # nonces are off by default


def test_htu_is_compared_as_rfc_9449_says(client, reader, key):
    # RFC 9449 §4.3: query and fragment ignored; scheme and host case-insensitive,
    # default port, percent-encoding and dot segments normalized (RFC 3986 §6.2.2-3).
    for htu in (
        TOKEN_URL + "?a=b#frag",
        "HTTP://LOCALHOST:5000/oauth2/token",
        "http://localhost:5000/oauth2/%74oken",
        "http://localhost:5000/oauth2/x/../token",
    ):
        assert token(client, reader, proof(key, htu=htu)).status_code == 200, htu
    for htu in (
        "https://localhost:5000/oauth2/token",
        "http://localhost:5001/oauth2/token",
        "http://localhost:5000/oauth2/token/",
        "http://localhost:5000/oauth2/introspect",
        "http://other:5000/oauth2/token",
        "/oauth2/token",
    ):
        assert_invalid_proof(token(client, reader, proof(key, htu=htu)))


def test_default_port_is_the_same_url(base_config, make_app, factory):
    app = make_app(ISSUER="https://auth.example.com")
    http = app.test_client()
    with app.app_context():
        from app.clients.service import create_client
        from app.extensions import db

        created, _, secret = create_client(
            "acme", {"name": "porty", "scopes": ["read"]}, "test", runtime().pepper
        )
        db.session.commit()
        cid = created.id
    pair = make_dpop_key()
    for htu in (
        "https://auth.example.com:443/oauth2/token",
        "https://Auth.Example.COM/oauth2/token",
    ):
        response = token(http, (cid, secret), proof(pair, htu=htu))
        assert response.status_code == 200, (htu, response.get_json())
    assert_invalid_proof(
        token(http, (cid, secret), proof(pair, htu="http://auth.example.com/oauth2/token"))
    )


# --- every rule of a proof -------------------------------------------------------------


def _bad_proofs(key):
    other = make_dpop_key("ES256")
    now = int(time.time())
    private = {**public_members(key), "d": "AAAA"}
    rsa_small = make_key("RS256", rsa_bits=1024)
    return {
        "typ jwt": proof(key, header={"typ": "JWT"}),
        "no typ": proof(key, header={"typ": None}),
        "alg none": proof(key, header={"alg": "none"}),
        "alg HS256": proof(key, header={"alg": "HS256"}),
        "alg ES512": proof(key, header={"alg": "ES512"}),
        "alg of another kty": proof(key, header={"alg": "RS256"}),
        "ES256 header on a P-384 key": proof(make_dpop_key("ES384"), header={"alg": "ES256"}),
        "no jwk": proof(key, header={"jwk": None}),
        "jwk not an object": proof(key, header={"jwk": "abc"}),
        "private jwk": proof(key, header={"jwk": private}),
        "symmetric jwk": proof(key, header={"jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
        "jwk of another key": proof(key, header={"jwk": public_members(other)}),
        "jwk incomplete": proof(key, header={"jwk": {"kty": "EC", "crv": "P-256"}}),
        "crit": proof(key, header={"crit": ["exp"], "exp": 1}),
        "short RSA key": proof(rsa_small),
        "no jti": proof(key, drop=("jti",)),
        "jti not a string": proof(key, jti=12345),
        "empty jti": proof(key, jti=""),
        "jti too long": proof(key, jti="j" * 256),
        "htm GET": proof(key, htm="GET"),
        "htm lower case": proof(key, htm="post"),
        "no htm": proof(key, drop=("htm",)),
        "no htu": proof(key, drop=("htu",)),
        "htu not a string": proof(key, claims={"htu": 5}),
        "no iat": proof(key, drop=("iat",)),
        # The exact boundary (60 s in, 61 s out) is in tests/unit/test_rfc9449.py,
        # on a fixed clock; here a margin keeps a slow run from crossing it.
        "iat 90 s old": proof(key, iat=now - 90),
        "iat 90 s ahead": proof(key, iat=now + 90),
        "iat a string": proof(key, iat=str(now)),
        "iat a boolean": proof(key, iat=True),
        # JSON as Python reads it: NaN compares false with every bound.
        "iat NaN": proof(key, iat=float("nan")),
        "iat Infinity": proof(key, iat=float("inf")),
        "not a JWS": "not-a-jwt",
        "two segments": "a.b",
        "tampered claims": _tampered(proof(key)),
        "huge": proof(key, claims={"pad": "x" * 9000}),
    }


def _tampered(value: str) -> str:
    header, claims, signature = value.split(".")
    return ".".join(
        [header, claims[:-2] + ("A" if claims[-2] != "A" else "B") + claims[-1], signature]
    )


def test_every_rule_of_a_proof(client, reader, key):
    bad = _bad_proofs(key)
    answers = {name: token(client, reader, value) for name, value in bad.items()}
    wrong = {
        name: (r.status_code, (r.get_json() or {}).get("error"))
        for name, r in answers.items()
        if r.status_code != 400 or r.get_json()["error"] != "invalid_dpop_proof"
    }
    assert wrong == {}
    # None of them consumed anything that makes the good proof fail.
    assert token(client, reader, proof(key)).status_code == 200


def test_iat_within_the_leeway_is_accepted(client, reader, key):
    now = int(time.time())
    assert token(client, reader, proof(key, iat=now - 50)).status_code == 200
    assert token(client, reader, proof(key, iat=now + 50)).status_code == 200


def test_two_dpop_headers_are_refused(client, reader, key):
    headers = [("DPoP", proof(key)), ("DPoP", proof(key)), *basic_auth(*reader).items()]
    response = client.post("/oauth2/token", data=GRANT, headers=headers)
    assert_invalid_proof(response)


def test_an_empty_dpop_header_is_refused(client, reader):
    assert_invalid_proof(token(client, reader, ""))


def test_a_replayed_proof_is_refused(client, reader, key):
    value = proof(key)
    assert token(client, reader, value).status_code == 200
    assert_invalid_proof(token(client, reader, value))


def test_the_same_jti_under_another_key_is_not_a_replay(client, reader, key):
    assert token(client, reader, proof(key, jti="same-jti")).status_code == 200
    assert token(client, reader, proof(make_dpop_key(), jti="same-jti")).status_code == 200


def test_a_proof_is_checked_only_after_the_client_authenticates(client, reader, key):
    response = token(client, (reader[0], "ccs_wrong"), "garbage")
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    # The failed request did not use up the proof.
    value = proof(key)
    assert token(client, (reader[0], "ccs_wrong"), value).status_code == 401
    assert token(client, reader, value).status_code == 200


# --- dpop_bound_access_tokens ------------------------------------------------------------


def test_a_client_that_requires_dpop_needs_a_proof(client, factory, key):
    cid, secret = factory.client(
        "acme", scopes=["read"], audiences=[AUDIENCE], dpop_bound_access_tokens=True
    )
    assert_invalid_proof(token(client, (cid, secret)))
    assert token(client, (cid, secret), proof(key)).get_json()["token_type"] == "DPoP"


def test_a_resource_server_that_requires_dpop_needs_a_proof(client, factory, key):
    strict = "https://strict.example.com"
    factory.resource_server("acme", strict, dpop_bound_access_tokens=True)
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE, strict])
    assert token(client, (cid, secret), resource=AUDIENCE).status_code == 200
    assert_invalid_proof(token(client, (cid, secret), resource=strict))
    assert_invalid_proof(token(client, (cid, secret), resource=[AUDIENCE, strict]))
    body = token(client, (cid, secret), proof(key), resource=strict).get_json()
    assert body["token_type"] == "DPoP"


# --- with private_key_jwt: one replay-cache round trip ----------------------------------


class CountingStore:
    """The real jti store, with its calls counted (no behaviour changed)."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name):
        target = getattr(self.store, name)
        if not callable(target):
            return target

        def counted(*args, **kwargs):
            self.calls.append(name)
            return target(*args, **kwargs)

        return counted


@pytest.fixture
def keyed(client, factory, reader):
    pair = make_key("ES256")
    register_key(client, factory.admin_headers("acme"), reader[0], pair)
    return reader[0], pair


def assertion_token(http, cid, pair, dpop_value=None, assertion=None):
    form = {
        **GRANT,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion or sign(pair, claims_for(cid)),
    }
    headers = {"DPoP": dpop_value} if dpop_value is not None else {}
    return http.post("/oauth2/token", data=form, headers=headers)


def test_assertion_and_proof_share_one_replay_cache_call(
    app, client, reader, keyed, key, monkeypatch
):
    cid, pair = keyed
    with app.app_context():
        counting = CountingStore(runtime().jti)
        monkeypatch.setattr(runtime(), "jti", counting)
    response = assertion_token(client, cid, pair, proof(key))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"
    assert counting.calls == ["use_once_many"]
    counting.calls.clear()
    # A secret-authenticated request has one call too: the proof's own, sent
    # before the token is signed and read after.
    response = client.post(
        "/oauth2/token", data=GRANT, headers={**basic_auth(*reader), "DPoP": proof(key)}
    )
    assert response.status_code == 200
    assert counting.calls == ["use_once_many_later"]


def test_with_an_assertion_a_replayed_proof_or_assertion_is_refused(client, keyed, key):
    cid, pair = keyed
    value = proof(key)
    assert assertion_token(client, cid, pair, value).status_code == 200
    assert_invalid_proof(assertion_token(client, cid, pair, value))
    assertion = sign(pair, claims_for(cid))
    assert assertion_token(client, cid, pair, proof(key), assertion).status_code == 200
    replayed = assertion_token(client, cid, pair, proof(key), assertion)
    assert replayed.status_code == 401
    assert replayed.get_json()["error"] == "invalid_client"


def test_with_an_assertion_a_bad_proof_is_still_invalid_dpop_proof(client, keyed, key):
    cid, pair = keyed
    assert_invalid_proof(assertion_token(client, cid, pair, proof(key, htm="GET")))


# --- metadata ---------------------------------------------------------------------------------


def test_metadata_lists_the_dpop_algorithms(client):
    metadata = client.get("/.well-known/oauth-authorization-server").get_json()
    assert metadata["dpop_signing_alg_values_supported"] == list(DPOP_ALGS)


# --- nonces (RFC 9449 §8), DPOP_NONCES=1 ----------------------------------------------------


@pytest.fixture
def nonce_app(make_app):
    return make_app(DPOP_NONCES=True)


def test_with_nonces_a_proof_without_one_gets_use_dpop_nonce(nonce_app, factory, key):
    http = nonce_app.test_client()
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    first = token(http, (cid, secret), proof(key))
    assert first.status_code == 400
    assert first.get_json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    second = token(http, (cid, secret), proof(key, nonce=nonce))
    assert second.status_code == 200, second.get_json()
    assert second.get_json()["token_type"] == "DPoP"
    assert second.headers["DPoP-Nonce"]  # every token response carries a fresh one


def test_with_nonces_every_token_response_carries_one(nonce_app, factory):
    http = nonce_app.test_client()
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    answers = [
        token(http, (cid, secret)),  # bearer success
        token(http, (cid, "ccs_wrong")),  # 401
        token(http, (cid, secret), scope="nope"),  # 400 invalid_scope
        http.post("/oauth2/token", data={"grant_type": "password"}),  # 400
        token(http, (cid, secret), "garbage"),  # 400 invalid_dpop_proof
    ]
    for response in answers:
        assert len(response.headers.getlist("DPoP-Nonce")) == 1, response.status_code


def test_a_wrong_or_stale_nonce_is_refused(nonce_app, factory, key):
    from app.oauth.rfc9449 import NONCE_STEP, Nonces
    from tests.conftest import TEST_PEPPER

    http = nonce_app.test_client()
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    stale = Nonces(TEST_PEPPER.encode()).issue(time.time() - 3 * NONCE_STEP)
    other_server = Nonces(b"another-pepper-0123456789abcdef0123").issue()
    for nonce in ("made-up", stale, other_server, ""):
        response = token(http, (cid, secret), proof(key, nonce=nonce))
        assert response.status_code == 400, nonce
        assert response.get_json()["error"] == "use_dpop_nonce"


def test_a_nonce_from_one_instance_works_on_another(nonce_app, make_app, factory, key):
    other = make_app(DPOP_NONCES=True).test_client()
    http = nonce_app.test_client()
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    nonce = token(http, (cid, secret)).headers["DPoP-Nonce"]
    assert token(other, (cid, secret), proof(key, nonce=nonce)).status_code == 200


def test_a_nonce_from_the_previous_step_is_accepted(nonce_app, factory, key):
    from app.oauth.rfc9449 import NONCE_STEP, Nonces
    from tests.conftest import TEST_PEPPER

    http = nonce_app.test_client()
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    # Issued by any instance one step ago: a nonce lives at least NONCE_STEP seconds.
    previous = Nonces(TEST_PEPPER.encode()).issue(time.time() - NONCE_STEP)
    assert token(http, (cid, secret), proof(key, nonce=previous)).status_code == 200


# --- both paths ----------------------------------------------------------------------------------


def test_fast_path_and_flask_answer_alike(app, factory, reader, key, monkeypatch):
    from tests.oauth.test_fastpath import AccessLines, assert_same, both_ways, environ, watch

    lines = AccessLines()
    import logging

    from app.http.access_log import ACCESS_LOGGER

    logging.getLogger(ACCESS_LOGGER).addHandler(lines)
    try:
        dispatched = watch(app, monkeypatch)
        basic = {**basic_auth(*reader), "X-Request-ID": "req-1"}
        kinds = {
            "bound": lambda: environ(headers={**basic, "DPoP": proof(key)}),
            "bad proof": lambda: environ(headers={**basic, "DPoP": proof(key, htm="GET")}),
            "two headers": lambda: environ(
                headers=[*basic.items(), ("DPoP", proof(key)), ("DPoP", proof(key))]
            ),
        }
        for name, make_env in kinds.items():
            fast, slow = both_ways(app, lines, make_env)
            assert_same(fast, slow)
            assert dispatched.count("/oauth2/token") == 1, name  # the slow one only
            dispatched.clear()
            if name == "bound":
                for answer in (fast, slow):
                    body = __import__("json").loads(answer.body)
                    assert body["token_type"] == "DPoP"
                    assert claims_of(body)["cnf"] == {"jkt": thumbprint(public_members(key))}
            else:
                assert fast.status.startswith("400"), name
                assert b"invalid_dpop_proof" in fast.body
        # A replayed proof is refused on either path.
        value = proof(key)
        fast, slow = both_ways(app, lines, lambda: environ(headers={**basic, "DPoP": value}))
        assert fast.status.startswith("200") and slow.status.startswith("400")
    finally:
        logging.getLogger(ACCESS_LOGGER).removeHandler(lines)


def test_fast_path_nonces_match_flask(make_app, factory, key, monkeypatch):
    from tests.oauth.test_fastpath import AccessLines, both_ways, environ, header

    app = make_app(DPOP_NONCES=True)
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    fast, slow = both_ways(
        app, AccessLines(), lambda: environ(headers={**basic_auth(cid, secret), "DPoP": proof(key)})
    )
    for answer in (fast, slow):
        assert answer.status.startswith("400")
        assert b"use_dpop_nonce" in answer.body
        assert header(answer, "DPoP-Nonce")
    assert [n for n, _ in fast.headers] == [n for n, _ in slow.headers]


# --- a FAPI 2.0 client (docs/api.md §2.1) ------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "allowed"), [("ES256", True), ("EdDSA", True), ("RS256", False), ("ES384", False)]
)
def test_a_fapi2_client_gets_dpop_tokens_from_profile_algorithms_only(
    client, factory, alg, allowed
):
    from tests.oauth.assertions import ISSUER

    cid, _ = factory.client("acme", scopes=["read"], audiences=[AUDIENCE], security_profile="fapi2")
    pair = make_key("ES256")
    register_key(client, factory.admin_headers("acme"), cid, pair)
    response = assertion_token(
        client, cid, pair, proof(make_dpop_key(alg)), sign(pair, claims_for(cid, aud=ISSUER))
    )
    if allowed:
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["token_type"] == "DPoP"
    else:
        assert_invalid_proof(response)


def test_a_certificate_and_a_proof_bind_the_token_to_both(make_app, factory, key):
    """RFC 8705 §3.1 and RFC 9449 §6.1 side by side: `cnf` names both, and needs both."""
    from tests.mtls import PROXY, make_cert

    client = make_app(TRUSTED_PROXIES="10.0.0.0/8").test_client()
    cid, secret = factory.admin("acme")
    cert = make_cert()
    response = client.post(
        "/oauth2/token",
        data=GRANT,
        headers={**basic_auth(cid, secret), "Client-Cert": cert.rfc9440(), "DPoP": proof(key)},
        environ_base=PROXY,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "DPoP"
    assert set(claims_of(body)["cnf"]) == {"jkt", "x5t#S256"}
    token = body["access_token"]
    from tests.oauth.dpop import api_url

    def call(with_cert: bool):
        headers = {
            "Authorization": f"DPoP {token}",
            "DPoP": proof(key, htm="GET", htu=api_url("/api/v1/clients"), access_token=token),
        }
        if with_cert:
            headers["Client-Cert"] = cert.rfc9440()
        return client.get("/api/v1/clients", headers=headers, environ_base=PROXY)

    assert call(with_cert=True).status_code == 200
    assert call(with_cert=False).status_code == 401
