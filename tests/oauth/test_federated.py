"""Integration: federated client authentication at the token endpoint (docs/api.md §1.3)
and its dry run (§2.8), over HTTP with real keys and signatures.

Every failing check is one 401 invalid_client, the same as any failed
authentication; the dry run and the server's log (never the token) say which.
"""

from __future__ import annotations

import base64
import json
import logging
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import Factory
from tests.http.test_metrics import TOKEN, scrape, value
from tests.oauth.assertions import claims_for, make_key, register_key, sign, token_request
from tests.oauth.federation import (
    API,
    SERVER_ISSUER,
    Issuer,
    add_credential,
    create_secretless,
    credential_body,
    dry_run,
    federated_request,
)

GITHUB = "https://token.actions.githubusercontent.com"
SUBJECT = "repo:acme/billing:ref:refs/heads/main"
LOGGER = "app.oauth.federated"


@pytest.fixture(scope="module")
def platform() -> Issuer:
    return Issuer(GITHUB, "RS256")


@pytest.fixture
def admin(factory):
    return factory.admin_headers("acme")


@pytest.fixture
def secretless(client, admin) -> str:
    return create_secretless(client, admin, "deployer", ["read"])


@pytest.fixture
def credential(client, admin, secretless, platform) -> dict:
    body = credential_body(
        platform, name="github-deploy", subject=SUBJECT, claims={"repository_owner": "acme"}
    )
    return add_credential(client, admin, secretless, body)


def assert_invalid_client(response) -> None:
    assert response.status_code == 401, response.get_json()
    assert response.get_json() == {
        "error": "invalid_client",
        "error_description": "Client authentication failed.",
    }
    assert "WWW-Authenticate" not in response.headers


def good_token(platform: Issuer, **claims) -> str:
    return platform.token(**{"sub": SUBJECT, "repository_owner": "acme", **claims})


def test_secretless_client_gets_a_token_end_to_end(client, secretless, credential, platform):
    response = federated_request(client, secretless, good_token(platform))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["scope"] == "read"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == claims["client_id"] == secretless
    assert claims["account_id"] == "acme"


def test_success_is_counted_as_federated_and_sets_last_used_at(
    app, client, admin, secretless, credential, platform
):
    app.extensions["ccserver"].usage.resolution = 0
    before = scrape(client)
    assert federated_request(client, secretless, good_token(platform)).status_code == 200
    after = scrape(client)
    labels = {"endpoint": "token", "outcome": "success", "auth_method": "federated"}
    assert value(after, TOKEN, **labels) - value(before, TOKEN, **labels) == 1
    listing = client.get(f"{API}/clients/{secretless}/federated-credentials", headers=admin)
    assert listing.get_json()["data"][0]["last_used_at"] is not None


def _forged_none(platform: Issuer) -> str:
    claims = {"iss": GITHUB, "sub": SUBJECT, "aud": SERVER_ISSUER, "repository_owner": "acme"}
    claims |= {"iat": int(time.time()), "exp": int(time.time()) + 300}
    header = {"alg": "none", "typ": "JWT", "kid": platform.kid}

    def seg(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{seg(header)}.{seg(claims)}."


def _forged_hs256(platform: Issuer) -> str:
    """HS256 keyed with the issuer's public key: the classic algorithm confusion."""
    pem = platform.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": GITHUB, "sub": SUBJECT, "aud": SERVER_ISSUER, "repository_owner": "acme"}
    claims |= {"iat": int(time.time()), "exp": int(time.time()) + 300}
    signing_input = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in ({"alg": "HS256", "typ": "JWT", "kid": platform.kid}, claims)
    )
    import hashlib
    import hmac

    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _other_key(platform: Issuer) -> str:
    impostor = Issuer(GITHUB, "RS256", kid=platform.kid)
    return impostor.token(sub=SUBJECT, repository_owner="acme")


# (case, the token, the check the dry run names, its detail or None)
CASES = {
    "issuer": (lambda p: Issuer("https://gitlab.com").token(SUBJECT), "issuer", None),
    "signature": (_other_key, "signature", "the signature does not verify"),
    "alg_none": (_forged_none, "signature", "algorithm none is not accepted"),
    "hs256_with_public_key": (_forged_hs256, "signature", "algorithm HS256 is not accepted"),
    "unknown_kid": (
        lambda p: good_token(p, headers={"kid": "other"}),
        "signature",
        "no key of the issuer fits the header's kid and alg",
    ),
    "audience": (lambda p: good_token(p, aud="https://elsewhere.example"), "audience", None),
    "audience_missing": (lambda p: good_token(p, aud=None), "audience", None),
    "expired": (lambda p: good_token(p, lifetime=-120, iat=int(time.time()) - 200), "expiry", None),
    "no_exp": (lambda p: _without(p, "exp"), "expiry", None),
    "not_yet_valid": (lambda p: good_token(p, nbf=int(time.time()) + 600), "not_before", None),
    "too_old": (lambda p: good_token(p, iat=int(time.time()) - 4000, lifetime=600), "age", None),
    "iat_in_future": (lambda p: good_token(p, iat=int(time.time()) + 600), "age", None),
    "no_iat_long_lived": (lambda p: good_token(p, iat=None, lifetime=7200), "age", None),
    "subject": (
        lambda p: good_token(p, sub="repo:acme/billing:ref:refs/heads/dev"),
        "subject",
        None,
    ),
    "subject_missing": (lambda p: good_token(p, sub=None), "subject", None),
    "claim": (lambda p: good_token(p, repository_owner="evil"), "claim", "repository_owner"),
    "claim_missing": (lambda p: good_token(p, repository_owner=None), "claim", "repository_owner"),
    "claim_not_string": (
        lambda p: good_token(p, repository_owner=["acme"]),
        "claim",
        "repository_owner",
    ),
}


def _without(platform: Issuer, claim: str) -> str:
    claims = {"iss": GITHUB, "sub": SUBJECT, "aud": SERVER_ISSUER, "repository_owner": "acme"}
    claims |= {"iat": int(time.time()), "exp": int(time.time()) + 300}
    del claims[claim]
    return jwt.encode(
        claims, platform.private_key, algorithm="RS256", headers={"kid": platform.kid}
    )


@pytest.mark.parametrize("case", list(CASES))
def test_each_failing_check_is_401_with_its_reason_in_dry_run_and_log(
    client, admin, secretless, credential, platform, case, caplog, capsys
):
    make, check, detail = CASES[case]
    token = make(platform)
    caplog.set_level(logging.INFO, logger=LOGGER)

    assert_invalid_client(federated_request(client, secretless, token))

    logged = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(logged) == 1, logged
    assert secretless in logged[0]
    assert f"github-deploy: {check}" in logged[0]

    tested = dry_run(client, admin, secretless, token)
    assert tested.status_code == 200, tested.get_json()
    answer = tested.get_json()
    assert answer["matched"] is False and answer["credential_id"] is None
    assert answer["error"] is None
    assert answer["results"] == [
        {
            "id": credential["id"],
            "name": "github-deploy",
            "matched": False,
            "failed_check": check,
            "detail": detail,
        }
    ]
    # The token is in no log line and no response but the dry run's own request.
    assert token not in caplog.text
    stderr = capsys.readouterr().err
    assert token not in stderr and token.split(".")[1] not in stderr
    assert token not in tested.get_data(as_text=True)


def test_dry_run_names_the_matching_credential(client, admin, secretless, credential, platform):
    other = add_credential(
        client, admin, secretless, credential_body(platform, name="other", subject="repo:x/y:*")
    )
    answer = dry_run(client, admin, secretless, good_token(platform)).get_json()
    assert answer["matched"] is True
    assert (answer["credential_id"], answer["credential_name"]) == (
        credential["id"],
        "github-deploy",
    )
    assert [(r["name"], r["matched"], r["failed_check"]) for r in answer["results"]] == [
        ("github-deploy", True, None),
        (other["name"], False, "subject"),
    ]


@pytest.mark.parametrize(
    ("assertion", "error"),
    [("not-a-jwt", "malformed"), ("a.b.c", "malformed"), ("a" * 20_000, "malformed")],
)
def test_dry_run_of_a_malformed_assertion(client, admin, secretless, credential, assertion, error):
    answer = dry_run(client, admin, secretless, assertion).get_json()
    assert answer == {
        "matched": False,
        "credential_id": None,
        "credential_name": None,
        "error": error,
        "results": [],
    }


def test_dry_run_without_credentials(client, admin, secretless, platform):
    answer = dry_run(client, admin, secretless, good_token(platform)).get_json()
    assert answer["error"] == "no_credentials" and answer["matched"] is False


def test_dry_run_of_the_clients_own_assertion(client, admin, secretless, credential):
    own = sign(make_key("ES256"), claims_for(secretless))
    answer = dry_run(client, admin, secretless, own).get_json()
    assert answer["error"] == "not_federated" and answer["results"] == []


@pytest.mark.parametrize(
    "body", [{}, {"assertion": ""}, {"assertion": 1}, {"assertion": "x", "more": 1}]
)
def test_dry_run_bad_bodies_are_400(client, admin, secretless, body):
    response = client.post(
        f"{API}/clients/{secretless}/federated-credentials/test", json=body, headers=admin
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


@pytest.fixture
def backend_app(backend_config):
    from app import create_app

    return create_app(backend_config)


@pytest.mark.usefixtures("app")
def test_single_use_refuses_a_replay_and_the_dry_run_consumes_nothing(backend, make_app, platform):
    """On the database (SQLite or PostgreSQL) and on Redis when TEST_REDIS_URL is set."""
    import os

    redis_url = os.environ.get("TEST_REDIS_URL") if backend == "redis" else None
    app = make_app(REDIS_URL=redis_url)
    http = app.test_client()
    factory = Factory(app, http)
    admin = factory.admin_headers("acme")
    cid, _ = factory.client("acme", scopes=["read"], create_secret=False)
    add_credential(
        http, admin, cid, credential_body(platform, name="once", subject=SUBJECT, single_use=True)
    )
    token = good_token(platform, jti="job-1234")

    answer = dry_run(http, admin, cid, token).get_json()
    assert answer["matched"] is True
    assert answer["results"][0]["detail"] == "the jti was not looked up (dry run)"
    assert federated_request(http, cid, token).status_code == 200
    assert_invalid_client(federated_request(http, cid, token))
    # Another instance shares the replay cache.
    assert_invalid_client(
        federated_request(make_app(REDIS_URL=redis_url).test_client(), cid, token)
    )
    assert federated_request(http, cid, good_token(platform, jti="job-1235")).status_code == 200
    # Without a jti a single-use credential accepts nothing.
    assert_invalid_client(federated_request(http, cid, good_token(platform)))


def test_single_use_replay_reason_is_logged(client, admin, secretless, platform, caplog):
    add_credential(
        client,
        admin,
        secretless,
        credential_body(platform, name="once", subject=SUBJECT, single_use=True),
    )
    token = good_token(platform, jti="job-1")
    assert federated_request(client, secretless, token).status_code == 200
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert_invalid_client(federated_request(client, secretless, token))
    assert "once: replay" in caplog.text


def test_reusable_credential_accepts_the_same_token_again(client, secretless, credential, platform):
    token = good_token(platform)
    assert federated_request(client, secretless, token).status_code == 200
    assert federated_request(client, secretless, token).status_code == 200


def test_deleted_credential_stops_at_once(client, admin, secretless, credential, platform):
    token = good_token(platform)
    assert federated_request(client, secretless, token).status_code == 200
    url = f"{API}/clients/{secretless}/federated-credentials/{credential['id']}"
    assert client.delete(url, headers=admin).status_code == 204
    assert_invalid_client(federated_request(client, secretless, token))


def test_added_credential_works_at_once(client, admin, secretless, platform):
    token = good_token(platform)
    assert_invalid_client(federated_request(client, secretless, token))  # cached: no credentials
    add_credential(client, admin, secretless, credential_body(platform, subject=SUBJECT))
    assert federated_request(client, secretless, token).status_code == 200


def test_a_credential_of_one_account_never_authenticates_another(
    client, factory, secretless, credential, platform
):
    """Account B's client names the same issuer with another subject: A's token fails there."""
    globex_admin = factory.admin_headers("globex")
    victim, _ = factory.client("globex", scopes=["read"])
    add_credential(
        client,
        globex_admin,
        victim,
        credential_body(platform, subject="repo:globex/app:ref:refs/heads/main"),
    )
    assert_invalid_client(federated_request(client, victim, good_token(platform)))
    # And a client with no credential at all.
    bare, _ = factory.client("globex", scopes=["read"])
    assert_invalid_client(federated_request(client, bare, good_token(platform)))
    assert federated_request(client, secretless, good_token(platform)).status_code == 200


def test_an_assertion_whose_iss_is_the_client_id_takes_the_private_key_jwt_path(
    client, admin, secretless, credential, platform
):
    # The issuer's key signs a token whose iss is the client id: not federated,
    # and the issuer's key is not one of the client's keys.
    forged = platform.token(None, aud=f"{SERVER_ISSUER}/oauth2/token", jti="x")
    forged = jwt.encode(
        claims_for(secretless),
        platform.private_key,
        algorithm="RS256",
        headers={"kid": platform.kid},
    )
    assert_invalid_client(federated_request(client, secretless, forged))
    key = make_key("ES256", kid="own")
    register_key(client, admin, secretless, key)
    own = sign(key, claims_for(secretless))
    assert token_request(client, own, client_id=secretless).status_code == 200


def test_without_client_id_a_foreign_assertion_is_refused(client, secretless, credential, platform):
    assert_invalid_client(federated_request(client, None, good_token(platform)))


def test_allowed_auth_methods_apply(client, admin, secretless, credential, platform):
    patch = {"allowed_auth_methods": ["client_secret_basic"]}
    assert client.patch(f"{API}/clients/{secretless}", json=patch, headers=admin).status_code == 200
    assert_invalid_client(federated_request(client, secretless, good_token(platform)))
    patch = {"allowed_auth_methods": ["private_key_jwt"]}
    assert client.patch(f"{API}/clients/{secretless}", json=patch, headers=admin).status_code == 200
    assert federated_request(client, secretless, good_token(platform)).status_code == 200


def test_disabled_client_is_refused(client, admin, secretless, credential, platform):
    assert (
        client.patch(
            f"{API}/clients/{secretless}", json={"disabled": True}, headers=admin
        ).status_code
        == 200
    )
    assert_invalid_client(federated_request(client, secretless, good_token(platform)))


def test_only_the_token_endpoint_accepts_federated_assertions(
    client, secretless, credential, platform, caplog
):
    token = federated_request(client, secretless, good_token(platform)).get_json()["access_token"]
    caplog.set_level(logging.INFO, logger=LOGGER)
    response = client.post(
        "/oauth2/introspect",
        data={
            "token": token,
            "client_id": secretless,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": good_token(platform),
        },
    )
    assert response.status_code == 401
    assert "not accepted at the introspection endpoint" in caplog.text


def test_an_issuer_whose_keys_cannot_be_had_is_401_not_5xx(client, admin, secretless, caplog):
    """No inline keys: the issuer key cache is asked, and cannot answer (nothing listens)."""
    remote = Issuer("https://issuer.invalid", "ES256")
    body = credential_body(remote, subject="s", jwks=None, jwks_uri="https://issuer.invalid/keys")
    add_credential(client, admin, secretless, body)
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert_invalid_client(federated_request(client, secretless, remote.token("s")))
    assert "signature (issuer keys unavailable" in caplog.text
    answer = dry_run(client, admin, secretless, remote.token("s")).get_json()
    assert answer["results"][0]["failed_check"] == "signature"
    assert answer["results"][0]["detail"].startswith("issuer keys unavailable")


def test_failures_count_towards_the_failure_limit(make_app, platform):
    app = make_app(AUTH_FAILURE_LIMIT_CLIENT=2)
    http = app.test_client()
    factory = Factory(app, http)
    admin = factory.admin_headers("acme")
    cid, _ = factory.client("acme", scopes=["read"], create_secret=False)
    add_credential(http, admin, cid, credential_body(platform, subject=SUBJECT))
    bad = good_token(platform, sub="repo:evil/x:ref:refs/heads/main")
    for _ in range(2):
        assert_invalid_client(federated_request(http, cid, bad))
    refused = federated_request(http, cid, good_token(platform))
    assert refused.status_code == 429 and "Retry-After" in refused.headers


@pytest.mark.parametrize("alg", ["RS256", "PS384", "ES256", "ES384", "ES512", "EdDSA"])
def test_each_asymmetric_algorithm(client, admin, secretless, alg):
    issuer = Issuer("https://issuer.example", alg)
    add_credential(client, admin, secretless, credential_body(issuer, subject="w"))
    assert federated_request(client, secretless, issuer.token("w")).status_code == 200


def test_subject_pattern_and_claim_lists(client, admin, secretless, platform):
    body = credential_body(
        platform,
        subject_pattern="repo:acme/*:environment:prod-?",
        claims={"repository_owner": ["acme", "acme-labs"]},
    )
    add_credential(client, admin, secretless, body)
    ok = platform.token("repo:acme/a/b:c:environment:prod-1", repository_owner="acme-labs")
    assert federated_request(client, secretless, ok).status_code == 200
    for sub in ("repo:acme/x:environment:prod-12", "repo:acmex:environment:prod-1"):
        bad = platform.token(sub, repository_owner="acme")
        assert_invalid_client(federated_request(client, secretless, bad))


def test_the_credential_audience(client, admin, secretless, platform):
    body = credential_body(platform, subject=SUBJECT, audience="https://auth.acme.example")
    add_credential(client, admin, secretless, body)
    aud = ["sts.amazonaws.com", "https://auth.acme.example"]
    assert (
        federated_request(client, secretless, platform.token(SUBJECT, aud=aud)).status_code == 200
    )
    assert_invalid_client(federated_request(client, secretless, platform.token(SUBJECT)))
