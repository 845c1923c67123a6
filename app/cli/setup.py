"""Operator commands: `flask keys ...` and `flask admin ...`. Each is safe to run twice."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import click
import sqlalchemy as sa
from flask import Blueprint, current_app

from app.clients.service import (
    ACCOUNT_MANAGEMENT_SCOPES,
    MANAGEMENT_SCOPES,
    SYSTEM_ACCOUNT,
    create_client,
)
from app.errors import Conflict
from app.extensions import db
from app.models import Client
from app.runtime import runtime
from app.signing import keys as keys_service
from app.startup import keys_dir_errors
from app.timeutil import isoformat

keys_cli = Blueprint("keys_cli", __name__, cli_group="keys")
admin_cli = Blueprint("admin_cli", __name__, cli_group="admin")

CLI_ACTOR = "cli"


def _keys_args() -> tuple[str, str, str | None]:
    cfg = current_app.config
    return cfg["SIGNING_ALG"], cfg["KEYS_DIR"], cfg["KEYS_PASSPHRASE"]


def _refused(error: keys_service.SigningKeysUnreadable) -> NoReturn:
    db.session.rollback()
    click.echo(f"error: {error.detail}", err=True)
    sys.exit(1)


@keys_cli.cli.command("init")
def keys_init() -> None:
    """Make the first current and next signing keys if there are none."""
    alg, keys_dir, passphrase = _keys_args()
    try:
        with keys_dir_errors(keys_dir):
            made = keys_service.init_keys(alg, keys_dir, passphrase)
    except keys_service.SigningKeysUnreadable as refused:
        _refused(refused)
    db.session.commit()
    for key in made:
        click.echo(f"created {key.status} key {key.kid} ({key.alg})")
    if not made:
        # Safe to run twice (the contract): say what is there, exit 0.
        click.echo("signing keys already initialised; nothing made:")
    kept = {key.kid for key in made}
    for status in ("current", "next"):
        for key in keys_service.keys_by_status()[status]:
            if key.kid not in kept:
                click.echo(
                    f"  {status} key {key.kid} ({key.alg}), created {isoformat(key.created_at)}"
                )
    if not made:
        click.echo(f"  KEYS_DIR: {keys_dir}")


@keys_cli.cli.command("rotate")
def keys_rotate() -> None:
    """Promote the next key to current, retire the current one, make a new next."""
    try:
        promoted = keys_service.rotate_keys(*_keys_args(), actor=CLI_ACTOR)
    except keys_service.SigningKeysUnreadable as refused:
        _refused(refused)
    db.session.commit()
    runtime().keyring.invalidate()
    click.echo(f"current key is now {promoted.kid}")


@keys_cli.cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(as_json: bool) -> None:
    """List signing keys with their status (never private material)."""
    rows = []
    for status, keys in keys_service.keys_by_status().items():
        for key in keys:
            rows.append(
                {
                    "kid": key.kid,
                    "alg": key.alg,
                    "status": status,
                    "created_at": isoformat(key.created_at),
                    "activated_at": isoformat(key.activated_at),
                    "retires_at": isoformat(key.retires_at),
                }
            )
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no signing keys; run `flask keys init`")
    for row in rows:
        click.echo(
            f"{row['kid']}  {row['alg']:6}  {row['status']:8}  created {row['created_at']}"
            f"  retires {row['retires_at'] or '-'}"
        )


def _create_admin(account: str, name: str) -> tuple[str, str]:
    scopes = MANAGEMENT_SCOPES if account == SYSTEM_ACCOUNT else ACCOUNT_MANAGEMENT_SCOPES
    client, _secret, plaintext = create_client(
        account,
        {
            "name": name,
            "friendly_name": name,
            "client_type": "admin",
            "scopes": list(scopes),
            "audiences": [current_app.config["MANAGEMENT_AUDIENCE"]],
        },
        CLI_ACTOR,
        runtime().pepper,
    )
    db.session.commit()
    assert plaintext is not None  # create_secret was not turned off
    return client.id, plaintext


def bootstrap_admin() -> tuple[str, str]:
    """Make the first system admin (`bootstrap-admin`): its id and secret, shown once."""
    return _create_admin(SYSTEM_ACCOUNT, "bootstrap-admin")


@admin_cli.cli.command("create")
@click.option("--account", required=True, help="Account the admin client belongs to.")
@click.option("--name", required=True, help="Client name, unique within the account.")
@click.option("--json", "as_json", is_flag=True, help='Print {"client_id", "client_secret"} only.')
def admin_create(account: str, name: str, as_json: bool) -> None:
    """Make an admin client with every scope its account may hold."""
    from app.api.schemas import validate_account_id, validate_name

    problems = validate_name(name) + validate_account_id(account)
    if problems:
        raise click.UsageError("; ".join(p["message"] for p in problems))
    try:
        client_id, secret = _create_admin(account, name)
    except Conflict as exc:
        db.session.rollback()
        click.echo(f"error: {exc.detail} Its secret was shown only once.", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"client_id": client_id, "client_secret": secret}))
        return
    click.echo(f"client_id:     {client_id}")
    click.echo(f"client_secret: {secret}")
    click.echo("The secret is shown only this once; store it now.")


@admin_cli.cli.command("bootstrap")
def admin_bootstrap() -> None:
    """Create the first system admin and print its secret, only if none exists."""
    existing = db.session.scalar(
        sa.select(Client.id)
        .where(Client.account_id == SYSTEM_ACCOUNT, Client.client_type == "admin")
        .limit(1)
    )
    if existing:
        click.echo(f"A system admin client exists already ({existing}); nothing to do.")
        return
    client_id, secret = bootstrap_admin()
    click.echo("Bootstrap admin created (system account). Store the secret now:")
    click.echo(f"  client_id:     {client_id}")
    click.echo(f"  client_secret: {secret}")
    click.echo("It will not be shown again.")
