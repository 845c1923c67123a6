"""Access-token authorization for the management API (docs/api.md §2, §1.1).

Bearer tokens (RFC 6750) and DPoP-bound tokens (RFC 9449 §7): the latter
only as `Authorization: DPoP <token>` with a proof of this request signed by
the key the token names.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import jwt
from flask import current_app, g, request

from app.clients import policy
from app.clients.service import SYSTEM_ACCOUNT
from app.errors import Forbidden, Unauthorized
from app.oauth import rfc9449
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
    #: "bearer" or "dpop": the Authorization scheme the token came with.
    scheme: str = "bearer"

    @property
    def is_system(self) -> bool:
        return self.account_id == SYSTEM_ACCOUNT

    def account_filter(self) -> str | None:
        """The account to scope queries to; None means every account."""
        return None if self.is_system else self.account_id


def _challenge(scheme: str, error: str | None = None) -> str:
    """The 401 challenge (RFC 9110 §11.6.1).

    A DPoP failure gets the DPoP challenge with its error (RFC 9449 §7.1);
    otherwise both schemes are offered, the Bearer one first with the error.
    """
    verifier = rfc9449.dpop()
    if scheme == "dpop":
        return verifier.challenge(error)
    bearer = f'Bearer error="{error}"' if error else "Bearer"
    return f"{bearer}, {verifier.challenge()}"


def _invalid(detail: str, scheme: str = "bearer", error: str = "invalid_token") -> Unauthorized:
    headers = {"WWW-Authenticate": _challenge(scheme, error)}
    if error == "use_dpop_nonce":
        nonce = rfc9449.dpop().fresh_nonce()
        if nonce is not None:
            headers["DPoP-Nonce"] = nonce
    return Unauthorized(detail, code=error, headers=headers)


def _bound_key(claims: dict) -> str | None:
    """The RFC 7638 thumbprint a DPoP-bound token names in `cnf.jkt` (RFC 9449 §6.1)."""
    cnf = claims.get("cnf")
    if isinstance(cnf, dict) and isinstance(cnf.get("jkt"), str):
        return cnf["jkt"]
    return None


def _request_url() -> str:
    """The request's public URL as a proof's htu names it: ISSUER and the path, no query."""
    url = rfc9449.normalize_url(current_app.config["ISSUER"] + quote(request.path))
    assert url is not None  # ISSUER is an http(s) URL
    return url


def _check_proof(token: str, bound_to: str | None) -> rfc9449.Proof:
    """RFC 9449 §7.1: the request's proof, made with the token's key for this request.

    :raise Unauthorized: no valid proof, another key's, or a token that is not DPoP-bound.
    """
    if bound_to is None:
        raise _invalid("The access token is not DPoP-bound.", "dpop")
    try:
        proof = rfc9449.dpop().verify(
            request.headers.get("DPoP"), request.method, _request_url(), access_token=token
        )
    except rfc9449.NonceRequired as exc:
        raise _invalid(str(exc), "dpop", "use_dpop_nonce") from exc
    except rfc9449.ProofError as exc:
        raise _invalid(str(exc), "dpop", "invalid_dpop_proof") from exc
    if proof is None:
        raise _invalid("A DPoP proof is required.", "dpop", "invalid_dpop_proof")
    if not hmac.compare_digest(proof.thumbprint.encode(), bound_to.encode()):
        raise _invalid("The DPoP proof is not signed by the token's key.", "dpop")
    return proof


def authenticate() -> Caller:
    """The caller of this request, from its Bearer or DPoP-bound token (RFC 6750, RFC 9449 §7).

    :raise Unauthorized: no token, or a bad, expired or revoked one, or one
        whose client is deleted, disabled or no longer an admin; a
        DPoP-bound token sent as Bearer or without a valid proof.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    scheme, token = scheme.lower(), token.strip()
    if scheme not in ("bearer", "dpop") or not token:
        raise Unauthorized(
            "An access token is required.",
            code="missing_token",
            headers={"WWW-Authenticate": _challenge("bearer")},
        )
    try:
        claims = verify_access_token(token, current_app.config["MANAGEMENT_AUDIENCE"])
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise _invalid("The access token is invalid or expired.", scheme) from exc
    bound_to = _bound_key(claims)
    proof = None
    if scheme == "dpop":
        proof = _check_proof(token, bound_to)
    elif bound_to is not None:
        # RFC 9449 §7.2: a DPoP-bound token is never a bearer token.
        raise _invalid("A DPoP-bound access token must be sent with the DPoP scheme.", "dpop")
    if not certificate_matches(claims):
        # RFC 8705 §3: a certificate-bound token needs that certificate.
        raise _invalid("The access token is bound to a client certificate not presented.", scheme)
    # Asked of the shared store on every request: a revocation has no delay.
    client_id = claims.get("client_id") or claims["sub"]
    iat = claims.get("iat") if isinstance(claims.get("iat"), int) else None
    issued = issued_ms(claims["jti"], iat)
    # Revocation and the client's token cut-off, in one round trip of the
    # shared store: neither has any delay on any instance.
    if runtime().jti.is_revoked(claims["jti"], client_id, issued):
        raise _invalid("The access token has been revoked.", scheme)
    record = runtime().clients.get(client_id)
    if record is None or record.disabled or record.client_type != "admin":
        raise _invalid("The access token's client is no longer allowed.", scheme)
    if record.cuts_off(issued):
        raise _invalid("The access token has been revoked.", scheme)
    if proof is not None and not runtime().jti.use_once(*proof.replay_entry()):
        # RFC 9449 §11.1: a proof is used once, on every instance.
        raise _invalid("The DPoP proof has been used before.", scheme, "invalid_dpop_proof")
    # The token carries what was granted at issue time; a scope the client
    # has since lost stops working at once, as a deleted client does.
    scopes = frozenset(str(claims.get("scope", "")).split()) & frozenset(record.scopes)
    return Caller(record.id, record.account_id, scopes, claims, scheme)


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
                        "WWW-Authenticate": (
                            f"{'DPoP' if caller.scheme == 'dpop' else 'Bearer'}"
                            f' error="insufficient_scope", scope="{scope}"'
                        )
                    },
                )
            if scope.startswith("keys:"):
                policy.ensure_may_use_signing_keys(scope, caller.scopes, caller.is_system)
            g.caller = caller
            return view(*args, **kwargs)

        wrapper.required_scope = scope  # type: ignore[attr-defined]  # for the OpenAPI document
        return wrapper

    return decorator
