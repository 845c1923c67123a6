"""Bearer-token authorization for the management API (docs/api.md §2)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from flask import current_app, g, request

from app.clients.service import SYSTEM_ACCOUNT
from app.errors import Forbidden, Unauthorized
from app.oauth.rfc8705 import certificate_matches
from app.oauth.rfc9068 import issued_ms, verify_access_token
from app.runtime import runtime


@dataclass(frozen=True)
class Caller:
    """The admin client behind a verified management token."""

    client_id: str
    account_id: str
    scopes: frozenset[str]
    claims: dict

    @property
    def is_system(self) -> bool:
        return self.account_id == SYSTEM_ACCOUNT

    def account_filter(self) -> str | None:
        """The account to scope queries to; None means every account."""
        return None if self.is_system else self.account_id


def _invalid(detail: str) -> Unauthorized:
    return Unauthorized(
        detail,
        code="invalid_token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def authenticate() -> Caller:
    """The caller of this request, from its Bearer token.

    :raise Unauthorized: no token, or a bad, expired or revoked one, or one
        whose client is deleted, disabled or no longer an admin.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "A Bearer access token is required.",
            code="missing_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        claims = verify_access_token(token.strip(), current_app.config["MANAGEMENT_AUDIENCE"])
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise _invalid("The access token is invalid or expired.") from exc
    if not certificate_matches(claims):
        # RFC 8705 §3: a certificate-bound token needs that certificate.
        raise _invalid("The access token is bound to a client certificate not presented.")
    # Asked of the shared store on every request: a revocation has no delay.
    client_id = claims.get("client_id") or claims["sub"]
    iat = claims.get("iat") if isinstance(claims.get("iat"), int) else None
    issued = issued_ms(claims["jti"], iat)
    # Revocation and the client's token cut-off, in one round trip of the
    # shared store: neither has any delay on any instance.
    if runtime().jti.is_revoked(claims["jti"], client_id, issued):
        raise _invalid("The access token has been revoked.")
    record = runtime().clients.get(client_id)
    if record is None or record.disabled or record.client_type != "admin":
        raise _invalid("The access token's client is no longer allowed.")
    if record.cuts_off(issued):
        raise _invalid("The access token has been revoked.")
    # The token carries what was granted at issue time; a scope the client
    # has since lost stops working at once, as a deleted client does.
    scopes = frozenset(str(claims.get("scope", "")).split()) & frozenset(record.scopes)
    return Caller(record.id, record.account_id, scopes, claims)


def require_scope(scope: str) -> Callable:
    """Decorator: the view needs a management token holding `scope`."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            caller = authenticate()
            if scope not in caller.scopes:
                raise Forbidden(
                    f"This call needs the {scope!r} scope.",
                    code="insufficient_scope",
                    headers={
                        "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'
                    },
                )
            if scope.startswith("keys:") and not caller.is_system:
                raise Forbidden("Signing keys belong to the system account.")
            g.caller = caller
            return view(*args, **kwargs)

        wrapper.required_scope = scope  # type: ignore[attr-defined]  # for the OpenAPI document
        return wrapper

    return decorator
