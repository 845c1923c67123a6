"""Integration: the bench seeding code keeps working (no timing here; `make bench` times)."""

from __future__ import annotations

import jwt
import sqlalchemy as sa

from app.extensions import db
from app.models import Client
from app.runtime import runtime
from bench.seed import (
    SEED_ACCOUNT,
    seed_client_id,
    seed_clients,
    seed_secret,
    seeded_count,
    seeded_with,
)
from tests.conftest import basic_auth


def test_seeded_clients_get_tokens(app, client):
    """Seeded rows are real clients: each one's secret gets a token for it."""
    with app.app_context():
        assert seed_clients(db.engine, 5, runtime().pepper) == 5
        assert seeded_count(db.engine) == 5

    for index in (0, 4):
        response = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "scope": "read"},
            headers=basic_auth(seed_client_id(index), seed_secret(index)),
        )
        assert response.status_code == 200, response.get_json()
        claims = jwt.decode(
            response.get_json()["access_token"], options={"verify_signature": False}
        )
        assert claims["sub"] == seed_client_id(index)
        assert claims["account_id"] == SEED_ACCOUNT

    wrong = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(seed_client_id(1), seed_secret(2)),
    )
    assert wrong.status_code == 401


def test_seeding_continues_after_existing_rows(app):
    """A second batch starts where the first ended: ids and names never collide."""
    with app.app_context():
        assert seed_clients(db.engine, 3, runtime().pepper) == 3
        assert seed_clients(db.engine, 2, runtime().pepper, start=3) == 2
        assert seeded_count(db.engine) == 5
        ids = db.session.scalars(sa.select(Client.id).where(Client.account_id == SEED_ACCOUNT))
        assert sorted(ids.all()) == sorted(seed_client_id(i) for i in range(5))


def test_a_bench_database_seeded_under_another_pepper_is_seeded_again(app):
    """The bench re-seeds when its pepper changed (the hashes would all fail)."""
    with app.app_context():
        assert seeded_with(db.engine, runtime().pepper) is False  # nothing seeded yet
        seed_clients(db.engine, 1, runtime().pepper)
        assert seeded_with(db.engine, runtime().pepper) is True
        assert seeded_with(db.engine, b"another-pepper-of-at-least-32-bytes") is False


def test_the_federated_scenario_authenticates(make_app, tmp_path):
    """bench's local issuer, credential and tokens get tokens for a client with no secret."""
    import sqlalchemy as sa

    from app.models import Client, FederatedCredential
    from app.timeutil import utcnow
    from bench.run import ASSERTION_TYPE, FED_ID, LocalIssuer

    app = make_app(FEDERATION_ALLOW_INSECURE=True)
    issuer = LocalIssuer()
    try:
        now = utcnow()
        with app.app_context():
            db.session.add(
                Client(
                    id=FED_ID,
                    account_id="bench",
                    name="bench-federated",
                    friendly_name="Bench",
                    scopes=["read"],
                    audiences=[],
                )
            )
            db.session.flush()
            db.session.execute(
                sa.insert(FederatedCredential), [issuer.credential(now, app.config["ISSUER"])]
            )
            db.session.commit()
        path = tmp_path / "tokens.txt"
        issuer.tokens(3, path, app.config["ISSUER"])
        client = app.test_client()
        for token in path.read_text().split():
            response = client.post(
                "/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": FED_ID,
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": token,
                },
            )
            assert response.status_code == 200, response.get_json()
        # The issuer's keys were fetched once and then served from the cache.
        assert issuer.fetches == 1
    finally:
        issuer.close()
