"""Integration: the token path's client records read the same from PostgreSQL's one
statement (`PostgresRecordLoader` on app/state/autocommit.py, on a cache miss) as from
the portable Core selects (`SqlRecordLoader`).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.clients.records import (
    ClientStore,
    PostgresRecordLoader,
    SqlRecordLoader,
    loader_for,
)
from app.extensions import db
from app.models import ClientSecret
from app.runtime import runtime
from app.timeutil import utcnow
from tests.oauth.assertions import make_key, register_key
from tests.oauth.federation import Issuer, add_credential, credential_body


def as_dict(record) -> dict:
    """Every field of a record; secrets and keys in a fixed order (SQL gives none)."""
    data = dataclasses.asdict(record)
    data["secrets"] = sorted(data["secrets"], key=lambda s: s["id"])
    data["keys"] = sorted(data["keys"], key=lambda k: k["kid"])
    return data


def test_one_statement_reads_what_the_core_selects_read(app, client, factory):
    with app.app_context():
        executor = runtime().autocommit
        if executor is None:
            pytest.skip("PostgreSQL only")
        one_statement = PostgresRecordLoader(executor)
        core_selects = SqlRecordLoader(db.engine)
    cid, _ = factory.client("acme", scopes=["read", "write"], audiences=["https://a.example"])
    headers = factory.admin_headers("acme")
    # A second secret that expires, and a registered key: every nested shape is filled.
    assert client.post(f"/api/v1/clients/{cid}/secrets", headers=headers).status_code == 201
    register_key(client, headers, cid, make_key("ES256"))
    platform = Issuer("https://token.actions.githubusercontent.com", "ES256")
    fed = [
        credential_body(platform, name="b", subject="s", claims={"owner": ["a", "b"]}),
        credential_body(platform, name="a", subject_pattern="repo:*", jwks=None, single_use=True),
    ]
    for body in fed:
        add_credential(client, headers, cid, body)
    expiry = utcnow().replace(microsecond=123456) + timedelta(hours=1)
    with app.app_context():
        first = (
            db.session.execute(sa.select(ClientSecret).where(ClientSecret.client_id == cid))
            .scalars()
            .first()
        )
        first.expires_at = expiry
        db.session.commit()
        core = core_selects.load(cid)
        one = one_statement.load(cid)
        assert as_dict(one) == as_dict(core)
        assert len(one.secrets) == 2 and len(one.keys) == 1
        # Federated credentials oldest first, every field as stored.
        assert [f.name for f in one.federated] == ["b", "a"]
        assert one.federated[0].jwks == {"keys": [platform.public_jwk]}
        assert one.federated[0].claims == {"owner": ["a", "b"]}
        assert one.federated[1].subject_pattern.matches("repo:x")
        assert one.federated[1].single_use is True and one.federated[1].jwks is None
        assert expiry in {s.expires_at for s in one.secrets}
        assert all(
            s.expires_at is None or s.expires_at.utcoffset() == timedelta(0) for s in one.secrets
        )
        # Unknown and impossible ids name no client, without an error.
        for missing in ("no-such-client", "", "x" * 65, "a\x00b"):
            assert one_statement.load(missing) is None
            assert core_selects.load(missing) is None


def test_expired_cache_entries_are_swept(app):
    """A worker that sees many clients keeps only those seen within the TTL."""
    with app.app_context():
        store = ClientStore(0.2, loader_for(runtime().autocommit, db.engine))
        for i in range(50):
            assert store.get(f"unknown-{i}") is None
        assert len(store._cache) == 50
        time.sleep(0.25)
        store.get("one-more")
        assert list(store._cache) == ["one-more"]


@pytest.fixture(params=["sql", "postgres"])
def loader(request, app):
    with app.app_context():
        executor = runtime().autocommit
        engine = db.engine
    if request.param == "postgres":
        if executor is None:
            pytest.skip("PostgreSQL only")
        return PostgresRecordLoader(executor)
    return SqlRecordLoader(engine)


def test_loader_reads_a_client_with_its_secrets_and_keys(app, client, factory, loader):
    cid, _ = factory.client("acme", scopes=["read", "write"], audiences=["https://a.example"])
    headers = factory.admin_headers("acme")
    register_key(client, headers, cid, make_key("ES256"))
    with app.app_context():
        secret_ids = set(
            db.session.scalars(sa.select(ClientSecret.id).where(ClientSecret.client_id == cid))
        )
    record = loader.load(cid)
    assert record.id == cid
    assert record.account_id == "acme"
    assert record.scopes == ("read", "write")
    assert record.audiences == ("https://a.example",)
    assert record.disabled is False
    assert {s.id for s in record.secrets} == secret_ids
    assert [k.alg for k in record.keys] == ["ES256"]
    assert record.keys[0].public_jwk["kty"] == "EC"
    for missing in ("no-such-client", "", "x" * 65, "a\x00b"):
        assert loader.load(missing) is None


def test_loader_for_picks_the_one_statement_on_postgresql(app):
    with app.app_context():
        executor = runtime().autocommit
        chosen = loader_for(executor, db.engine)
    expected = SqlRecordLoader if executor is None else PostgresRecordLoader
    assert type(chosen) is expected
