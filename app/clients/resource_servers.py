"""Resource servers (docs/api.md §2.7) and the rule tying client audiences to them.

Services add and flush; callers commit. `account_id=None` means the caller is
a system admin (every account).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError

from app.audit import events as audit
from app.clients.resource_server_records import mark_resource_server_changed
from app.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationError
from app.extensions import db
from app.models import Client, ResourceServer
from app.models.types import new_id
from app.timeutil import utcnow

#: Listing cursors name their listing, so one listing's cursor is refused by another.
RESOURCE_SERVER_LISTING = "resource-servers"
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

RESOURCE_SERVER_DEFAULTS: dict[str, Any] = {
    "description": None,
    "scopes": [],
    "access_token_ttl": None,
    "dpop_bound_access_tokens": False,
    "tls_client_certificate_bound_access_tokens": False,
    "shared": False,
}
MUTABLE_FIELDS = ("name", *RESOURCE_SERVER_DEFAULTS)


def built_in_audiences() -> tuple[str, str]:
    """The management and default audiences: never resource servers, never listed."""
    config = current_app.config
    return config["MANAGEMENT_AUDIENCE"], config["DEFAULT_AUDIENCE"]


def audience_errors(account_id: str, client_type: str, audiences: Iterable[str]) -> list[dict]:
    """Problems of a client's `audiences` (docs/api.md §2.1): the one place this rule lives.

    Each must be the identifier of a resource server of the client's own
    account or a shared one, or a built-in audience. `client_type` is here so
    that the admin-only rule for the management audience can join it (it is
    checked by app.api.schemas.management_audience_errors today).
    """
    wanted = [a for a in dict.fromkeys(audiences) if a not in built_in_audiences()]
    if not wanted:
        return []
    usable = set(
        db.session.scalars(
            sa.select(ResourceServer.identifier)
            .where(
                ResourceServer.identifier.in_(wanted),
                sa.or_(ResourceServer.account_id == account_id, ResourceServer.shared),
            )
            # FOR SHARE: a concurrent delete (which locks the row FOR UPDATE
            # and then looks for users) waits for this write, and sees it.
            .with_for_update(read=True)
        )
    )
    return [
        {"field": "audiences", "message": f"{a!r} is not a resource server of this account"}
        for a in wanted
        if a not in usable
    ]


def check_audiences(account_id: str, client_type: str, audiences: Iterable[str]) -> None:
    """:raise ValidationError: 400 on `audiences` (see audience_errors)."""
    errors = audience_errors(account_id, client_type, audiences)
    if errors:
        raise ValidationError(errors)


def _not_found() -> NotFound:
    return NotFound("No such resource server.", code="resource_server_not_found")


def get_resource_server(
    account_id: str | None, rs_id: str, *, write: bool = False, for_update: bool = False
) -> ResourceServer:
    """A resource server the caller may see: its account's, or a shared one.

    :raise NotFound: another account's (not shared) or none, indistinguishably.
    :raise Forbidden: `write` on a shared one by an account admin (it can see it).
    """
    if not rs_id or len(rs_id) > 64 or "\x00" in rs_id:
        raise _not_found()
    query = sa.select(ResourceServer).where(ResourceServer.id == rs_id)
    if account_id is not None:
        query = query.where(sa.or_(ResourceServer.account_id == account_id, ResourceServer.shared))
    if for_update:
        query = query.with_for_update()
    rs = db.session.scalar(query)
    if rs is None:
        raise _not_found()
    if write and account_id is not None and rs.account_id != account_id:
        raise Forbidden(
            "Shared resource servers are changed by system admins only.",
            code="shared_resource_server",
        )
    return rs


def _shared_errors(values: dict[str, Any], account_id: str, caller_is_system: bool) -> list:
    if not values.get("shared"):
        return []
    if not caller_is_system:
        return [{"field": "shared", "message": "only system admins may share a resource server"}]
    if account_id != "system":
        return [{"field": "shared", "message": "only system account resource servers are shared"}]
    return []


def create_resource_server(
    account_id: str, values: dict[str, Any], actor: str, *, caller_is_system: bool
) -> ResourceServer:
    """:raise ValidationError: `shared` not allowed. :raise Conflict: identifier_taken."""
    values = {**RESOURCE_SERVER_DEFAULTS, **values}
    errors = _shared_errors(values, account_id, caller_is_system)
    if values["identifier"] in built_in_audiences():
        errors.append({"field": "identifier", "message": "is a built-in audience"})
    if errors:
        raise ValidationError(errors)
    now = utcnow()
    rs = ResourceServer(
        id=new_id(), account_id=account_id, created_at=now, updated_at=now, version=1, **values
    )
    try:
        with db.session.begin_nested():
            db.session.add(rs)
            db.session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"A resource server with identifier {values['identifier']!r} already exists.",
            code="identifier_taken",
        ) from exc
    mark_resource_server_changed(rs.identifier)
    audit.record(actor, "resource_server.created", rs.id, account_id)
    return rs


def update_resource_server(
    rs: ResourceServer, values: dict[str, Any], actor: str, *, caller_is_system: bool
) -> bool:
    """Apply mutable values; returns whether anything changed.

    The caller holds the row lock (get_resource_server(for_update=True)).

    :raise BadRequest: identifier changed. :raise ValidationError: `shared`.
    :raise Conflict: resource_server_in_use when unsharing one other accounts use.
    """
    values = dict(values)
    identifier = values.pop("identifier", rs.identifier)
    if identifier != rs.identifier:
        raise ValidationError(
            [{"field": "identifier", "message": "is immutable"}],
            "The identifier of a resource server cannot change.",
        )
    changes = {k: v for k, v in values.items() if getattr(rs, k) != v}
    if "shared" in changes:
        if not caller_is_system:
            raise ValidationError(
                [{"field": "shared", "message": "only system admins may change it"}]
            )
        errors = _shared_errors(changes, rs.account_id, caller_is_system)
        if errors:
            raise ValidationError(errors)
        if not changes["shared"] and _users(rs.identifier, other_than=rs.account_id):
            raise Conflict(
                "Clients of other accounts list this resource server in their audiences.",
                code="resource_server_in_use",
            )
    if not changes:
        return False
    for field, value in changes.items():
        setattr(rs, field, value)
    rs.version = (rs.version or 0) + 1
    rs.updated_at = utcnow()
    db.session.flush()
    mark_resource_server_changed(rs.identifier)
    audit.record(actor, "resource_server.updated", rs.id, rs.account_id)
    return True


def delete_resource_server(rs: ResourceServer, actor: str) -> None:
    """:raise Conflict: resource_server_in_use while a client lists it in `audiences`."""
    if _users(rs.identifier):
        raise Conflict(
            "Clients still list this resource server in their audiences.",
            code="resource_server_in_use",
        )
    db.session.delete(rs)
    db.session.flush()
    mark_resource_server_changed(rs.identifier)
    audit.record(actor, "resource_server.deleted", rs.id, rs.account_id)


def _users(identifier: str, *, other_than: str | None = None) -> bool:
    """Whether any client (of an account other than `other_than`) lists the identifier."""
    lists: sa.ColumnElement[bool] | sa.TextClause
    if db.session.get_bind().dialect.name == "postgresql":
        lists = sa.type_coerce(Client.audiences, JSONB).contains([identifier])
    else:
        lists = sa.text(
            "EXISTS (SELECT 1 FROM json_each(clients.audiences) WHERE json_each.value = :aud)"
        ).bindparams(aud=identifier)
    query = sa.select(Client.id).where(lists)
    if other_than is not None:
        query = query.where(Client.account_id != other_than)
    return db.session.scalar(query.limit(1)) is not None


def list_resource_servers(
    account_id: str | None,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = 20,
    name_prefix: str | None = None,
    include_shared: bool = True,
) -> list[ResourceServer]:
    """Resource servers in (created_at, id) order after a keyset position.

    `account_id` None: every account; else that account's and (include_shared) the shared ones.
    """
    query = sa.select(ResourceServer)
    if account_id is not None:
        mine = ResourceServer.account_id == account_id
        query = query.where(sa.or_(mine, ResourceServer.shared) if include_shared else mine)
    if after is not None:
        query = query.where(sa.tuple_(ResourceServer.created_at, ResourceServer.id) > after)
    if name_prefix is not None:
        query = query.where(ResourceServer.name.startswith(name_prefix, autoescape=True))
    query = query.order_by(ResourceServer.created_at, ResourceServer.id).limit(limit)
    return list(db.session.scalars(query))


def position(rs: ResourceServer) -> list[Any]:
    """The keyset position of a resource server, as JSON values for a cursor."""
    micros = (rs.created_at.astimezone(UTC) - _EPOCH) // _MICROSECOND
    return [micros, rs.id]


def position_after(value: list[Any]) -> tuple[datetime, str]:
    """:raise BadRequest: invalid_cursor."""
    try:
        micros, rs_id = value
        if not isinstance(micros, int) or not isinstance(rs_id, str):
            raise TypeError
        created = _EPOCH + micros * _MICROSECOND
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest("The cursor is invalid.", code="invalid_cursor") from exc
    return created, rs_id
