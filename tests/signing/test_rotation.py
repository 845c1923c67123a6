"""Integration: the signing-key lifecycle without a human (docs/deployment.md, key rotation).

Real database (SQLite or PostgreSQL), real keys and PEM files. Time is moved
by backdating rows, never by sleeping.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import AuditEvent, SigningKey
from app.runtime import runtime
from app.signing import keys as keys_service
from app.timeutil import utcnow

JWKS = "/.well-known/jwks.json"
HOUR = 3600


@pytest.fixture
def app_config(base_config, migrated) -> dict:
    # Every request checks the schedule, so a test needs no waiting.
    return {**base_config, "KEY_SCHEDULE_INTERVAL": 0, "KEY_ROTATION_INTERVAL": HOUR}


def statuses(app) -> dict[str, list[str]]:
    with app.app_context():
        return {s: [k.kid for k in keys] for s, keys in keys_service.keys_by_status().items()}


def backdate(app, kid: str, seconds: float, *, activated: bool = True) -> None:
    """Pretend the key was made (and activated) `seconds` ago."""
    with app.app_context():
        key = db.session.get(SigningKey, kid)
        key.created_at = utcnow() - timedelta(seconds=seconds)
        if activated and key.activated_at is not None:
            key.activated_at = key.created_at
        db.session.commit()
        runtime().keyring.invalidate()


def backdate_all(app, seconds: float, *, activated: bool = True) -> None:
    """Backdate every key, keeping their order (retired, current, next)."""
    keys = statuses(app)
    ordered = keys["retired"] + keys["current"] + keys["next"]
    for index, kid in enumerate(ordered):
        backdate(app, kid, seconds + len(ordered) - index, activated=activated)


def rotations(app) -> list[AuditEvent]:
    with app.app_context():
        return db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "signing_key.rotated")
        ).all()


def signing_kid(factory, client_id: str, secret: str) -> str:
    token = factory.token(client_id, secret)["access_token"]
    return jwt.get_unverified_header(token)["kid"]


def published(http) -> list[str]:
    return [k["kid"] for k in http.get(JWKS).get_json()["keys"]]


# --- schedule -----------------------------------------------------------------------------------


def test_schedule_rotates_when_current_key_is_older_than_interval(app, client):
    before = statuses(app)
    backdate_all(app, HOUR + 5)
    assert client.get("/healthz").status_code == 200
    after = statuses(app)
    assert after["current"] == before["next"]
    assert after["retired"] == before["current"]
    assert len(after["next"]) == 1 and after["next"] != before["next"]
    events = rotations(app)
    assert [(e.actor, e.target, e.account_id) for e in events] == [
        ("scheduler", before["next"][0], "system")
    ]
    # The next check finds a fresh current key and leaves it alone.
    assert client.get("/healthz").status_code == 200
    assert statuses(app) == after
    assert len(rotations(app)) == 1


def test_schedule_leaves_a_young_key_alone(app, client):
    before = statuses(app)
    backdate_all(app, HOUR - 60)
    assert client.get("/healthz").status_code == 200
    assert statuses(app) == before
    assert rotations(app) == []


def test_zero_interval_disables_the_schedule(base_config, migrated, app):
    other = create_app({**base_config, "KEY_SCHEDULE_INTERVAL": 0, "KEY_ROTATION_INTERVAL": 0})
    try:
        backdate_all(app, 400 * 86400)
        before = statuses(app)
        assert other.test_client().get("/healthz").status_code == 200
        assert statuses(app) == before
        assert rotations(app) == []
    finally:
        with other.app_context():
            db.engine.dispose()


def test_scheduled_rotation_switches_signing_key_of_this_instance(app, client, factory):
    cid, secret = factory.client(scopes=["read"])
    old = signing_kid(factory, cid, secret)
    before = statuses(app)
    # Keys a month old: the next key has been published far longer than any
    # JWKS cache, so the promoted key signs at once.
    backdate_all(app, 31 * 86400)
    new = signing_kid(factory, cid, secret)
    assert new == before["next"][0] != old
    assert new in published(client)
    assert old in published(client)


# --- concurrency --------------------------------------------------------------------------------


def _run_in_two_instances(base_config, work) -> list[BaseException]:
    """Run `work()` at the same moment in two app instances (two engines, two threads)."""
    apps = [create_app(dict(base_config)) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(instance):
        with instance.app_context():
            try:
                barrier.wait(timeout=10)
                work()
                db.session.commit()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                db.session.rollback()
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(a,)) for a in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for instance in apps:
        with instance.app_context():
            db.engine.dispose()
    return errors


def test_two_instances_due_at_once_rotate_once(app, base_config):
    before = statuses(app)
    backdate_all(app, HOUR + 5)
    cfg = app.config

    def work():
        keys_service.rotate_if_due(
            cfg["SIGNING_ALG"], cfg["KEYS_DIR"], cfg["KEYS_PASSPHRASE"], HOUR, "scheduler"
        )

    errors = _run_in_two_instances(base_config, work)
    assert errors == []
    after = statuses(app)
    assert len(after["current"]) == 1 and len(after["next"]) == 1
    assert after["current"] == before["next"]
    assert after["retired"] == before["current"]
    assert len(rotations(app)) == 1


def test_two_manual_rotations_at_once_end_with_one_current_and_one_next(app, base_config):
    before = statuses(app)
    cfg = app.config

    def work():
        keys_service.rotate_keys(cfg["SIGNING_ALG"], cfg["KEYS_DIR"], cfg["KEYS_PASSPHRASE"], "t")

    errors = _run_in_two_instances(base_config, work)
    assert errors == []
    after = statuses(app)
    # Serialized by the key lock: two rotations, one after the other.
    assert len(after["current"]) == 1 and len(after["next"]) == 1
    assert len(after["retired"]) == 2
    assert set(after["retired"]) == set(before["current"] + before["next"])
    assert len(rotations(app)) == 2


# --- publication before use ---------------------------------------------------------------------


def test_young_next_key_is_not_signed_with_until_published_long_enough(app, client, factory):
    cid, secret = factory.client(scopes=["read"])
    backdate_all(app, 31 * 86400, activated=False)
    first = statuses(app)
    # Rotate twice in a row: the second promotes a key made seconds ago.
    for _ in range(2):
        with app.app_context():
            cfg = app.config
            keys_service.rotate_keys(cfg["SIGNING_ALG"], cfg["KEYS_DIR"], None, "test")
            db.session.commit()
            runtime().keyring.invalidate()
    after = statuses(app)
    young = after["current"][0]
    assert after["retired"] == first["current"] + first["next"]
    # Signs with the month-old key promoted by the first rotation, now retired
    # but still published, not with the young current key.
    kid = signing_kid(factory, cid, secret)
    assert kid == first["next"][0]
    assert kid in published(client)
    # Once the young key is older than max-age + refresh + skew, it signs.
    delay = keys_service.KeyTiming.from_config(app.config).publish_delay.total_seconds()
    backdate(app, young, delay - 30, activated=False)
    assert signing_kid(factory, cid, secret) == first["next"][0]
    backdate(app, young, delay + 1, activated=False)
    assert signing_kid(factory, cid, secret) == young


# --- retirement and purge -----------------------------------------------------------------------


def test_signing_key_of_a_token_stays_published_until_the_token_expired(app, client, factory):
    cid, secret = factory.client(scopes=["read"], access_token_ttl=7200)
    backdate_all(app, 31 * 86400, activated=False)
    token = factory.token(cid, secret)["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    backdate_all(app, HOUR + 5)  # the schedule rotates on the next request
    assert signing_kid(factory, cid, secret) != kid
    with app.app_context():
        retired = db.session.get(SigningKey, kid)
        assert retired.status == "retired"
        assert retired.retires_at.timestamp() >= exp + app.config["KEY_CLOCK_SKEW"]
    jwks = client.get(JWKS).get_json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(
        token, jwt.PyJWK.from_dict(jwk).key, algorithms=["ES256"], options={"verify_aud": False}
    )
    assert claims["exp"] == exp


def test_purge_removes_expired_retired_keys_and_their_pem_files(app, client):
    backdate_all(app, HOUR + 5)
    assert client.get("/healthz").status_code == 200  # rotation 1
    backdate_all(app, HOUR + 5)
    assert client.get("/healthz").status_code == 200  # rotation 2
    keys = statuses(app)
    assert len(keys["retired"]) == 2
    expired, alive = keys["retired"]
    keys_dir = Path(app.config["KEYS_DIR"])
    assert (keys_dir / f"{expired}.pem").exists()
    with app.app_context():
        db.session.get(SigningKey, expired).retires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert client.get("/healthz").status_code == 200
    after = statuses(app)
    assert after["retired"] == [alive]
    assert not (keys_dir / f"{expired}.pem").exists()
    assert (keys_dir / f"{alive}.pem").exists()
    assert expired not in published(client)
    assert alive in published(client)
