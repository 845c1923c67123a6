"""Rules every change to a client obeys, whichever face (API, console, CLI) asks."""

from __future__ import annotations

from collections.abc import Iterable

from app.errors import Conflict, Forbidden
from app.models import Client

#: The scopes of the management API (docs/api.md §2); only admin clients hold them.
MANAGEMENT_SCOPES = (
    "clients:read",
    "clients:write",
    "keys:read",
    "keys:write",
    "audit:read",
)
#: What the operator at the command line holds: the host's keys and database are theirs anyway.
OPERATOR_SCOPES = frozenset(MANAGEMENT_SCOPES)


def ensure_may_use_signing_keys(scope: str, caller_scopes: Iterable[str], is_system: bool) -> None:
    """The server's signing keys: the `keys:*` scope asked for, held by a system-account admin.

    One rule for the API and the console (docs/api.md §2.4).

    :raise Forbidden: insufficient_scope without the scope; else when the
        caller is not of the system account.
    """
    if scope not in caller_scopes:
        raise Forbidden(f"This needs the {scope!r} scope.", code="insufficient_scope")
    if scope.startswith("keys:") and not is_system:
        raise Forbidden("Signing keys belong to the system account.")


def ensure_unlocked(client: Client) -> None:
    """Refuse a change to a locked client (docs/api.md §2.1).

    :raise Conflict: client_locked.
    """
    if client.locked:
        raise Conflict(
            'The client is locked; unlock it with {"locked": false} first.',
            code="client_locked",
        )


def management_scopes(scopes: Iterable[str] | None) -> frozenset[str]:
    """The management scopes among `scopes`."""
    return frozenset(scopes or ()) & OPERATOR_SCOPES


def may_manage(caller_scopes: Iterable[str], client: Client) -> bool:
    """Whether a caller holding `caller_scopes` may change `client` at all."""
    return management_scopes(client.scopes) <= frozenset(caller_scopes)


def ensure_may_manage(caller_scopes: Iterable[str], client: Client) -> None:
    """Refuse any change to a client holding a management scope the caller lacks.

    Covers every write on the client and its credentials (edit, lock, unlock,
    delete, secrets, keys, token cut-off), checked on the client as stored,
    before anything else changes it. Otherwise an admin could take over a
    stronger one: add a secret to it, get its token, act as it (docs/api.md §2).

    :raise Forbidden: insufficient_privilege.
    """
    ensure_may_hold(caller_scopes, client.scopes)


def ensure_may_hold(caller_scopes: Iterable[str], scopes: Iterable[str] | None) -> None:
    """Refuse to make a client holding a management scope the caller lacks.

    Checked on the client as a create or an edit would leave it, so no admin
    mints, or edits itself or another into, an admin above its own scopes.

    :raise Forbidden: insufficient_privilege.
    """
    beyond = sorted(management_scopes(scopes) - frozenset(caller_scopes))
    if beyond:
        raise Forbidden(
            f"The client holds (or would hold) {', '.join(map(repr, beyond))}, "
            "which the caller does not hold.",
            code="insufficient_privilege",
        )
