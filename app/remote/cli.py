"""The `ccserver` commands (docs/cli.md): one group per resource of docs/api.md §2.

Every command makes one or a few management API calls and prints the
answer. Options carry the API's field names in kebab-case, so that an
error the server reports on a field names the option the user typed.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from app.remote import declarative, output
from app.remote.config import is_loopback, load_settings
from app.remote.errors import CliError, UsageError
from app.remote.http import Api
from app.remote.jwk import public_jwk_from_file
from app.remote.options import (
    MAX_LIMIT,
    MAX_TTL,
    MIN_TTL,
    check_name,
    int_range,
    listed,
    optional_ttl,
    read_json_file,
    read_text,
    require_some,
    text_or_null,
)
from app.remote.output import Column, emit_list, emit_object, field, note

SECRET_NOTICE = "Store the secret now: it is shown this once and cannot be read back."


@dataclass
class State:
    """What one run shares: the chosen output format and, once needed, the API."""

    profile: str | None
    fmt: str
    environ: dict[str, str]
    _api: Api | None = dataclass_field(default=None, repr=False)

    def api(self, names: dict[str, str] | None = None) -> Api:
        if self._api is None:
            settings = load_settings(self.profile, self.environ)
            if settings.url.startswith("http://") and not is_loopback(settings.url):
                note(
                    f"warning: {settings.url} is plain http: the client secret and tokens"
                    " cross the network unencrypted"
                )
            self._api = Api(settings)
        if names is not None:
            self._api.name_field = _namer(names)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def _namer(names: dict[str, str]) -> Callable[[str], str]:
    def name(api_field: str) -> str:
        head = api_field.split(".")[0].split("[")[0]
        option = names.get(head)
        if option is None:
            return api_field
        # scopes[0].value -> "--scope #1 value": the n-th time the option was given.
        rest = re.sub(r"\[(\d+)\]", lambda m: f" #{int(m.group(1)) + 1}", api_field[len(head) :])
        return option + rest.replace(".", " ")

    return name


class Root(click.Group):
    """The top group: a CliError becomes one `error:` line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)


def _state() -> State:
    return click.get_current_context().find_object(State)  # type: ignore[return-value]


def _set_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_object(State).fmt = value  # type: ignore[union-attr]


def formatted(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--format` on a command as well as on `ccserver` itself."""
    return click.option(
        "--format",
        "-o",
        type=click.Choice(output.FORMATS),
        expose_value=False,
        is_eager=True,
        callback=_set_format,
        help="Output format (default: table, or the one given before the command).",
    )(command)


@click.group(cls=Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--profile",
    metavar="NAME",
    help="A profile of ~/.config/ccserver/config.yaml (default: the CCSERVER_* variables).",
)
@click.option(
    "--format",
    "-o",
    "fmt",
    type=click.Choice(output.FORMATS),
    default=None,
    help="Output format: table (default), json or yaml.",
)
@click.version_option(package_name="ccserver", prog_name="ccserver")
@click.pass_context
def cli(ctx: click.Context, profile: str | None, fmt: str | None) -> None:
    """Manage a ccserver authorization server through its management API.

    Credentials: CCSERVER_URL, CCSERVER_CLIENT_ID and CCSERVER_CLIENT_SECRET
    of an admin client, or --profile NAME. Exit codes: 0 ok, 1 the server
    refused (4xx), 2 usage error, 3 authentication failed, 4 server
    unreachable or failing (5xx).
    """
    state = State(profile, fmt or "table", dict(os.environ))
    ctx.obj = state
    ctx.call_on_close(state.close)


def main() -> None:
    """The console script."""
    cli(prog_name="ccserver")


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


# --- listing ---------------------------------------------------------------------------------


def paging(command: Callable[..., Any]) -> Callable[..., Any]:
    """--limit, --cursor and --all on a listing."""
    command = click.option("--all", "every", is_flag=True, help="Every page, not only the first.")(
        command
    )
    command = click.option("--cursor", help="next_cursor of the previous page.")(command)
    command = click.option(
        "--limit",
        callback=int_range(1, MAX_LIMIT),
        metavar="N",
        help=f"Items per page, 1 to {MAX_LIMIT} (default 20; with --all, 1000).",
    )(command)
    return command


def _list(
    path: str,
    params: dict[str, Any],
    columns: list[Column],
    *,
    limit: int | None,
    cursor: str | None,
    every: bool,
    names: dict[str, str],
) -> None:
    state = _state()
    api = state.api(names)
    params = {**params, "cursor": cursor, "limit": limit or (MAX_LIMIT if every else None)}
    items: list[dict[str, Any]] = []
    next_cursor = None
    for data, cursor_after in api.pages(path, params, every=every):
        items.extend(data)
        next_cursor = cursor_after
    emit_list(items, columns, state.fmt)
    if next_cursor and not every:
        note(f"more: --cursor {next_cursor} (or --all)")


LIST_NAMES = {"limit": "--limit", "cursor": "--cursor", "account_id": "--account"}


# --- clients -----------------------------------------------------------------------------------

CLIENT_OPTIONS = {
    "name": "--name",
    "friendly_name": "--friendly-name",
    "description": "--description",
    "tags": "--tag",
    "client_type": "--type",
    "owner": "--owner",
    "scopes": "--scope",
    "audiences": "--audience",
    "access_token_ttl": "--access-token-ttl",
    "allowed_auth_methods": "--auth-method",
    "dpop_bound_access_tokens": "--dpop-bound",
    "tls_client_certificate_bound_access_tokens": "--mtls-bound",
    "tls_client_auth_subject_dn": "--tls-subject-dn",
    "tls_client_auth_san_dns": "--tls-san-dns",
    "tls_client_auth_san_uri": "--tls-san-uri",
    "tls_client_auth_san_ip": "--tls-san-ip",
    "tls_client_auth_san_email": "--tls-san-email",
    "security_profile": "--security-profile",
    "account_id": "--account",
    "create_secret": "--no-secret",
    "locked": "lock/unlock",
    "disabled": "disable/enable",
    **LIST_NAMES,
}
_NULLABLE_TEXT = (
    "description",
    "owner",
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
    "security_profile",
)


def _status(item: dict[str, Any]) -> str:
    flags = [f for f in ("locked", "disabled") if item.get(f)]
    return ",".join(flags) or "active"


CLIENT_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("ACCOUNT", field("account_id")),
    ("TYPE", field("client_type")),
    ("STATUS", _status),
    ("SCOPES", field("scopes")),
    ("AUDIENCES", field("audiences")),
]


def client_fields(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a client's mutable fields (docs/api.md §2.1); "" clears a field."""
    specs: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--friendly-name", help="Display name (default: the name)."),
        click.option("--description", help='Free text ("" clears it).'),
        click.option(
            "--tag", "tags", multiple=True, help='A tag; repeat for more ("" alone: none).'
        ),
        click.option("--type", "client_type", type=click.Choice(["standard", "admin"])),
        click.option("--owner", help='Who answers for it, such as an email ("" clears it).'),
        click.option("--scope", "scopes", multiple=True, help="An allowed scope; repeat for more."),
        click.option(
            "--audience", "audiences", multiple=True, help="An allowed audience; repeat for more."
        ),
        click.option(
            "--access-token-ttl",
            callback=int_range(MIN_TTL, MAX_TTL),
            metavar="SECONDS",
            help=f"Token lifetime in seconds, {MIN_TTL} to {MAX_TTL}.",
        ),
        click.option(
            "--auth-method",
            "allowed_auth_methods",
            multiple=True,
            help='Only this token endpoint auth method; repeat for more ("" alone: any).',
        ),
        click.option("--dpop-bound/--no-dpop-bound", "dpop_bound_access_tokens", default=None),
        click.option(
            "--mtls-bound/--no-mtls-bound",
            "tls_client_certificate_bound_access_tokens",
            default=None,
        ),
        click.option("--tls-subject-dn", "tls_client_auth_subject_dn"),
        click.option("--tls-san-dns", "tls_client_auth_san_dns"),
        click.option("--tls-san-uri", "tls_client_auth_san_uri"),
        click.option("--tls-san-ip", "tls_client_auth_san_ip"),
        click.option("--tls-san-email", "tls_client_auth_san_email"),
        click.option("--security-profile", help='"fapi2", or "" for none.'),
    ]
    for spec in reversed(specs):
        command = spec(command)
    return command


def _client_body(options: dict[str, Any]) -> dict[str, Any]:
    """The API body of the client options given (only those)."""
    body: dict[str, Any] = {}
    for name, value in options.items():
        if name in ("tags", "scopes", "audiences"):
            values = listed(value)
            if values is not None:
                body[name] = values
        elif name == "allowed_auth_methods":
            values = listed(value)
            if values is not None:
                body[name] = values or None
        elif value is None:
            continue
        elif name in _NULLABLE_TEXT:
            body[name] = text_or_null(value)
        else:
            body[name] = value
    return body


@cli.group()
def clients() -> None:
    """Clients (docs/api.md §2.1)."""


@clients.command("list")
@paging
@click.option("--tag", help="Only clients with this tag.")
@click.option("--type", "client_type", type=click.Choice(["standard", "admin"]))
@click.option("--name-prefix", help="Only names starting with this.")
@click.option("--account", callback=check_name, help="One account's (system admins).")
@formatted
def clients_list(
    limit: int | None,
    cursor: str | None,
    every: bool,
    tag: str | None,
    client_type: str | None,
    name_prefix: str | None,
    account: str | None,
) -> None:
    """List clients, oldest first, a page at a time."""
    params = {
        "tag": tag,
        "client_type": client_type,
        "name_prefix": name_prefix,
        "account_id": account,
    }
    names = {
        **CLIENT_OPTIONS,
        "tag": "--tag",
        "name_prefix": "--name-prefix",
        "client_type": "--type",
    }
    _list(
        "/clients",
        params,
        CLIENT_COLUMNS,
        limit=limit,
        cursor=cursor,
        every=every,
        names=names,
    )


@clients.command("get")
@click.argument("client_id")
@formatted
def clients_get(client_id: str) -> None:
    """Show one client (never its secrets)."""
    state = _state()
    emit_object(state.api(CLIENT_OPTIONS).call("GET", _path("clients", client_id)), state.fmt)


@clients.command("create")
@click.option("--name", required=True, callback=check_name, help="Unique within the account.")
@client_fields
@click.option("--account", "account_id", callback=check_name, help="System admins: the account.")
@click.option(
    "--no-secret",
    "no_secret",
    is_flag=True,
    help="Make no secret (the client will use keys, certificates or federation).",
)
@formatted
def clients_create(name: str, account_id: str | None, no_secret: bool, **options: Any) -> None:
    """Create a client; its first secret is printed once."""
    state = _state()
    body = {"name": name, **_client_body(options)}
    if account_id:
        body["account_id"] = account_id
    if no_secret:
        body["create_secret"] = False
    created = state.api(CLIENT_OPTIONS).call("POST", "/clients", body=body)
    _show_with_secret(created, "client_secret", state.fmt)


def _show_with_secret(
    item: dict[str, Any], secret_field: str, fmt: str, *, also: tuple[str, ...] = ()
) -> None:
    """An object whose one-time secret is printed once: inside it (json, yaml) or after it.

    `also`: other forms of the same secret, left out of a table (JSON and YAML keep them).
    """
    if fmt != "table" or secret_field not in item:
        emit_object(item, fmt)
    else:
        shown = {k: v for k, v in item.items() if k != secret_field and k not in also}
        emit_object(shown, fmt)
        click.echo(f"\n{secret_field}: {item[secret_field]}")
    if secret_field in item:
        note(SECRET_NOTICE)


@clients.command("update")
@click.argument("client_id")
@click.option("--name", callback=check_name, help="A new name (unique within the account).")
@client_fields
@formatted
def clients_update(client_id: str, name: str | None, **options: Any) -> None:
    """Change the fields given; the others stay as they are."""
    state = _state()
    body = _client_body({"name": name, **options})
    require_some(body, "clients update")
    client = state.api(CLIENT_OPTIONS).call("PATCH", _path("clients", client_id), body=body)
    emit_object(client, state.fmt)


@clients.command("delete")
@click.argument("client_id")
def clients_delete(client_id: str) -> None:
    """Delete a client: its secrets, keys and tokens stop working."""
    _state().api(CLIENT_OPTIONS).call("DELETE", _path("clients", client_id))
    note(f"deleted client {client_id}")


def _flag_command(name: str, field_name: str, value: bool, doc: str) -> None:
    @clients.command(name, help=doc)
    @click.argument("client_id")
    @formatted
    def command(client_id: str) -> None:
        state = _state()
        path = _path("clients", client_id)
        client = state.api(CLIENT_OPTIONS).call("PATCH", path, body={field_name: value})
        emit_object(client, state.fmt)


_flag_command("lock", "locked", True, "Lock a client: no change or deletion until unlocked.")
_flag_command("unlock", "locked", False, "Unlock a client.")
_flag_command("disable", "disabled", True, "Disable a client: no tokens; its tokens stop working.")
_flag_command("enable", "disabled", False, "Enable a client (tokens from before stay revoked).")


@clients.command("revoke-tokens")
@click.argument("client_id")
def clients_revoke_tokens(client_id: str) -> None:
    """Revoke every token issued to the client until now."""
    _state().api(CLIENT_OPTIONS).call("POST", _path("clients", client_id, "revoke-tokens"))
    note(f"revoked every token issued to client {client_id} until now")


# --- secrets -----------------------------------------------------------------------------------

SECRET_OPTIONS = {
    "description": "--description",
    "expires_in": "--expires-in",
    "grace_period": "--grace-period",
}
SECRET_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("DESCRIPTION", field("description")),
    ("HINT", field("hint")),
    ("CREATED", field("created_at")),
    ("EXPIRES", field("expires_at")),
    ("LAST USED", field("last_used_at")),
]


@cli.group()
def secrets() -> None:
    """A client's secrets (docs/api.md §2.2); a new one is printed once."""


@secrets.command("list")
@click.argument("client_id")
@formatted
def secrets_list(client_id: str) -> None:
    """List a client's secrets: hint and times, never the secret."""
    state = _state()
    page = state.api(SECRET_OPTIONS).call("GET", _path("clients", client_id, "secrets"))
    emit_list(page["data"], SECRET_COLUMNS, state.fmt)


@secrets.command("add")
@click.argument("client_id")
@click.option("--description", help="What it is for.")
@click.option(
    "--expires-in",
    callback=int_range(60, 10**9),
    metavar="SECONDS",
    help="Seconds until it expires (default: never).",
)
@formatted
def secrets_add(client_id: str, description: str | None, expires_in: int | None) -> None:
    """Add a secret (at most 5 active); printed once."""
    state = _state()
    body: dict[str, Any] = {}
    if description is not None:
        body["description"] = description
    if expires_in is not None:
        body["expires_in"] = expires_in
    path = _path("clients", client_id, "secrets")
    _show_with_secret(state.api(SECRET_OPTIONS).call("POST", path, body=body), "secret", state.fmt)


@secrets.command("rotate")
@click.argument("client_id")
@click.option(
    "--grace-period",
    callback=int_range(0, 10**9),
    metavar="SECONDS",
    help="Seconds the other active secrets keep working (default 0: they stop now).",
)
@formatted
def secrets_rotate(client_id: str, grace_period: int | None) -> None:
    """Make a new secret; the others expire after the grace period. Printed once."""
    state = _state()
    api = state.api(SECRET_OPTIONS)
    body = {} if grace_period is None else {"grace_period": grace_period}
    path = _path("clients", client_id, "secrets")
    new = api.call("POST", path + "/rotate", body=body)
    _show_with_secret(new, "secret", state.fmt)
    until = datetime.now(UTC) + timedelta(seconds=grace_period or 0)
    when = until.isoformat(timespec="seconds").replace("+00:00", "Z")
    note(
        f"the client's other secrets work until {when}"
        if grace_period
        else "the client's other secrets stopped working now"
    )


@secrets.command("delete")
@click.argument("client_id")
@click.argument("secret_id")
def secrets_delete(client_id: str, secret_id: str) -> None:
    """Delete a secret: it stops working at once."""
    _state().api(SECRET_OPTIONS).call("DELETE", _path("clients", client_id, "secrets", secret_id))
    note(f"deleted secret {secret_id}")


# --- client keys -------------------------------------------------------------------------------

KEY_OPTIONS = {"public_jwk": "--file", "expires_in": "--expires-in"}
KEY_COLUMNS: list[Column] = [
    ("KID", field("kid")),
    ("ALG", field("alg")),
    ("CREATED", field("created_at")),
    ("EXPIRES", field("expires_at")),
    ("LAST USED", field("last_used_at")),
]


@cli.group()
def keys() -> None:
    """A client's public keys for private_key_jwt (docs/api.md §2.3)."""


@keys.command("list")
@click.argument("client_id")
@formatted
def keys_list(client_id: str) -> None:
    """List a client's keys."""
    state = _state()
    page = state.api(KEY_OPTIONS).call("GET", _path("clients", client_id, "keys"))
    emit_list(page["data"], KEY_COLUMNS, state.fmt)


@keys.command("add")
@click.argument("client_id")
@click.option("--file", "file", metavar="PATH", help="A PEM public key or certificate, or a JWK.")
@click.option(
    "--generate", is_flag=True, help="Let the server make an Ed25519 pair; private half shown once."
)
@click.option(
    "--private-key-out",
    metavar="PATH",
    help="With --generate: write the private key (PEM, mode 0600) here, not to stdout.",
)
@click.option(
    "--expires-in",
    callback=int_range(60, 10**9),
    metavar="SECONDS",
    help="Seconds until it expires.",
)
@formatted
def keys_add(
    client_id: str,
    file: str | None,
    generate: bool,
    private_key_out: str | None,
    expires_in: int | None,
) -> None:
    """Register a client's public key, or have the server generate a pair."""
    if bool(file) == generate:
        raise UsageError("--file / --generate: give exactly one of them")
    if private_key_out and not generate:
        raise UsageError("--private-key-out: only with --generate")
    out = Path(private_key_out) if private_key_out else None
    if out is not None and out.exists():
        raise UsageError(f"--private-key-out: {out} exists; it is never overwritten")
    body: dict[str, Any] = {}
    if file:
        body["public_jwk"] = public_jwk_from_file(file)
    if expires_in is not None:
        body["expires_in"] = expires_in
    state = _state()
    key = state.api(KEY_OPTIONS).call("POST", _path("clients", client_id, "keys"), body=body)
    if out is not None and "private_key_pem" in key:
        _write_private(out, key.pop("private_key_pem"))
        key.pop("private_jwk", None)
        note(f"private key written to {out} (mode 0600)")
    _show_with_secret(key, "private_key_pem", state.fmt, also=("private_jwk",))


def _write_private(path: Path, pem: str) -> None:
    # O_EXCL: never through a file or link someone else made first.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(pem)


@keys.command("delete")
@click.argument("client_id")
@click.argument("kid")
def keys_delete(client_id: str, kid: str) -> None:
    """Delete a key: assertions signed with it fail from now on."""
    _state().api(KEY_OPTIONS).call("DELETE", _path("clients", client_id, "keys", kid))
    note(f"deleted key {kid}")


# --- resource servers --------------------------------------------------------------------------

RS_OPTIONS = {
    "identifier": "--identifier",
    "name": "--name",
    "description": "--description",
    "scopes": "--scope",
    "access_token_ttl": "--access-token-ttl",
    "dpop_bound_access_tokens": "--dpop-bound",
    "tls_client_certificate_bound_access_tokens": "--mtls-bound",
    "shared": "--shared",
    "account_id": "--account",
    "name_prefix": "--name-prefix",
    **LIST_NAMES,
}
RS_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("IDENTIFIER", field("identifier")),
    ("NAME", field("name")),
    ("ACCOUNT", field("account_id")),
    ("SCOPES", lambda item: [s["value"] for s in item.get("scopes") or []]),
    ("TTL", field("access_token_ttl")),
    ("SHARED", field("shared")),
]


def rs_fields(command: Callable[..., Any]) -> Callable[..., Any]:
    specs: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--description", help='Free text ("" clears it).'),
        click.option(
            "--scope",
            "scopes",
            multiple=True,
            metavar="VALUE[=DESCRIPTION]",
            help='A scope it defines; repeat for more ("" alone: none, any scope).',
        ),
        click.option(
            "--access-token-ttl",
            callback=optional_ttl,
            metavar="SECONDS",
            help=f'Cap on token lifetime, {MIN_TTL} to {MAX_TTL} s ("none": no cap).',
        ),
        click.option("--dpop-bound/--no-dpop-bound", "dpop_bound_access_tokens", default=None),
        click.option(
            "--mtls-bound/--no-mtls-bound",
            "tls_client_certificate_bound_access_tokens",
            default=None,
        ),
        click.option(
            "--shared/--no-shared", default=None, help="System admins: usable by every account."
        ),
    ]
    for spec in reversed(specs):
        command = spec(command)
    return command


def _rs_body(options: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, value in options.items():
        if name == "scopes":
            values = listed(value)
            if values is not None:
                body["scopes"] = [_rs_scope(v) for v in values]
        elif value is None:
            continue
        elif name == "description":
            body[name] = text_or_null(value)
        elif name == "access_token_ttl":
            body[name] = None if value == "" else value
        else:
            body[name] = value
    return body


def _rs_scope(text: str) -> dict[str, Any]:
    value, sep, description = text.partition("=")
    return {"value": value, "description": description} if sep else {"value": value}


@cli.group("resource-servers")
def resource_servers() -> None:
    """Resource servers: the APIs tokens are for (docs/api.md §2.7)."""


@resource_servers.command("list")
@paging
@click.option("--name-prefix", help="Only names starting with this.")
@click.option("--account", callback=check_name, help="One account's (system admins).")
@formatted
def rs_list(
    limit: int | None,
    cursor: str | None,
    every: bool,
    name_prefix: str | None,
    account: str | None,
) -> None:
    """List resource servers (an account admin's list includes the shared ones)."""
    _list(
        "/resource-servers",
        {"name_prefix": name_prefix, "account_id": account},
        RS_COLUMNS,
        limit=limit,
        cursor=cursor,
        every=every,
        names=RS_OPTIONS,
    )


@resource_servers.command("get")
@click.argument("resource_server_id")
@formatted
def rs_get(resource_server_id: str) -> None:
    """Show one resource server."""
    state = _state()
    path = _path("resource-servers", resource_server_id)
    emit_object(state.api(RS_OPTIONS).call("GET", path), state.fmt)


@resource_servers.command("create")
@click.option("--identifier", required=True, help="Its audience (aud); immutable.")
@click.option("--name", required=True, help="A display name.")
@rs_fields
@click.option("--account", "account_id", callback=check_name, help="System admins: the account.")
@formatted
def rs_create(identifier: str, name: str, account_id: str | None, **options: Any) -> None:
    """Register a resource server."""
    state = _state()
    body = {"identifier": identifier, "name": name, **_rs_body(options)}
    if account_id:
        body["account_id"] = account_id
    emit_object(state.api(RS_OPTIONS).call("POST", "/resource-servers", body=body), state.fmt)


@resource_servers.command("update")
@click.argument("resource_server_id")
@click.option("--name", help="A new display name.")
@rs_fields
@formatted
def rs_update(resource_server_id: str, name: str | None, **options: Any) -> None:
    """Change the fields given (the identifier never changes)."""
    state = _state()
    body = _rs_body({"name": name, **options})
    require_some(body, "resource-servers update")
    path = _path("resource-servers", resource_server_id)
    emit_object(state.api(RS_OPTIONS).call("PATCH", path, body=body), state.fmt)


@resource_servers.command("delete")
@click.argument("resource_server_id")
def rs_delete(resource_server_id: str) -> None:
    """Delete a resource server that no client lists in its audiences."""
    _state().api(RS_OPTIONS).call("DELETE", _path("resource-servers", resource_server_id))
    note(f"deleted resource server {resource_server_id}")


# --- federated credentials ---------------------------------------------------------------------

FED_OPTIONS = {
    "name": "--name",
    "issuer": "--issuer",
    "subject": "--subject",
    "subject_pattern": "--subject-pattern",
    "claims": "--claim",
    "audience": "--audience",
    "jwks_uri": "--jwks-uri",
    "jwks": "--jwks-file",
    "max_token_age": "--max-token-age",
    "single_use": "--single-use",
    "assertion": "--assertion-file",
}
FED_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("ISSUER", field("issuer")),
    ("SUBJECT", lambda item: item.get("subject") or item.get("subject_pattern")),
    ("AUDIENCE", field("audience")),
    ("SINGLE USE", field("single_use")),
    ("LAST USED", field("last_used_at")),
]


@cli.group("federated-credentials")
def federated_credentials() -> None:
    """A client's federated credentials: workload identity (docs/api.md §2.8)."""


@federated_credentials.command("list")
@click.argument("client_id")
@formatted
def fed_list(client_id: str) -> None:
    """List a client's federated credentials."""
    state = _state()
    page = state.api(FED_OPTIONS).call("GET", _path("clients", client_id, "federated-credentials"))
    emit_list(page["data"], FED_COLUMNS, state.fmt)


def _claims(values: tuple[str, ...]) -> dict[str, Any] | None:
    """--claim NAME=VALUE, repeated; one name given twice allows either value."""
    claims: dict[str, Any] = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UsageError(f"--claim: must be NAME=VALUE (got {text!r})")
        if name in claims:
            previous = claims[name]
            claims[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            claims[name] = value
    return claims or None


@federated_credentials.command("add")
@click.argument("client_id")
@click.option("--name", required=True, callback=check_name, help="Unique within the client.")
@click.option("--issuer", required=True, help="The issuer (iss) of the workload's tokens.")
@click.option("--subject", help="The exact subject (sub).")
@click.option("--subject-pattern", help="Or a subject pattern: * any run, ? one character.")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE", help="A claim to require.")
@click.option("--audience", help="The audience the tokens must hold (default: this server).")
@click.option("--jwks-uri", help="Where the issuer's keys are (default: OIDC discovery).")
@click.option("--jwks-file", metavar="PATH", help="Or the issuer's public keys, a JWKS file.")
@click.option(
    "--max-token-age",
    callback=int_range(60, 86400),
    metavar="SECONDS",
    help="Oldest iat accepted, in seconds.",
)
@click.option("--single-use", is_flag=True, default=None, help="Accept each token (jti) once.")
@formatted
def fed_add(client_id: str, jwks_file: str | None, claims: tuple[str, ...], **options: Any) -> None:
    """Add a federated credential to a client."""
    if (options["subject"] is None) == (options["subject_pattern"] is None):
        raise UsageError("--subject / --subject-pattern: give exactly one of them")
    body = {k: v for k, v in options.items() if v is not None}
    claim_map = _claims(claims)
    if claim_map:
        body["claims"] = claim_map
    if jwks_file:
        body["jwks"] = read_json_file(jwks_file, "--jwks-file")
    state = _state()
    path = _path("clients", client_id, "federated-credentials")
    emit_object(state.api(FED_OPTIONS).call("POST", path, body=body), state.fmt)


@federated_credentials.command("delete")
@click.argument("client_id")
@click.argument("credential_id")
def fed_delete(client_id: str, credential_id: str) -> None:
    """Delete a federated credential: it stops working at once."""
    path = _path("clients", client_id, "federated-credentials", credential_id)
    _state().api(FED_OPTIONS).call("DELETE", path)
    note(f"deleted federated credential {credential_id}")


RESULT_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("MATCHED", field("matched")),
    ("FAILED CHECK", field("failed_check")),
    ("DETAIL", field("detail")),
]


@federated_credentials.command("test")
@click.argument("client_id")
@click.option(
    "--assertion-file",
    required=True,
    metavar="PATH",
    help="The workload's JWT (- for stdin); never an argument, which other users could see.",
)
@formatted
def fed_test(client_id: str, assertion_file: str) -> None:
    """Dry run: would this workload token authenticate as the client? Changes nothing."""
    assertion = read_text(assertion_file, "--assertion-file").strip()
    if not assertion:
        raise UsageError(f"--assertion-file: {assertion_file} is empty")
    state = _state()
    path = _path("clients", client_id, "federated-credentials", "test")
    answer = state.api(FED_OPTIONS).call("POST", path, body={"assertion": assertion})
    if state.fmt != "table":
        click.echo(output.dump(answer, state.fmt))
        return
    if answer.get("matched"):
        click.echo(f"matched: credential {answer.get('credential_name')}")
    else:
        click.echo(f"not matched{': ' + answer['error'] if answer.get('error') else ''}")
    if answer.get("results"):
        click.echo()
        emit_list(answer["results"], RESULT_COLUMNS, "table")


# --- signing keys ------------------------------------------------------------------------------

SIGNING_COLUMNS: list[Column] = [
    ("KID", field("kid")),
    ("ALG", field("alg")),
    ("STATUS", field("status")),
    ("CREATED", field("created_at")),
    ("ACTIVATED", field("activated_at")),
    ("RETIRES", field("retires_at")),
]


@cli.group("signing-keys")
def signing_keys() -> None:
    """The server's signing keys (docs/api.md §2.4; system admins with keys:*)."""


@signing_keys.command("list")
@formatted
def signing_list() -> None:
    """List the signing keys: next, current and retired; never private material."""
    state = _state()
    emit_list(state.api({}).call("GET", "/signing-keys")["data"], SIGNING_COLUMNS, state.fmt)


@signing_keys.command("rotate")
@formatted
def signing_rotate() -> None:
    """Promote the next key to current, retire the current one, make a new next."""
    state = _state()
    keys_after = state.api({}).call("POST", "/signing-keys/rotate", body={})
    emit_list(keys_after["data"], SIGNING_COLUMNS, state.fmt)


# --- audit -------------------------------------------------------------------------------------

AUDIT_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("AT", field("at")),
    ("ACTION", field("action")),
    ("ACTOR", field("actor")),
    ("TARGET", field("target")),
    ("ACCOUNT", field("account_id")),
]


@cli.group()
def audit() -> None:
    """The audit log (docs/api.md §2.5)."""


@audit.command("list")
@paging
@click.option("--account", callback=check_name, help="One account's (system admins).")
@formatted
def audit_list(limit: int | None, cursor: str | None, every: bool, account: str | None) -> None:
    """List audit events, newest first, a page at a time."""
    _list(
        "/audit-events",
        {"account_id": account},
        AUDIT_COLUMNS,
        limit=limit,
        cursor=cursor,
        every=every,
        names=LIST_NAMES,
    )


# --- declarative configuration -----------------------------------------------------------------


@cli.command("apply")
@click.option(
    "-f", "--file", "file", required=True, metavar="FILE", help="The apply file (- for stdin)."
)
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
def apply_file(file: str, dry_run: bool) -> None:
    """Make the server's clients, resource servers and federated credentials match FILE.

    Prints the plan (one line per object to create, update, replace or
    delete, or `no changes`), then carries it out unless --dry-run.
    """
    source = "stdin" if file == "-" else file
    desired = declarative.load(read_text(file, "--file"), source)
    api = _state().api({})
    plan = declarative.Planner(api, desired).make()
    if not plan.changes:
        click.echo("no changes")
        return
    for change in plan.changes:
        click.echo(change.line())
    counts = {a: sum(c.action == a for c in plan.changes) for a in declarative.SYMBOL}
    click.echo(
        "plan: "
        + ", ".join(f"{n} to {a}" for a, n in counts.items() if n)
        + (" (dry run: nothing changed)" if dry_run else "")
    )
    if dry_run:
        return
    try:
        plan.run()
    finally:
        # What was done, and any new secret, even when a later step failed.
        for line in plan.report:
            click.echo(line)
    if any(line.lstrip().startswith("client_secret:") for line in plan.report):
        note(SECRET_NOTICE)


@cli.command("export")
@click.option("--account", callback=check_name, help="System admins: the account to export.")
def export_file(account: str | None) -> None:
    """Print the account's clients, resource servers and federated credentials as an apply file.

    Never a secret. `ccserver export > f.yaml; ccserver apply -f f.yaml --dry-run`
    prints `no changes`.
    """
    click.echo(declarative.export(_state().api({}), account), nl=False)
