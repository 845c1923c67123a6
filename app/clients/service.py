"""Client and secret operations. Services add and flush; callers commit."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError

from app.audit import events as audit

# Re-exported: defined with the rules that use it.
from app.clients.policy import MANAGEMENT_SCOPES as MANAGEMENT_SCOPES
from app.clients.policy import ensure_may_manage
from app.clients.records import mark_client_changed
from app.clients.resource_servers import check_audiences
from app.clients.secrets import add_secret
from app.errors import BadRequest, Conflict, NotFound, ValidationError
from app.extensions import db
from app.models import Client, ClientKey, ClientSecret, FederatedCredential
from app.models.client import MAX_TTL, TLS_CLIENT_AUTH_FIELDS
from app.models.types import new_id
from app.protocol import FAPI2, FAPI2_AUTH_METHODS, FAPI2_SIGNING_ALGS
from app.runtime import runtime
from app.timeutil import utcnow

SYSTEM_ACCOUNT = "system"
ACCOUNT_MANAGEMENT_SCOPES = ("clients:read", "clients:write", "audit:read")
#: Listing cursors name their listing, so one listing's cursor is refused by another.
CLIENT_LISTING = "clients"
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CLIENT_DEFAULTS: dict[str, Any] = {
    "description": None,
    "tags": [],
    "client_type": "standard",
    "owner": None,
    "scopes": [],
    "audiences": [],
    "access_token_ttl": 3600,
    "locked": False,
    "disabled": False,
    "allowed_auth_methods": None,
    "dpop_bound_access_tokens": False,
    "tls_client_certificate_bound_access_tokens": False,
    "tls_client_auth_subject_dn": None,
    "tls_client_auth_san_dns": None,
    "tls_client_auth_san_uri": None,
    "tls_client_auth_san_ip": None,
    "tls_client_auth_san_email": None,
    "security_profile": None,
}


def get_client(account_id: str | None, client_id: str, *, for_update: bool = False) -> Client:
    """The client with this id in the account (None: any account, system admins).

    :raise NotFound: when it does not exist or belongs to another account, so
        the two cannot be told apart.
    """
    if not client_id or len(client_id) > 64 or "\x00" in client_id:
        # Never a stored id; PostgreSQL would refuse NUL outright.
        raise NotFound("No such client.", code="client_not_found")
    query = sa.select(Client).where(Client.id == client_id)
    if account_id is not None:
        query = query.where(Client.account_id == account_id)
    if for_update:
        query = query.with_for_update()
    client = db.session.scalar(query)
    if client is None:
        raise NotFound("No such client.", code="client_not_found")
    return client


def create_client(
    account_id: str, fields: dict[str, Any], actor: str, pepper: bytes
) -> tuple[Client, ClientSecret | None, str | None]:
    """Create a client with its first secret; returns (client, secret row, plaintext).

    With `create_secret: False` among the fields the client gets no secret
    (it will use keys instead) and the secret and plaintext are None.

    :raise Conflict: name_taken when the account already has that name
        (enforced by the unique constraint, so concurrent creates cannot both win).
    """
    values = {**CLIENT_DEFAULTS, **fields}
    wants_secret = values.pop("create_secret", True)
    values.setdefault("friendly_name", values["name"])
    check_audiences(account_id, values["client_type"], values["audiences"])
    check_tls_client_auth(values)
    check_security_profile(values)
    now = utcnow()
    client = Client(
        id=new_id(),
        account_id=account_id,
        created_at=now,
        updated_at=now,
        version=1,
        **values,
    )
    try:
        with db.session.begin_nested():
            db.session.add(client)
            db.session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"A client named {values['name']!r} already exists in this account.",
            code="name_taken",
        ) from exc
    secret: ClientSecret | None = None
    plaintext: str | None = None
    if wants_secret:
        secret, plaintext = add_secret(client, pepper, actor, description=None, audited=False)
    audit.record(actor, "client.created", client.id, account_id)
    return client, secret, plaintext


def update_client(client: Client, values: dict[str, Any], actor: str) -> bool:
    """Apply column values to a client; returns whether anything changed.

    Bumps `version` (the ETag) and `updated_at` only on a real change. The
    caller holds the row lock (get_client(for_update=True)) and has checked
    `locked` and any If-Match.

    :raise Conflict: name_taken when a rename collides (the unique constraint decides).
    """
    changes = {k: v for k, v in values.items() if getattr(client, k) != v}
    if not changes:
        return False
    if {"security_profile", "allowed_auth_methods"} & changes.keys():
        check_security_profile(
            {
                "security_profile": changes.get("security_profile", client.security_profile),
                "allowed_auth_methods": changes.get(
                    "allowed_auth_methods", client.allowed_auth_methods
                ),
            }
        )
    if any(field in changes for field in TLS_CLIENT_AUTH_FIELDS):
        check_tls_client_auth(
            {**{f: getattr(client, f) for f in TLS_CLIENT_AUTH_FIELDS}, **changes}
        )
    if "audiences" in changes or "client_type" in changes:
        check_audiences(
            client.account_id,
            changes.get("client_type", client.client_type),
            changes.get("audiences", client.audiences),
        )
    if changes.get("disabled") is True:
        # Enabling the client again must not bring its old tokens back. Before
        # this session writes: on SQLite the store's own write would wait for it.
        _cut_off(client)
    try:
        with db.session.begin_nested():
            for field, value in changes.items():
                setattr(client, field, value)
            client.version = (client.version or 0) + 1
            client.updated_at = utcnow()
            db.session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"A client named {changes.get('name')!r} already exists in this account.",
            code="name_taken",
        ) from exc
    mark_client_changed(client.id)
    audit.record(actor, "client.updated", client.id, client.account_id)
    return True


def check_tls_client_auth(values: dict[str, Any]) -> None:
    """At most one of the certificate fields of tls_client_auth (RFC 8705 §2.1.2).

    :raise ValidationError: 400 naming every field set after the first.
    """
    given = [f for f in TLS_CLIENT_AUTH_FIELDS if values.get(f) is not None]
    if len(given) > 1:
        raise ValidationError(
            [{"field": f, "message": f"set only one of {', '.join(given)}"} for f in given[1:]]
        )


def check_security_profile(values: dict[str, Any]) -> None:
    """A FAPI 2.0 client is one this server can serve as the profile says (docs/api.md §2.1).

    :raise ValidationError: 400 on `security_profile` when this server signs
        tokens with an algorithm the profile forbids (RS256), and on
        `allowed_auth_methods` when they include a method it forbids.
    """
    if values.get("security_profile") != FAPI2:
        return
    errors = []
    signing_alg = current_app.config["SIGNING_ALG"]
    if signing_alg not in FAPI2_SIGNING_ALGS:
        errors.append(
            {
                "field": "security_profile",
                "message": f"this server signs tokens with {signing_alg}; FAPI 2.0 allows "
                + ", ".join(FAPI2_SIGNING_ALGS),
            }
        )
    methods = values.get("allowed_auth_methods")
    if methods is not None and not set(methods) <= set(FAPI2_AUTH_METHODS):
        errors.append(
            {
                "field": "allowed_auth_methods",
                "message": "FAPI 2.0 allows only " + ", ".join(FAPI2_AUTH_METHODS),
            }
        )
    if errors:
        raise ValidationError(errors)


def revoke_tokens(client: Client, actor: str, caller_scopes: Iterable[str]) -> None:
    """Cut off every token issued to the client until now (docs/api.md §2.1 `revoke-tokens`).

    Allowed on a locked client: it changes no setting, and `version` (the
    ETag) stays. Refused like any other change to an admin client stronger
    than the caller, whose management tokens this would end.

    :raise Forbidden: insufficient_privilege.
    """
    ensure_may_manage(caller_scopes, client)
    _cut_off(client)
    mark_client_changed(client.id)
    audit.record(actor, "client.tokens_revoked", client.id, client.account_id)


def _cut_off(client: Client) -> None:
    """Deny the client's tokens issued up to now, on every instance before the commit.

    Tokens carry their issue time to the millisecond in their `jti`
    (app.oauth.rfc9068.new_jti), so the cut-off is this millisecond's end:
    a token issued before the call is cut off and one issued after it is not,
    whichever instance issued or checks it.
    The shared store is written first: were the commit to fail, the tokens
    would be cut off without the column saying so, never the reverse. Call it
    before the session writes anything: on SQLite the store's write (on its
    own connection) would otherwise wait for the session's lock.
    """
    not_before = int(time.time() * 1000) + 1
    at = datetime.fromtimestamp(not_before / 1000, UTC)
    # Past this no token issued before the cut-off can still be unexpired.
    runtime().jti.cut_off(client.id, not_before, at + timedelta(seconds=MAX_TTL + 60))
    if client.tokens_valid_after is None or client.tokens_valid_after < at:
        client.tokens_valid_after = at


def delete_client(client: Client, actor: str) -> None:
    """Delete a client with its credentials; its tokens stop at once in this process.

    Children are deleted explicitly: SQLite enforces ON DELETE CASCADE only
    with a pragma, and the result must not depend on it.
    """
    # Its tokens become inactive on every instance at once, not only when
    # each instance's cached record expires. First: see _cut_off.
    _cut_off(client)
    db.session.execute(sa.delete(ClientSecret).where(ClientSecret.client_id == client.id))
    db.session.execute(sa.delete(ClientKey).where(ClientKey.client_id == client.id))
    db.session.execute(
        sa.delete(FederatedCredential).where(FederatedCredential.client_id == client.id)
    )
    db.session.delete(client)
    db.session.flush()
    mark_client_changed(client.id)
    audit.record(actor, "client.deleted", client.id, client.account_id)


def list_clients(
    account_id: str | None,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = 20,
    tag: str | None = None,
    client_type: str | None = None,
    name_prefix: str | None = None,
) -> list[Client]:
    """Clients in (created_at, id) order after a keyset position (None: every account)."""
    query = _client_query(account_id, tag, client_type, name_prefix)
    if after is not None:
        # A row comparison, which the (created_at, id) index can seek to; the
        # equivalent OR form makes PostgreSQL scan every earlier row.
        query = query.where(sa.tuple_(Client.created_at, Client.id) > after)
    query = query.order_by(Client.created_at, Client.id).limit(limit)
    return list(db.session.scalars(query))


def _client_query(
    account_id: str | None, tag: str | None, client_type: str | None, name_prefix: str | None
) -> sa.Select[Client]:
    """The clients a listing's filters select, in either paging direction."""
    query = sa.select(Client)
    if account_id is not None:
        query = query.where(Client.account_id == account_id)
    if client_type is not None:
        query = query.where(Client.client_type == client_type)
    if name_prefix is not None:
        # autoescape: "_" is a legal name character and a LIKE wildcard.
        query = query.where(Client.name.startswith(name_prefix, autoescape=True))
    if tag is not None:
        query = query.where(_has_tag(tag))
    return query


def list_clients_before(
    account_id: str | None,
    before: tuple[datetime, str],
    *,
    limit: int,
    tag: str | None = None,
    client_type: str | None = None,
    name_prefix: str | None = None,
) -> list[Client]:
    """The clients just before a keyset position, nearest first (for a "previous page").

    Same filters as list_clients, walking the (created_at, id) order backwards.
    """
    query = _client_query(account_id, tag, client_type, name_prefix)
    query = query.where(sa.tuple_(Client.created_at, Client.id) < before)
    query = query.order_by(Client.created_at.desc(), Client.id.desc()).limit(limit)
    return list(db.session.scalars(query))


@dataclass(frozen=True)
class CredentialSummary:
    """A client's secrets and keys at a glance, for listings."""

    #: The latest use of any of its secrets or keys; None: never used.
    last_used_at: datetime | None
    #: How many of its secrets and keys still work.
    active: int
    #: When the last of them stops working; None when one never expires (or none works).
    expires_at: datetime | None


def credential_summaries(client_ids: Iterable[str]) -> dict[str, CredentialSummary]:
    """Last use and expiry of each client's secrets and keys, in two grouped queries."""
    ids = list(client_ids)
    now = utcnow()
    found: dict[str, list[Any]] = {cid: [None, 0, 0, None] for cid in ids}
    if not ids:
        return {}
    for model in (ClientSecret, ClientKey):
        active = sa.or_(model.expires_at.is_(None), model.expires_at > now)
        rows = db.session.execute(
            sa.select(
                model.client_id,
                sa.func.max(model.last_used_at),
                sa.func.count().filter(active),
                sa.func.count().filter(active, model.expires_at.is_(None)),
                sa.func.max(model.expires_at).filter(active),
            )
            .where(model.client_id.in_(ids))
            .group_by(model.client_id)
        )
        for cid, last_used, count, forever, latest in rows:
            entry = found[cid]
            if last_used is not None and (entry[0] is None or last_used > entry[0]):
                entry[0] = last_used
            entry[1] += count
            entry[2] += forever
            if latest is not None and (entry[3] is None or latest > entry[3]):
                entry[3] = latest
    return {
        cid: CredentialSummary(
            last_used_at=_aware(last_used),
            active=active,
            expires_at=None if forever or not active else _aware(latest),
        )
        for cid, (last_used, active, forever, latest) in found.items()
    }


def _aware(value: datetime | None) -> datetime | None:
    # Aggregates bypass the UTCDateTime column type: SQLite gives naive (or text) values.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def client_position(client: Client) -> list[Any]:
    """The keyset position of a client in the listing order, as JSON values for a cursor."""
    micros = (client.created_at.astimezone(UTC) - _EPOCH) // _MICROSECOND
    return [micros, client.id]


def position_after(position: list[Any]) -> tuple[datetime, str]:
    """The `after` argument of list_clients for a position from client_position.

    :raise BadRequest: invalid_cursor when the position is not one.
    """
    try:
        micros, client_id = position
        if not isinstance(micros, int) or not isinstance(client_id, str):
            raise TypeError
        created = _EPOCH + micros * _MICROSECOND
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest("The cursor is invalid.", code="invalid_cursor") from exc
    return created, client_id


def _has_tag(tag: str) -> sa.ColumnElement[bool] | sa.TextClause:
    if db.session.get_bind().dialect.name == "postgresql":
        # JSONB containment (@>), which a GIN index can serve.
        return sa.type_coerce(Client.tags, JSONB).contains([tag])
    return sa.text(
        "EXISTS (SELECT 1 FROM json_each(clients.tags) WHERE json_each.value = :tag)"
    ).bindparams(tag=tag)


@dataclass(frozen=True)
class AuditReference:
    """What an audit event's actor or target names, for showing it by name with a link."""

    #: client, secret, key, federated_credential, resource_server or signing_key.
    kind: str
    label: str
    #: The client the object belongs to (or is), when it is one of a client's.
    client_id: str | None = None
    object_id: str | None = None


def audit_references(refs: Iterable[str], account_id: str | None) -> dict[str, AuditReference]:
    """Names for the ids audit events hold, for the objects that still exist and are visible.

    `account_id` is the caller's listing filter (None: every account): an
    object of another account stays an id. Refs naming nothing are left out.
    """
    from app.models import ResourceServer, SigningKey

    plain = {r for r in refs if r and "/" not in r}
    nested = {tuple(r.split("/", 1)) for r in refs if r and "/" in r}
    client_ids = plain | {cid for cid, _ in nested}

    def visible(model: Any, query: sa.Select[Any]) -> sa.Select[Any]:
        return query if account_id is None else query.where(model.account_id == account_id)

    clients = {
        c.id: c
        for c in db.session.scalars(
            visible(Client, sa.select(Client).where(Client.id.in_(client_ids)))
        )
    }
    found: dict[str, AuditReference] = {
        cid: AuditReference("client", c.name, client_id=cid, object_id=cid)
        for cid, c in clients.items()
        if cid in plain
    }
    secrets = db.session.scalars(
        sa.select(ClientSecret).where(
            ClientSecret.id.in_(plain), ClientSecret.client_id.in_(clients)
        )
    )
    for secret in secrets:
        label = f"{clients[secret.client_id].name} · secret …{secret.hint}"
        found[secret.id] = AuditReference("secret", label, secret.client_id, secret.id)
    servers = db.session.scalars(
        visible(ResourceServer, sa.select(ResourceServer).where(ResourceServer.id.in_(plain)))
    )
    for rs in servers:
        found[rs.id] = AuditReference("resource_server", rs.name, object_id=rs.id)
    if account_id is None or account_id == SYSTEM_ACCOUNT:
        for key in db.session.scalars(sa.select(SigningKey).where(SigningKey.kid.in_(plain))):
            found[key.kid] = AuditReference("signing_key", f"signing key {key.kid}")
    subs = {sub for cid, sub in nested if cid in clients}
    owned = [(c, s) for c, s in nested if c in clients]
    credentials = {
        (f.client_id, f.id): f
        for f in db.session.scalars(
            sa.select(FederatedCredential).where(FederatedCredential.id.in_(subs))
        )
    }
    keys = {
        (k.client_id, k.kid)
        for k in db.session.scalars(sa.select(ClientKey).where(ClientKey.kid.in_(subs)))
    }
    for cid, sub in owned:
        name = clients[cid].name
        if (cid, sub) in credentials:
            label = f"{name} · federated credential {credentials[(cid, sub)].name}"
            found[f"{cid}/{sub}"] = AuditReference("federated_credential", label, cid, sub)
        elif (cid, sub) in keys:
            found[f"{cid}/{sub}"] = AuditReference("key", f"{name} · key {sub}", cid, sub)
    return found
