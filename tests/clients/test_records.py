"""Integration: the token path's client records read the same from PostgreSQL's one
statement (app/state/autocommit.py, on a cache miss) as from the portable Core selects.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.clients.records import ClientStore, load_record, load_record_postgres
from app.extensions import db
from app.models import ClientSecret
from app.state.autocommit import postgres_reader
from app.timeutil import utcnow
from tests.oauth.assertions import make_key, register_key


def as_dict(record) -> dict:
    """Every field of a record; secrets and keys in a fixed order (SQL gives none)."""
    data = dataclasses.asdict(record)
    data["secrets"] = sorted(data["secrets"], key=lambda s: s["id"])
    data["keys"] = sorted(data["keys"], key=lambda k: k["kid"])
    return data


def test_one_statement_reads_what_the_core_selects_read(app, client, factory):
    with app.app_context():
        reader = postgres_reader()
        if reader is None:
            pytest.skip("PostgreSQL only")
    cid, _ = factory.client("acme", scopes=["read", "write"], audiences=["https://a.example"])
    headers = factory.admin_headers("acme")
    # A second secret that expires, and a registered key: every nested shape is filled.
    assert client.post(f"/api/v1/clients/{cid}/secrets", headers=headers).status_code == 201
    register_key(client, headers, cid, make_key("ES256"))
    expiry = utcnow().replace(microsecond=123456) + timedelta(hours=1)
    with app.app_context():
        first = (
            db.session.execute(sa.select(ClientSecret).where(ClientSecret.client_id == cid))
            .scalars()
            .first()
        )
        first.expires_at = expiry
        db.session.commit()
        with db.engine.connect() as conn:
            core = load_record(conn, cid)
        one = load_record_postgres(reader, cid)
        assert as_dict(one) == as_dict(core)
        assert len(one.secrets) == 2 and len(one.keys) == 1
        assert expiry in {s.expires_at for s in one.secrets}
        assert all(
            s.expires_at is None or s.expires_at.utcoffset() == timedelta(0) for s in one.secrets
        )
        # Unknown and impossible ids name no client, without an error.
        for missing in ("no-such-client", "", "x" * 65, "a\x00b"):
            assert load_record_postgres(reader, missing) is None


def test_expired_cache_entries_are_swept(app):
    """A worker that sees many clients keeps only those seen within the TTL."""
    store = ClientStore(ttl=0.2)
    with app.app_context():
        for i in range(50):
            assert store.get(f"unknown-{i}") is None
        assert len(store._cache) == 50
        time.sleep(0.25)
        store.get("one-more")
        assert list(store._cache) == ["one-more"]
