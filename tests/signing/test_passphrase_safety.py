"""Integration: KEYS_PASSPHRASE safety (docs/decisions.md#secure-defaults).

The operator of the issue runs `flask keys rotate` without KEYS_PASSPHRASE
against encrypted keys: it must be refused, as must `keys init`, the API's
rotation and the schedule's; a key that cannot be read is never promoted; the
start-up log counts unreadable keys; `/readyz` fails when the current key
cannot be used. Real encrypted PEM files, real database, the CLI through
Flask's runner and the API through HTTP.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent, SigningKey
from app.signing import keys as keys_service
from app.timeutil import utcnow
from tests.conftest import Factory, basic_auth

PASSPHRASE = "the-right-passphrase"
ROTATE = "/api/v1/signing-keys/rotate"
HOUR = 3600


@pytest.fixture
def app_config(base_config, migrated, tmp_path) -> dict:
    """Keys encrypted with PASSPHRASE in a KEYS_DIR of this test's own."""
    return {**base_config, "KEYS_DIR": str(tmp_path / "keys"), "KEYS_PASSPHRASE": PASSPHRASE}


def statuses(app) -> dict[str, list[str]]:
    with app.app_context():
        db.session.remove()
        return {s: [k.kid for k in keys] for s, keys in keys_service.keys_by_status().items()}


def files(app) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(app.config["KEYS_DIR"]).glob("*.pem"))}


def rotation_events(app) -> int:
    with app.app_context():
        return db.session.scalar(
            sa.select(sa.func.count()).where(AuditEvent.action == "signing_key.rotated")
        )


def rewrite(app, kid: str, passphrase: str | None, was: str | None = PASSPHRASE) -> None:
    """Write key `kid` (encrypted with `was`) again, encrypted with `passphrase` (None:
    in plaintext, as the unguarded `keys rotate` of the issue wrote its new next key)."""
    keys_dir = app.config["KEYS_DIR"]
    private_key = keys_service.load_private_key(keys_dir, kid, was)
    keys_service.write_private_key(private_key, keys_dir, kid, passphrase)


def assert_unchanged(app, before_keys, before_files, before_events) -> None:
    assert statuses(app) == before_keys
    assert files(app) == before_files
    assert rotation_events(app) == before_events


def token(http, client_id: str, secret: str) -> str:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(client_id, secret),
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


# --- the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize("passphrase", [None, "a-wrong-passphrase"])
@pytest.mark.parametrize("command", ["rotate", "init"])
def test_cli_refuses_keys_the_passphrase_does_not_open(app, make_app, passphrase, command):
    before = statuses(app), files(app), rotation_events(app)
    other = make_app(KEYS_PASSPHRASE=passphrase)
    result = other.test_cli_runner().invoke(args=["keys", command])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: KEYS_PASSPHRASE does not open signing key")
    for kid in before[0]["current"] + before[0]["next"]:
        assert kid in lines[0]
    assert f"refusing to {'rotate' if command == 'rotate' else 'make keys'}" in lines[0]
    assert PASSPHRASE not in result.output
    # Nothing written: no plaintext next key, no promotion, no audit event.
    assert_unchanged(app, *before)


def test_cli_init_is_refused_even_with_a_key_missing(app, make_app):
    """`keys init` would make the missing next key in plaintext: refused."""
    with app.app_context():
        db.session.execute(sa.delete(SigningKey).where(SigningKey.status == "next"))
        db.session.commit()
    before = statuses(app), files(app), rotation_events(app)
    result = make_app(KEYS_PASSPHRASE=None).test_cli_runner().invoke(args=["keys", "init"])
    assert result.exit_code == 1
    assert_unchanged(app, *before)


def test_cli_rotate_with_the_passphrase_writes_an_encrypted_next_key(app, runner):
    before = statuses(app)
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    after = statuses(app)
    assert after["current"] == before["next"]
    new_next = Path(app.config["KEYS_DIR"]) / f"{after['next'][0]}.pem"
    assert new_next.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


# --- the API and the schedule ---------------------------------------------------------------


def test_api_rotation_on_an_instance_without_the_passphrase_is_503(app, factory, make_app):
    # The token comes from a well-configured instance; the misconfigured one
    # still verifies it (public JWKs come from the database) but cannot sign.
    headers = factory.admin_headers()
    before = statuses(app), files(app), rotation_events(app)
    other = make_app(KEYS_PASSPHRASE=None).test_client()
    response = other.post(ROTATE, headers=headers)
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "signing_keys_unreadable"
    assert body["status"] == 503
    assert "KEYS_PASSPHRASE does not open signing key" in body["detail"]
    assert_unchanged(app, *before)
    # The instance with the passphrase rotates as before.
    assert factory.http.post(ROTATE, headers=headers).status_code == 200


def backdate_all(app, seconds: float) -> None:
    with app.app_context():
        for key in db.session.scalars(sa.select(SigningKey)):
            key.created_at = utcnow() - timedelta(seconds=seconds)
            if key.activated_at is not None:
                key.activated_at = key.created_at
        db.session.commit()


def test_scheduled_rotation_without_the_passphrase_is_refused_and_logged(app, make_app, caplog):
    schedule = {"KEY_SCHEDULE_INTERVAL": 0, "KEY_ROTATION_INTERVAL": HOUR}
    other = make_app(KEYS_PASSPHRASE=None, **schedule)
    backdate_all(app, HOUR + 60)
    before = statuses(app), files(app), rotation_events(app)
    caplog.set_level(logging.ERROR, logger="app.signing.rotation")
    assert other.test_client().get("/healthz").status_code == 200
    assert_unchanged(app, *before)
    refused = [r for r in caplog.records if "scheduled rotation refused" in r.getMessage()]
    assert len(refused) == 1 and "KEYS_PASSPHRASE does not open" in refused[0].getMessage()
    # An instance with the passphrase, on the same schedule, rotates.
    assert make_app(**schedule).test_client().get("/healthz").status_code == 200
    assert statuses(app)["current"] == before[0]["next"]


# --- never promote a key that cannot be read ------------------------------------------------


def test_a_plaintext_next_key_is_never_promoted(app, client, factory, runner):
    """The issue's aftermath: a next key written in plaintext by an unguarded rotate."""
    next_kid = statuses(app)["next"][0]
    rewrite(app, next_kid, None)
    before = statuses(app), files(app), rotation_events(app)

    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 1
    assert next_kid in result.stderr
    assert client.post(ROTATE, headers=factory.admin_headers()).status_code == 503
    assert_unchanged(app, *before)

    # The way out: re-encrypt the file with the passphrase, and rotation works.
    rewrite(app, next_kid, PASSPHRASE, was=None)
    assert runner.invoke(args=["keys", "rotate"]).exit_code == 0
    assert statuses(app)["current"] == [next_kid]


def test_a_next_key_without_its_file_is_not_promoted_and_init_replaces_it(app, runner):
    before = statuses(app)
    lost = before["next"][0]
    (Path(app.config["KEYS_DIR"]) / f"{lost}.pem").unlink()

    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 1
    assert f"next signing key {lost} has no file in KEYS_DIR" in result.stderr
    assert statuses(app) == before

    # A next key has signed nothing: `keys init` replaces it; rotation then works.
    init = runner.invoke(args=["keys", "init"])
    assert init.exit_code == 0, init.output
    replaced = statuses(app)
    assert replaced["current"] == before["current"]
    assert len(replaced["next"]) == 1 and replaced["next"] != [lost]
    assert runner.invoke(args=["keys", "rotate"]).exit_code == 0
    assert statuses(app)["current"] == replaced["next"]


# --- start-up log and /readyz ---------------------------------------------------------------


def test_start_up_logs_how_many_keys_cannot_be_read(app, make_app, caplog):
    kids = statuses(app)
    caplog.set_level(logging.WARNING, logger="app.signing.keys")
    make_app()
    assert not [r for r in caplog.records if "cannot be used" in r.getMessage()]

    make_app(KEYS_PASSPHRASE=None)
    lines = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("2 of 2 signing keys cannot be used by this instance: 2 unreadable")
    for kid in kids["current"] + kids["next"]:
        assert kid in lines[0]
    assert PASSPHRASE not in lines[0]


def test_readyz_fails_when_the_current_key_cannot_be_used(app, runner, make_app):
    """Even while a retired key could still sign (the issue's 'ready' server)."""
    assert runner.invoke(args=["keys", "rotate"]).exit_code == 0
    keys = statuses(app)
    assert keys["retired"] and keys["current"]
    assert make_app().test_client().get("/readyz").status_code == 200

    # The promoted key of the issue: its file in plaintext, so an instance
    # with the passphrase cannot read it.
    rewrite(app, keys["current"][0], None)
    http = make_app().test_client()
    response = http.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": True, "signing_key": False}
    # Tokens are still signed, with the retired key the JWKS still publishes.
    cid, secret = Factory(app, http).client(scopes=["read"])
    assert jwt.get_unverified_header(token(http, cid, secret))["kid"] == keys["retired"][0]


def test_a_key_file_holding_another_key_cannot_be_used(app, runner, make_app):
    current = statuses(app)["current"][0]
    stranger = keys_service.generate_private_key("ES256")
    keys_service.write_private_key(stranger, app.config["KEYS_DIR"], current, PASSPHRASE)
    assert make_app().test_client().get("/readyz").status_code == 503
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 1 and current in result.stderr
