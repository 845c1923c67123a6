"""Integration: the client keys API (docs/api.md §2.3) over HTTP, real database and crypto."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from app.extensions import db
from app.models import AuditEvent, ClientKey
from app.signing.keys import jwk_thumbprint
from app.timeutil import utcnow
from tests.oauth.assertions import (
    KEY_KINDS,
    b64url,
    claims_for,
    make_key,
    register_key,
    sign,
    token_request,
)


@pytest.fixture
def admin(factory):
    return factory.admin_headers("acme")


@pytest.fixture
def client_id(factory):
    cid, _ = factory.client("acme", scopes=["read"], audiences=["https://api.example.com"])
    return cid


def keys_url(cid: str) -> str:
    return f"/api/v1/clients/{cid}/keys"


def assert_problem(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_json()
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    if code:
        assert body["code"] == code
    return body


def listed(client, headers, cid) -> list[dict]:
    response = client.get(keys_url(cid), headers=headers)
    assert response.status_code == 200
    return response.get_json()["data"]


@pytest.mark.parametrize("alg", KEY_KINDS)
def test_register_each_key_type(client, admin, client_id, alg):
    key = make_key(alg)
    body = register_key(client, admin, client_id, key)
    assert body["alg"] == alg
    # RFC 7638 thumbprint when the JWK names no kid.
    assert body["kid"] == jwk_thumbprint(key.public_jwk)
    assert body["public_jwk"]["kid"] == body["kid"]
    assert body["public_jwk"]["use"] == "sig"
    assert "private_jwk" not in body and "private_key_pem" not in body
    assert set(body) == {"kid", "alg", "public_jwk", "created_at", "expires_at", "last_used_at"}
    assert body["created_at"].endswith("Z") and body["expires_at"] is None
    assert listed(client, admin, client_id) == [body]


def test_rsa_defaults_to_rs256_and_keeps_given_kid(client, admin, client_id):
    key = make_key("RS256", kid="ci-2026")
    del key.public_jwk["alg"]
    body = register_key(client, admin, client_id, key)
    assert (body["kid"], body["alg"]) == ("ci-2026", "RS256")


def test_generated_key_returns_private_half_once(client, admin, client_id):
    response = client.post(keys_url(client_id), json={}, headers=admin)
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["alg"] == "EdDSA"
    assert body["private_jwk"]["d"] and body["private_jwk"]["kid"] == body["kid"]
    assert body["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    private = serialization.load_pem_private_key(body["private_key_pem"].encode(), None)
    public_x = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)["x"]
    assert public_x == body["public_jwk"]["x"] == body["private_jwk"]["x"]
    # Never again: the listing and the database hold only the public half.
    [item] = listed(client, admin, client_id)
    assert "d" not in item["public_jwk"] and "private_jwk" not in item
    with client.application.app_context():
        stored = db.session.scalars(sa.select(ClientKey.public_jwk)).all()
        events = db.session.scalars(sa.select(AuditEvent)).all()
    assert all("d" not in jwk for jwk in stored)
    dumped = json.dumps([(e.actor, e.action, e.target) for e in events])
    assert body["private_jwk"]["d"] not in dumped


def test_empty_body_generates_too(client, admin, client_id):
    response = client.post(keys_url(client_id), headers=admin)
    assert response.status_code == 201
    assert "private_key_pem" in response.get_json()


def test_expires_in_sets_expires_at(client, admin, client_id):
    body = register_key(client, admin, client_id, make_key("ES256"), expires_in=3600)
    assert body["expires_at"] is not None and body["expires_at"] > body["created_at"]


def _rsa_jwk(bits=2048, exponent=65537) -> dict:
    private = rsa.generate_private_key(public_exponent=exponent, key_size=bits)
    return RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)


def _ec_jwk(curve) -> dict:
    return ECAlgorithm.to_jwk(ec.generate_private_key(curve).public_key(), as_dict=True)


def _private_jwk(alg: str) -> dict:
    key = make_key(alg)
    algorithm = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    return algorithm.to_jwk(key.private_key, as_dict=True)


def _off_curve() -> dict:
    jwk = _ec_jwk(ec.SECP256R1())
    jwk["y"] = b64url(bytes(31) + b"\x01")
    return jwk


def _small_exponent() -> dict:
    jwk = _rsa_jwk()
    jwk["e"] = b64url(b"\x03")
    return jwk


def _ed448() -> dict:
    return OKPAlgorithm.to_jwk(ed448.Ed448PrivateKey.generate().public_key(), as_dict=True)


BAD_JWKS = {
    "rsa-private": lambda: _private_jwk("RS256"),
    "ec-private": lambda: _private_jwk("ES256"),
    "okp-private": lambda: _private_jwk("EdDSA"),
    "only-d": lambda: {**make_key("ES256").public_jwk, "d": "AAAA"},
    "only-p": lambda: {**make_key("RS256").public_jwk, "p": "AAAA"},
    "only-q": lambda: {**make_key("RS256").public_jwk, "q": "AAAA"},
    "only-dp": lambda: {**make_key("RS256").public_jwk, "dp": "AAAA"},
    "only-dq": lambda: {**make_key("RS256").public_jwk, "dq": "AAAA"},
    "only-qi": lambda: {**make_key("RS256").public_jwk, "qi": "AAAA"},
    "only-oth": lambda: {**make_key("RS256").public_jwk, "oth": []},
    "oct": lambda: {"kty": "oct", "k": b64url(b"0" * 32), "alg": "HS256"},
    "oct-no-k": lambda: {"kty": "oct", "alg": "HS256"},
    "rsa-1024": lambda: _rsa_jwk(1024),
    "rsa-e3": _small_exponent,
    "ec-p384": lambda: _ec_jwk(ec.SECP384R1()),
    "ec-off-curve": _off_curve,
    "ec-short-x": lambda: {**make_key("ES256").public_jwk, "x": b64url(b"\x01" * 31)},
    "ed448": _ed448,
    "x25519": lambda: {"kty": "OKP", "crv": "X25519", "x": b64url(b"\x09" * 32)},
    "unknown-kty": lambda: {"kty": "PQC", "x": "AAAA"},
    "no-kty": lambda: {"x": "AAAA"},
    "alg-none": lambda: {**make_key("ES256").public_jwk, "alg": "none"},
    "alg-hs256": lambda: {**make_key("RS256").public_jwk, "alg": "HS256"},
    "alg-mismatch": lambda: {**make_key("RS256").public_jwk, "alg": "ES256"},
    "use-enc": lambda: {**make_key("ES256").public_jwk, "use": "enc"},
    "padded-b64": lambda: {
        **make_key("EdDSA").public_jwk,
        "x": make_key("EdDSA").public_jwk["x"] + "=",
    },
    "not-b64": lambda: {**make_key("EdDSA").public_jwk, "x": "!!!!"},
    "x-number": lambda: {**make_key("EdDSA").public_jwk, "x": 12},
    "bad-kid": lambda: {**make_key("EdDSA").public_jwk, "kid": "a/b"},
    "long-kid": lambda: {**make_key("EdDSA").public_jwk, "kid": "k" * 65},
    "kid-number": lambda: {**make_key("EdDSA").public_jwk, "kid": 7},
    "not-object": lambda: "-----BEGIN PUBLIC KEY-----",
    "null": lambda: None,
    "list": lambda: [make_key("EdDSA").public_jwk],
}


def test_bad_public_jwk_is_400(client, admin, client_id):
    """Every case in one app keeps this fast; each case names itself on failure."""
    failures = {}
    for case, build in BAD_JWKS.items():
        response = client.post(keys_url(client_id), json={"public_jwk": build()}, headers=admin)
        body = response.get_json()
        if (
            response.status_code != 400
            or response.mimetype != "application/problem+json"
            or not body.get("errors")
            or not all({"field", "message"} <= set(e) for e in body["errors"])
        ):
            failures[case] = (response.status_code, body)
    assert failures == {}
    assert listed(client, admin, client_id) == []


@pytest.mark.parametrize(
    "body",
    [
        {"public_jwk": None, "kid": "x"},
        {"unknown": 1},
        {"expires_in": 10},
        {"expires_in": "3600"},
        {"expires_in": True},
        {"expires_in": 10**12},
    ],
)
def test_bad_body_fields_are_400(client, admin, client_id, body):
    response = client.post(keys_url(client_id), json=body, headers=admin)
    assert_problem(response, 400)
    assert listed(client, admin, client_id) == []


@pytest.mark.parametrize("raw", [b"[]", b"not json", b'"str"'])
def test_non_object_body_is_400(client, admin, client_id, raw):
    response = client.post(
        keys_url(client_id), data=raw, headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, 400)


def test_non_json_content_type_is_415(client, admin, client_id):
    response = client.post(
        keys_url(client_id), data="public_jwk=x", headers={**admin, "Content-Type": "text/plain"}
    )
    assert_problem(response, 415)


def test_at_most_five_active_keys(client, admin, client_id, app):
    for _ in range(5):
        client.post(keys_url(client_id), json={}, headers=admin)
    response = client.post(
        keys_url(client_id), json={"public_jwk": make_key("ES256").public_jwk}, headers=admin
    )
    assert_problem(response, 409, "too_many_keys")
    assert len(listed(client, admin, client_id)) == 5
    # An expired key no longer counts towards the limit.
    with app.app_context():
        oldest = db.session.scalar(sa.select(sa.func.min(ClientKey.id)))
        db.session.execute(
            sa.update(ClientKey)
            .where(ClientKey.id == oldest)
            .values(expires_at=utcnow().replace(year=2000))
        )
        db.session.commit()
    assert client.post(keys_url(client_id), json={}, headers=admin).status_code == 201


def test_duplicate_kid_and_duplicate_key_are_409(client, admin, client_id):
    first = make_key("ES256", kid="main")
    register_key(client, admin, client_id, first)
    other = make_key("ES256", kid="main")
    response = client.post(
        keys_url(client_id), json={"public_jwk": other.public_jwk}, headers=admin
    )
    assert_problem(response, 409, "kid_taken")
    again = {**first.public_jwk, "kid": "copy"}
    response = client.post(keys_url(client_id), json={"public_jwk": again}, headers=admin)
    assert_problem(response, 409, "key_exists")


def test_delete_key(client, admin, client_id):
    key = make_key("EdDSA", kid="gone")
    register_key(client, admin, client_id, key)
    response = client.delete(keys_url(client_id) + "/gone", headers=admin)
    assert response.status_code == 204
    assert listed(client, admin, client_id) == []
    # It stops working at once: an assertion signed with it is refused.
    response = token_request(client, sign(key, claims_for(client_id)))
    assert response.status_code == 401
    assert_problem(client.delete(keys_url(client_id) + "/gone", headers=admin), 404)


def test_locked_client_refuses_key_changes(client, admin, client_id):
    register_key(client, admin, client_id, make_key("ES256", kid="k1"))
    locked = client.patch(f"/api/v1/clients/{client_id}", json={"locked": True}, headers=admin)
    assert locked.status_code == 200
    assert_problem(client.post(keys_url(client_id), json={}, headers=admin), 409, "client_locked")
    response = client.delete(keys_url(client_id) + "/k1", headers=admin)
    assert_problem(response, 409, "client_locked")
    assert [k["kid"] for k in listed(client, admin, client_id)] == ["k1"]


def test_scopes_and_authentication(client, factory, client_id):
    reader = factory.admin_headers("acme", scopes=["clients:read"])
    assert client.get(keys_url(client_id), headers=reader).status_code == 200
    assert_problem(client.post(keys_url(client_id), json={}, headers=reader), 403)
    assert_problem(client.delete(keys_url(client_id) + "/x", headers=reader), 403)
    response = client.get(keys_url(client_id))
    assert_problem(response, 401)
    assert (
        response.headers["WWW-Authenticate"] == 'Bearer, DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
    )


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_other_accounts_client_is_404(client, factory, admin, method):
    foreign, _ = factory.client("globex")
    other_admin = factory.admin_headers("globex")
    register_key(client, other_admin, foreign, make_key("ES256", kid="theirs"))
    url = keys_url(foreign) + ("/theirs" if method == "delete" else "")
    kwargs = {"json": {}} if method == "post" else {}
    response = getattr(client, method)(url, headers=admin, **kwargs)
    assert_problem(response, 404, "client_not_found")
    assert [k["kid"] for k in listed(client, other_admin, foreign)] == ["theirs"]
    # A system admin manages every account.
    system = factory.admin_headers("system")
    assert client.get(keys_url(foreign), headers=system).status_code == 200


def test_unknown_client_is_404(client, admin):
    assert_problem(client.get(keys_url("nope"), headers=admin), 404)


def test_key_changes_are_audited_without_key_material(client, admin, client_id, factory):
    key = make_key("RS256", kid="audited")
    register_key(client, admin, client_id, key)
    client.delete(keys_url(client_id) + "/audited", headers=admin)
    system = factory.admin_headers("system")
    events = client.get("/api/v1/audit-events", headers=system).get_json()["data"]
    actions = [(e["action"], e["target"], e["account_id"]) for e in events]
    assert ("key.created", f"{client_id}/audited", "acme") in actions
    assert ("key.deleted", f"{client_id}/audited", "acme") in actions
    assert key.public_jwk["n"] not in json.dumps(events)


def test_last_used_at_is_recorded(client, admin, client_id, app):
    app.extensions["ccserver"].usage.resolution = 0
    key = make_key("ES256", kid="used")
    register_key(client, admin, client_id, key)
    assert token_request(client, sign(key, claims_for(client_id))).status_code == 200
    [item] = listed(client, admin, client_id)
    assert item["last_used_at"] is not None


def test_concurrent_adds_never_exceed_five(client, admin, client_id, app):
    """Real threads on PostgreSQL: the client row lock serializes the count."""
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("row locks (SELECT ... FOR UPDATE) need PostgreSQL")
    for _ in range(3):
        client.post(keys_url(client_id), json={}, headers=admin)
    workers = 6
    barrier = threading.Barrier(workers)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        http = app.test_client()
        barrier.wait()
        status = http.post(keys_url(client_id), json={}, headers=admin).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201] * 2 + [409] * 4
    assert len(listed(client, admin, client_id)) == 5
