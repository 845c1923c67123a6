"""Operator commands: `flask clients ...` and `flask secrets ...`.

Thin over the same services as the management API, audited with actor "cli";
each command commits once and is safe to run twice. The operator holds every
management scope (app.clients.policy.OPERATOR_SCOPES): whoever runs these
commands has the database and the keys already, so the privilege rule lets
them change any client, the bootstrap admin included (docs/decisions.md).
"""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import click
from flask import Blueprint, Flask

from app.api.schemas import client_to_dict
from app.clients import policy, service
from app.clients.secrets import DEFAULT_GRACE_PERIOD, MAX_GRACE_PERIOD
from app.errors import AppError
from app.extensions import db
from app.models import Client
from app.runtime import runtime
from app.timeutil import isoformat

clients_cli = Blueprint("clients_cli", __name__, cli_group="clients")
secrets_cli = Blueprint("secrets_cli", __name__, cli_group="secrets")

CLI_ACTOR = "cli"
_BATCH = 500


def _fail(error: AppError) -> NoReturn:
    db.session.rollback()
    click.echo(f"error: {error.detail}", err=True)
    sys.exit(1)


def _load(client_id: str, *, for_update: bool = False) -> Client:
    try:
        return service.get_client(None, client_id, for_update=for_update)
    except AppError as exc:
        _fail(exc)


@clients_cli.cli.command("list")
@click.option("--account", default=None, help="Only this account's clients.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def clients_list(account: str | None, as_json: bool) -> None:
    """List clients (every account unless --account), oldest first."""
    rows: list[Client] = []
    after = None
    while True:
        # Keyset batches, as the API pages: memory stays bounded per batch.
        batch = service.list_clients(account, after=after, limit=_BATCH)
        rows.extend(batch)
        if len(batch) < _BATCH:
            break
        after = (batch[-1].created_at, batch[-1].id)
    if as_json:
        click.echo(json.dumps([client_to_dict(c) for c in rows]))
        return
    if not rows:
        click.echo("no clients")
    for c in rows:
        flags = ",".join(f for f in ("locked", "disabled") if getattr(c, f)) or "-"
        click.echo(f"{c.id}  {c.account_id:16}  {c.name:32}  {c.client_type:8}  {flags}")


@clients_cli.cli.command("show")
@click.argument("client_id")
def clients_show(client_id: str) -> None:
    """Print one client as JSON (never its secrets)."""
    click.echo(json.dumps(client_to_dict(_load(client_id)), indent=2))


def _set_locked(client_id: str, locked: bool) -> None:
    client = _load(client_id, for_update=True)
    try:
        policy.ensure_may_manage(policy.OPERATOR_SCOPES, client)
        changed = service.update_client(client, {"locked": locked}, CLI_ACTOR)
    except AppError as exc:
        _fail(exc)
    db.session.commit()
    state = "locked" if locked else "unlocked"
    click.echo(f"{client.id} {state}" if changed else f"{client.id} was already {state}")


@clients_cli.cli.command("lock")
@click.argument("client_id")
def clients_lock(client_id: str) -> None:
    """Lock a client: no change or deletion until it is unlocked."""
    _set_locked(client_id, True)


@clients_cli.cli.command("unlock")
@click.argument("client_id")
def clients_unlock(client_id: str) -> None:
    """Unlock a client."""
    _set_locked(client_id, False)


@clients_cli.cli.command("revoke-tokens")
@click.argument("client_id")
def clients_revoke_tokens(client_id: str) -> None:
    """Revoke every token issued to a client until now; new tokens work (docs/api.md §2.1)."""
    client = _load(client_id, for_update=True)
    try:
        service.revoke_tokens(client, CLI_ACTOR, policy.OPERATOR_SCOPES)
    except AppError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"{client.id}: every token issued until now is revoked")


@secrets_cli.cli.command("rotate")
@click.argument("client_id")
@click.option(
    "--grace-period",
    type=click.IntRange(0, MAX_GRACE_PERIOD),
    default=DEFAULT_GRACE_PERIOD,
    show_default=True,
    help="Seconds the client's other active secrets keep working.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def secrets_rotate(client_id: str, grace_period: int, as_json: bool) -> None:
    """Give a client a new secret (printed once); the others expire after the grace period."""
    from app.clients.secrets import old_secrets_end, rotate_secret

    client = _load(client_id, for_update=True)
    try:
        policy.ensure_may_manage(policy.OPERATOR_SCOPES, client)
        secret, plaintext = rotate_secret(client, grace_period, CLI_ACTOR, runtime().pepper)
    except AppError as exc:
        _fail(exc)
    db.session.commit()
    old_end = old_secrets_end(secret.created_at, grace_period)
    if as_json:
        body = {
            "client_id": client.id,
            "secret_id": secret.id,
            "secret": plaintext,
            "created_at": isoformat(secret.created_at),
            "old_secrets_expire_at": isoformat(old_end),
        }
        click.echo(json.dumps(body))
        return
    click.echo(f"client_id: {client.id}")
    click.echo(f"secret_id: {secret.id}")
    click.echo(f"secret:    {plaintext}")
    click.echo("The secret is shown only this once; store it now.")
    if grace_period == 0:
        click.echo("The old secret stopped working now.")
    else:
        click.echo(f"The old secret works until {old_end:%Y-%m-%d %H:%M:%S} UTC.")


def init_app(app: Flask) -> None:
    """Register the `clients` and `secrets` command groups."""
    app.register_blueprint(clients_cli)
    app.register_blueprint(secrets_cli)
