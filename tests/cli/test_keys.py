"""Integration: `flask keys init | list | rotate` through Flask's CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent, SigningKey
from app.signing import keys as keys_service


def key_rows(app) -> dict[str, list[str]]:
    with app.app_context():
        db.session.remove()
        return {s: [k.kid for k in keys] for s, keys in keys_service.keys_by_status().items()}


def drop_keys(app) -> None:
    with app.app_context():
        db.session.execute(sa.delete(SigningKey))
        db.session.commit()


def test_init_makes_current_and_next_once(app, runner):
    drop_keys(app)
    result = runner.invoke(args=["keys", "init"])
    assert result.exit_code == 0, result.output
    rows = key_rows(app)
    assert len(rows["current"]) == 1 and len(rows["next"]) == 1 and rows["retired"] == []
    assert "current" in result.output and "next" in result.output
    for kid in rows["current"] + rows["next"]:
        assert (Path(app.config["KEYS_DIR"]) / f"{kid}.pem").is_file()

    again = runner.invoke(args=["keys", "init"])
    assert again.exit_code == 0, again.output
    assert "already" in again.output
    assert key_rows(app) == rows


def test_init_fills_in_a_missing_next_key(app, runner):
    rows = key_rows(app)
    with app.app_context():
        db.session.execute(sa.delete(SigningKey).where(SigningKey.status == "next"))
        db.session.commit()
    result = runner.invoke(args=["keys", "init"])
    assert result.exit_code == 0, result.output
    after = key_rows(app)
    assert after["current"] == rows["current"]
    assert len(after["next"]) == 1 and after["next"] != rows["next"]


def test_list_shows_every_key_without_private_material(app, runner):
    rows = key_rows(app)
    result = runner.invoke(args=["keys", "list"])
    assert result.exit_code == 0, result.output
    for kid in rows["current"] + rows["next"]:
        assert kid in result.output
    assert "PRIVATE" not in result.output

    as_json = runner.invoke(args=["keys", "list", "--json"])
    assert as_json.exit_code == 0
    listed = json.loads(as_json.stdout)
    assert {r["kid"]: r["status"] for r in listed} == {
        rows["current"][0]: "current",
        rows["next"][0]: "next",
    }
    for row in listed:
        assert set(row) == {"kid", "alg", "status", "created_at", "activated_at", "retires_at"}
        assert row["created_at"].endswith("Z")


def test_list_without_keys(app, runner):
    drop_keys(app)
    result = runner.invoke(args=["keys", "list"])
    assert result.exit_code == 0
    assert "keys init" in result.output


def test_rotate_promotes_next_and_retires_current(app, runner, client):
    before = key_rows(app)
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    after = key_rows(app)
    assert after["current"] == before["next"]
    assert after["retired"] == before["current"]
    assert len(after["next"]) == 1 and after["next"] != before["next"]
    assert before["next"][0] in result.output

    kids = {k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
    assert kids == set(after["current"] + after["next"] + after["retired"])
    with app.app_context():
        actions = db.session.scalars(sa.select(AuditEvent.action)).all()
    assert "signing_key.rotated" in actions

    twice = runner.invoke(args=["keys", "rotate"])
    assert twice.exit_code == 0, twice.output
    assert key_rows(app)["retired"] == before["current"] + before["next"]
