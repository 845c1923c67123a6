"""Starting to serve: `flask --app wsgi dev serve` (what `make run` runs) and serve.py's checks.

Both check the port before anything binds it (two servers on one port would
split the traffic between them), say what the server loaded (database kind,
signing keys) and where to go next (console, API docs, metadata), and make
sure an operator can get in: the development server makes the first admin
and prints its secret in the box, once; production only logs how to make one
(its lines go to a log store, where no secret belongs). docs/operations.md
("First run") shows both.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from dataclasses import dataclass

import click
import sqlalchemy as sa
from flask import Blueprint, Flask, current_app
from werkzeug.serving import WSGIRequestHandler, make_server

from app.clients.service import SYSTEM_ACCOUNT
from app.extensions import db
from app.models import Client
from app.settings import settings
from app.signing import keys as keys_service
from app.startup import keys_dir_errors

dev_cli = Blueprint("dev_cli", __name__, cli_group="dev")

log = logging.getLogger(__name__)

#: `make run` listens on loopback only; serve.py on HOST (default all interfaces).
DEV_HOST = "127.0.0.1"


class PortInUse(RuntimeError):
    """Another process listens on the port; the message is the one line to print."""


def check_port(host: str, port: int) -> None:
    """Refuse a port another process listens on, before this one binds it.

    SO_REUSEADDR lets a port in TIME_WAIT pass; without SO_REUSEPORT the bind
    fails when anyone listens there, even a server that set SO_REUSEPORT
    itself (as granian does, which is why a second one would start).

    :raise PortInUse: the address is taken (or cannot be bound at all).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUse(_port_problem(host, port, exc)) from None


def _port_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"PORT: {host}:{port} is already in use (another server, perhaps this one"
            f" started twice): stop it, or set PORT to a free port (PORT={port + 1})"
        )
    return f"PORT/HOST: cannot listen on {host}:{port} ({exc.strerror or exc}): choose another"


def endpoints(issuer: str) -> dict[str, str]:
    """Where a newcomer goes first, as URLs under ISSUER."""
    return {
        "console": f"{issuer}/console/",
        "API docs": f"{issuer}/docs",
        "metadata": f"{issuer}/.well-known/oauth-authorization-server",
        "JWKS": f"{issuer}/.well-known/jwks.json",
        "token endpoint": f"{issuer}/oauth2/token",
    }


@dataclass(frozen=True)
class Loaded:
    """What a starting server found: the database kind and its signing keys."""

    database: str
    current_keys: list[str]
    next_keys: list[str]

    def describe(self) -> str:
        """One line for the start-up log."""
        keys = (
            f"signing keys: current {', '.join(self.current_keys)}"
            f"; next {', '.join(self.next_keys) or '-'}"
            if self.current_keys
            else "no signing key"
        )
        return f"database: {self.database}; {keys}"


def database_kind(app: Flask) -> str:
    """The database as `kind host/name` (never user or password)."""
    url = sa.engine.make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite":
        return f"SQLite {url.database}"
    return f"PostgreSQL {url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def loaded(app: Flask) -> Loaded:
    """The database kind and signing keys a server starting now would use (app context)."""
    keys = keys_service.keys_by_status()
    return Loaded(
        database=database_kind(app),
        current_keys=[k.kid for k in keys["current"]],
        next_keys=[k.kid for k in keys["next"]],
    )


def report_loaded(app: Flask) -> Loaded:
    """Log what was loaded; a warning when there is no signing key to sign with."""
    found = loaded(app)
    log.info("starting: %s", found.describe())
    if not found.current_keys:
        log.warning(
            "no signing key: the token endpoint and /readyz answer 503 until"
            " `.venv/bin/flask --app wsgi keys init` makes one (KEYS_DIR=%s)",
            app.config["KEYS_DIR"],
        )
    return found


def existing_admin() -> str | None:
    """The id of a system admin client, if any exists."""
    return db.session.scalar(
        sa.select(Client.id)
        .where(Client.account_id == SYSTEM_ACCOUNT, Client.client_type == "admin")
        .order_by(Client.created_at)
        .limit(1)
    )


def box(lines: list[str]) -> str:
    """Lines framed so they stand out after the server's banner."""
    width = max(len(line) for line in lines)
    rule = "+" + "-" * (width + 2) + "+"
    return "\n".join([rule, *(f"| {line.ljust(width)} |" for line in lines), rule])


def welcome(issuer: str, admin: tuple[str, str | None]) -> list[str]:
    """The box's lines: where to go, and the admin to sign in with."""
    named = endpoints(issuer)
    width = max(len(name) for name in named)
    lines = ["ccserver is ready", ""]
    lines += [f"{name.ljust(width)}  {url}" for name, url in named.items()]
    lines.append("")
    if admin[1] is not None:
        lines += [
            "First run: a system admin client was made. Store its secret now,",
            "it is shown only this once:",
            f"  client_id:     {admin[0]}",
            f"  client_secret: {admin[1]}",
            "Sign in to the console with them, or get a token:",
            '  curl -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials \\',
            f"       {issuer}/oauth2/token",
        ]
    else:
        lines += [
            f"admin: a system admin client exists ({admin[0]});",
            "its secret was shown on the first run. Lost it? Make another:",
            "  .venv/bin/flask --app wsgi admin create --account system --name NAME",
        ]
    return lines


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without its request line: app.http.access_log writes one already."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


@dev_cli.cli.command("serve")
def dev_serve() -> None:
    """Serve on 127.0.0.1:PORT for development; the first run makes and shows an admin."""
    from app.cli.setup import bootstrap_admin

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    port = settings().port
    try:
        check_port(DEV_HOST, port)
    except PortInUse as busy:
        click.echo(f"error: {busy}", err=True)
        sys.exit(1)
    report_loaded(app)
    admin_id = existing_admin()
    admin: tuple[str, str | None] = bootstrap_admin() if admin_id is None else (admin_id, None)
    db.session.remove()
    try:
        server = make_server(
            DEV_HOST, port, app, threaded=True, request_handler=QuietRequestHandler
        )
    except OSError as exc:
        click.echo(f"error: {_port_problem(DEV_HOST, port, exc)}", err=True)
        sys.exit(1)
    click.echo(
        f" * Running on http://{DEV_HOST}:{port} (the development server;"
        " `make serve-prod` in production). Press CTRL+C to quit"
    )
    click.echo(box(welcome(settings().issuer, admin)))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def prepare_to_serve(app: Flask) -> None:
    """serve.py's steps before granian starts: migrate, make keys, report, point at the admin.

    :raise Exception: whatever a step raises; app.startup.explain names the setting.
    """
    from flask_migrate import upgrade

    from app.http import logs

    with app.app_context():
        try:
            upgrade()
            # Alembic may have configured logging for itself: the server's format again.
            logs.configure(app.config["LOG_FORMAT"])
            keys_dir = app.config["KEYS_DIR"]
            with keys_dir_errors(keys_dir):
                made = keys_service.init_keys(
                    app.config["SIGNING_ALG"], keys_dir, app.config["KEYS_PASSPHRASE"]
                )
            db.session.commit()
            for key in made:
                log.info("created %s signing key %s (%s)", key.status, key.kid, key.alg)
            report_loaded(app)
            if existing_admin() is None:
                # Production logs go to log stores: say how, never print a secret.
                log.warning(
                    "no admin client exists: make the first with `DATABASE_URL=… .venv/bin/flask"
                    " --app wsgi admin bootstrap` (it prints its id and secret once)"
                )
            issuer = app.config["ISSUER"]
            log.info(
                "serving %s",
                "; ".join(f"{name} {url}" for name, url in endpoints(issuer).items()),
            )
        finally:
            db.session.remove()
            # No connection of this process may be inherited by granian's workers.
            db.engine.dispose()
