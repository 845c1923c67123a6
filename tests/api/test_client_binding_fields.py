"""Client fields for sender-constrained tokens and tls_client_auth (docs/api.md §2.1,
§1.1, §1.2): stored, shown, reset by PUT, validated; one certificate rule at most,
also as a database constraint."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Client

API = "/api/v1/clients"
FIELDS = {
    "dpop_bound_access_tokens": False,
    "tls_client_certificate_bound_access_tokens": False,
    "tls_client_auth_subject_dn": None,
    "tls_client_auth_san_dns": None,
    "tls_client_auth_san_uri": None,
    "tls_client_auth_san_ip": None,
    "tls_client_auth_san_email": None,
    "security_profile": None,
}


@pytest.fixture
def admin(factory):
    return factory.admin_headers("acme")


def test_defaults_are_shown(client, admin):
    created = client.post(API, json={"name": "plain"}, headers=admin).get_json()
    assert {k: created[k] for k in FIELDS} == FIELDS


def test_fields_are_stored_shown_and_reset_by_put(client, admin):
    body = {
        "name": "bound",
        "dpop_bound_access_tokens": True,
        "tls_client_certificate_bound_access_tokens": True,
        "tls_client_auth_san_ip": "2001:db8::1",
        "security_profile": "fapi2",
    }
    created = client.post(API, json=body, headers=admin)
    assert created.status_code == 201, created.get_json()
    cid = created.get_json()["id"]
    shown = client.get(f"{API}/{cid}", headers=admin).get_json()
    assert {k: shown[k] for k in body} == body
    patched = client.patch(
        f"{API}/{cid}",
        json={"tls_client_auth_san_ip": None, "tls_client_auth_subject_dn": "CN=svc,O=Acme"},
        headers=admin,
    ).get_json()
    assert patched["tls_client_auth_subject_dn"] == "CN=svc,O=Acme"
    assert patched["tls_client_auth_san_ip"] is None
    put = client.put(f"{API}/{cid}", json={"name": "bound"}, headers=admin).get_json()
    assert {k: put[k] for k in FIELDS} == FIELDS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tls_client_auth_san_ip", "not-an-ip"),
        ("tls_client_auth_san_dns", ""),
        ("tls_client_auth_subject_dn", "CN=a\\nb\x01"),
        ("security_profile", "fapi1"),
        ("dpop_bound_access_tokens", "true"),
    ],
)
def test_bad_values_are_400_on_their_field(client, admin, field, value):
    response = client.post(API, json={"name": "bad", field: value}, headers=admin)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert [e["field"] for e in response.get_json()["errors"]] == [field]


def test_two_certificate_rules_are_refused(client, admin):
    body = {
        "name": "two",
        "tls_client_auth_san_dns": "svc.example",
        "tls_client_auth_san_email": "svc@example.com",
    }
    response = client.post(API, json=body, headers=admin)
    assert response.status_code == 400
    assert [e["field"] for e in response.get_json()["errors"]] == ["tls_client_auth_san_email"]
    cid = client.post(
        API, json={"name": "one", "tls_client_auth_san_dns": "svc.example"}, headers=admin
    ).get_json()["id"]
    response = client.patch(
        f"{API}/{cid}", json={"tls_client_auth_san_uri": "spiffe://acme/svc"}, headers=admin
    )
    assert response.status_code == 400
    shown = client.get(f"{API}/{cid}", headers=admin).get_json()
    assert shown["tls_client_auth_san_uri"] is None


def test_the_database_refuses_two_certificate_rules(app, client, admin):
    cid = client.post(
        API, json={"name": "db", "tls_client_auth_san_dns": "svc.example"}, headers=admin
    ).get_json()["id"]
    with app.app_context():
        with pytest.raises(IntegrityError):
            db.session.execute(
                sa.update(Client).where(Client.id == cid).values(tls_client_auth_subject_dn="CN=x")
            )
            db.session.commit()
        db.session.rollback()
        with pytest.raises(IntegrityError):
            db.session.execute(
                sa.update(Client).where(Client.id == cid).values(security_profile="other")
            )
            db.session.commit()
        db.session.rollback()
        db.session.remove()
