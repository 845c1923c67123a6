"""Integration: the federated credentials API (docs/api.md §2.8) over HTTP with real crypto."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.clients.federation import MAX_CREDENTIALS
from app.extensions import db
from app.models import AuditEvent, FederatedCredential
from tests.oauth.federation import API, Issuer, add_credential, credential_body

GITHUB = "https://token.actions.githubusercontent.com"
FIELDS = {
    "id",
    "name",
    "issuer",
    "subject",
    "subject_pattern",
    "claims",
    "audience",
    "jwks_uri",
    "jwks",
    "max_token_age",
    "single_use",
    "created_at",
    "last_used_at",
}


@pytest.fixture
def admin(factory):
    return factory.admin_headers("acme")


@pytest.fixture
def client_id(factory):
    cid, _ = factory.client("acme", scopes=["read"])
    return cid


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(GITHUB, "ES256")


def url(cid: str, suffix: str = "") -> str:
    return f"{API}/clients/{cid}/federated-credentials{suffix}"


def assert_problem(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_json()
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    if code:
        assert body["code"] == code
    return body


def listed(http, headers, cid) -> list[dict]:
    response = http.get(url(cid), headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_create_list_delete(client, admin, client_id, issuer):
    body = credential_body(
        issuer,
        name="github-deploy",
        subject="repo:acme/billing:ref:refs/heads/main",
        claims={"repository_owner": "acme", "environment": ["prod", "staging"]},
    )
    created = add_credential(client, admin, client_id, body)
    assert set(created) == FIELDS
    assert created["name"] == "github-deploy"
    assert created["subject_pattern"] is None and created["jwks_uri"] is None
    # Defaults (docs/api.md §2.8): this server's issuer, an hour, reusable.
    assert created["audience"] == "http://localhost:5000"
    assert created["max_token_age"] == 3600 and created["single_use"] is False
    assert created["last_used_at"] is None and created["created_at"].endswith("Z")
    assert created["jwks"] == {"keys": [issuer.public_jwk]}
    assert listed(client, admin, client_id) == [created]

    response = client.delete(url(client_id, f"/{created['id']}"), headers=admin)
    assert response.status_code == 204
    assert listed(client, admin, client_id) == []
    assert_problem(
        client.delete(url(client_id, f"/{created['id']}"), headers=admin),
        404,
        "federated_credential_not_found",
    )


def test_every_field_given(client, admin, client_id):
    body = {
        "name": "spiffe",
        "issuer": "https://spire.example.org",
        "subject_pattern": "spiffe://example.org/ns/*/sa/?eb",
        "claims": {},
        "audience": "https://auth.acme.example",
        "jwks_uri": "https://spire.example.org/bundle",
        "max_token_age": 60,
        "single_use": True,
    }
    created = add_credential(client, admin, client_id, body)
    assert {k: created[k] for k in body} == body
    assert created["subject"] is None and created["jwks"] is None


def test_names_are_unique_per_client(client, admin, client_id, factory, issuer):
    add_credential(client, admin, client_id, credential_body(issuer, name="ci", subject="a"))
    again = client.post(
        url(client_id), json=credential_body(issuer, name="ci", subject="b"), headers=admin
    )
    assert_problem(again, 409, "name_taken")
    other, _ = factory.client("acme")
    add_credential(client, admin, other, credential_body(issuer, name="ci", subject="a"))


def test_private_keys_in_jwks_are_refused_and_kept_out(client, admin, client_id, issuer, app):
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private, as_dict=True)
    response = client.post(
        url(client_id),
        json=credential_body(issuer, subject="s", jwks={"keys": [jwk]}),
        headers=admin,
    )
    body = assert_problem(response, 400, "validation_error")
    assert body["errors"][0]["field"] == "jwks.keys[0]"
    assert "private" in body["errors"][0]["message"]
    assert jwk["d"] not in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(FederatedCredential)) == 0


def test_unknown_members_of_an_inline_key_are_dropped(client, admin, client_id, issuer):
    jwk = {**issuer.public_jwk, "x5u": "https://evil.example/cert", "note": "x"}
    created = add_credential(
        client, admin, client_id, credential_body(issuer, subject="s", jwks={"keys": [jwk]})
    )
    assert created["jwks"] == {"keys": [issuer.public_jwk]}


def _small_rsa() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"issuer": "http://insecure.example"}, "issuer"),
        ({"issuer": "ftp://x.example"}, "issuer"),
        ({"issuer": "https://"}, "issuer"),
        ({"issuer": "https://u:p@x.example"}, "issuer"),
        ({"issuer": "https://x.example/?q=1"}, "issuer"),
        ({"issuer": "https://x.example/#f"}, "issuer"),
        ({"issuer": "not a url"}, "issuer"),
        ({"issuer": ""}, "issuer"),
        ({"issuer": None}, "issuer"),
        ({"subject": None}, "subject"),
        ({"subject_pattern": "repo:*"}, "subject"),
        ({"subject": None, "subject_pattern": "*"}, "subject_pattern"),
        ({"subject": None, "subject_pattern": "*?*"}, "subject_pattern"),
        ({"subject": None, "subject_pattern": "has space*"}, "subject_pattern"),
        ({"subject": None, "subject_pattern": "tab\t*"}, "subject_pattern"),
        ({"subject": ""}, "subject"),
        ({"subject": "x" * 1025}, "subject"),
        ({"jwks_uri": "http://keys.example/jwks"}, "jwks_uri"),
        ({"jwks_uri": "https://keys.example/jwks"}, "jwks"),
        ({"jwks": {"keys": []}}, "jwks.keys"),
        ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "jwks.keys[0]"),
        ({"jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}}, "jwks.keys[0]"),
        ({"jwks": {"keys": [_small_rsa()]}}, "jwks.keys[0]"),
        ({"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}}, "jwks.keys[0]"),
        ({"jwks": "x"}, "jwks"),
        ({"claims": {"repository_owner": 1}}, "claims.repository_owner"),
        ({"claims": {"repository_owner": []}}, "claims.repository_owner"),
        ({"claims": {"repository_owner": ["a", 1]}}, "claims.repository_owner"),
        ({"claims": {"repository_owner": ["a", "a"]}}, "claims.repository_owner"),
        ({"claims": {"sub": "x"}}, "claims.sub"),
        ({"claims": {"aud": "x"}}, "claims.aud"),
        ({"claims": {f"c{i}": "x" for i in range(21)}}, "claims"),
        ({"claims": ["x"]}, "claims"),
        ({"max_token_age": 59}, "max_token_age"),
        ({"max_token_age": 86401}, "max_token_age"),
        ({"max_token_age": "3600"}, "max_token_age"),
        ({"single_use": "true"}, "single_use"),
        ({"audience": "has space"}, "audience"),
        ({"name": "Upper"}, "name"),
        ({"id": "mine"}, "id"),
        ({"last_used_at": None}, "last_used_at"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_bodies_are_400(client, admin, client_id, issuer, fields, field):
    body = credential_body(issuer, **{"subject": "repo:acme/x:ref:refs/heads/main", **fields})
    response = client.post(url(client_id), json=body, headers=admin)
    problem = assert_problem(response, 400)
    assert field in [e["field"] for e in problem["errors"]], problem["errors"]


@pytest.mark.parametrize("raw", ["[]", '"x"', "{", ""])
def test_non_object_body_is_400(client, admin, client_id, raw):
    response = client.post(
        url(client_id), data=raw, headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, 400)


def test_insecure_issuer_allowed_only_when_configured(make_app, issuer):
    app = make_app(FEDERATION_ALLOW_INSECURE=True)
    http = app.test_client()
    from tests.conftest import Factory

    factory = Factory(app, http)
    admin = factory.admin_headers("acme")
    cid, _ = factory.client("acme")
    body = {
        "name": "lab",
        "issuer": "http://127.0.0.1:8080",
        "subject": "s",
        "jwks_uri": "http://127.0.0.1:8080/jwks",
    }
    assert add_credential(http, admin, cid, body)["issuer"] == "http://127.0.0.1:8080"


def test_at_most_fifty_per_client(client, admin, client_id, issuer, app):
    for i in range(MAX_CREDENTIALS):
        add_credential(
            client, admin, client_id, credential_body(issuer, name=f"c{i}", subject=f"s{i}")
        )
    response = client.post(
        url(client_id), json=credential_body(issuer, name="one-more", subject="x"), headers=admin
    )
    assert_problem(response, 409, "too_many_credentials")
    assert len(listed(client, admin, client_id)) == MAX_CREDENTIALS
    # Deleting one makes room again.
    first = listed(client, admin, client_id)[0]["id"]
    assert client.delete(url(client_id, f"/{first}"), headers=admin).status_code == 204
    add_credential(client, admin, client_id, credential_body(issuer, name="one-more", subject="x"))


def test_concurrent_adds_never_exceed_fifty(client, admin, client_id, issuer, app):
    """Real threads on PostgreSQL: the client row lock serializes the count."""
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("row locks (SELECT ... FOR UPDATE) need PostgreSQL")
    for i in range(MAX_CREDENTIALS - 2):
        add_credential(client, admin, client_id, credential_body(issuer, name=f"c{i}", subject="s"))
    workers = 6
    barrier = threading.Barrier(workers)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        http = app.test_client()
        barrier.wait()
        body = credential_body(issuer, name=f"race{n}", subject="s")
        status = http.post(url(client_id), json=body, headers=admin).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201] * 2 + [409] * 4
    assert len(listed(client, admin, client_id)) == MAX_CREDENTIALS


def test_locked_client_refuses_changes_but_lists_and_tests(client, admin, client_id, issuer):
    made = add_credential(client, admin, client_id, credential_body(issuer, subject="s"))
    assert (
        client.patch(f"{API}/clients/{client_id}", json={"locked": True}, headers=admin).status_code
        == 200
    )
    assert_problem(
        client.post(url(client_id), json=credential_body(issuer, subject="t"), headers=admin),
        409,
        "client_locked",
    )
    assert_problem(
        client.delete(url(client_id, f"/{made['id']}"), headers=admin), 409, "client_locked"
    )
    assert listed(client, admin, client_id) == [made]
    tested = client.post(
        url(client_id, "/test"), json={"assertion": issuer.token("s")}, headers=admin
    )
    assert tested.status_code == 200 and tested.get_json()["matched"] is True


def test_scopes(client, factory, client_id, issuer):
    reader = factory.admin_headers("acme", scopes=["clients:read"])
    writer = factory.admin_headers("acme")
    made = add_credential(client, writer, client_id, credential_body(issuer, subject="s"))
    assert client.get(url(client_id), headers=reader).status_code == 200
    body = credential_body(issuer, subject="t")
    assert_problem(client.post(url(client_id), json=body, headers=reader), 403)
    assert_problem(client.delete(url(client_id, f"/{made['id']}"), headers=reader), 403)
    test = {"assertion": issuer.token("s")}
    assert_problem(client.post(url(client_id, "/test"), json=test, headers=reader), 403)
    assert client.get(url(client_id)).status_code == 401
    assert client.post(url(client_id, "/test"), json=test).status_code == 401


@pytest.mark.parametrize("method", ["get", "post", "delete", "test"])
def test_other_accounts_client_is_404(client, factory, admin, issuer, method):
    other, _ = factory.client("globex")
    globex = factory.admin_headers("globex")
    made = add_credential(client, globex, other, credential_body(issuer, subject="s"))
    calls = {
        "get": lambda: client.get(url(other), headers=admin),
        "post": lambda: client.post(
            url(other), json=credential_body(issuer, subject="x"), headers=admin
        ),
        "delete": lambda: client.delete(url(other, f"/{made['id']}"), headers=admin),
        "test": lambda: client.post(
            url(other, "/test"), json={"assertion": issuer.token("s")}, headers=admin
        ),
    }
    assert_problem(calls[method](), 404, "client_not_found")
    assert listed(client, globex, other) == [made]


def test_a_credential_id_of_another_client_is_404(client, admin, factory, client_id, issuer):
    other, _ = factory.client("acme")
    made = add_credential(client, admin, other, credential_body(issuer, subject="s"))
    assert_problem(
        client.delete(url(client_id, f"/{made['id']}"), headers=admin),
        404,
        "federated_credential_not_found",
    )
    assert listed(client, admin, other) == [made]


def test_privilege_rule(client, factory, issuer, app):
    """An admin holding a management scope the caller lacks: 403, nothing changes."""
    strong, _ = factory.admin("system")
    full = factory.admin_headers("system")
    weak = factory.admin_headers("system", scopes=["clients:read", "clients:write"])
    made = add_credential(client, full, strong, credential_body(issuer, subject="s"))
    body = credential_body(issuer, subject="t")
    for response in (
        client.post(url(strong), json=body, headers=weak),
        client.delete(url(strong, f"/{made['id']}"), headers=weak),
    ):
        assert_problem(response, 403, "insufficient_privilege")
    assert listed(client, full, strong) == [made]


def test_changes_are_audited_without_key_material(client, admin, client_id, issuer, app):
    made = add_credential(client, admin, client_id, credential_body(issuer, subject="s"))
    client.delete(url(client_id, f"/{made['id']}"), headers=admin)
    with app.app_context():
        events = db.session.execute(
            sa.select(AuditEvent.action, AuditEvent.target, AuditEvent.account_id).where(
                AuditEvent.action.like("federated_credential.%")
            )
        ).all()
    target = f"{client_id}/{made['id']}"
    assert sorted(events) == [
        ("federated_credential.created", target, "acme"),
        ("federated_credential.deleted", target, "acme"),
    ]
    listing = client.get(f"{API}/audit-events", headers=admin).get_json()["data"]
    assert issuer.public_jwk["x"] not in str(listing)


def test_deleting_the_client_deletes_its_credentials(client, admin, client_id, issuer, app):
    add_credential(client, admin, client_id, credential_body(issuer, subject="s"))
    assert client.delete(f"{API}/clients/{client_id}", headers=admin).status_code == 204
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(FederatedCredential)) == 0
