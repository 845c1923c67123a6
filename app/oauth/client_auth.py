"""Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3).

Each method is a function registered with Authlib's
`register_client_auth_method`: `client_secret_basic` and `client_secret_post`
here, `private_key_jwt` in app.oauth.rfc7523. `ClientAuthMixin`, mixed
into the authorization server, runs the part that is the same for every
method, in this order:

1. the failure limit (app.oauth.throttle): past it the request is refused with
   429 before any credential is looked at, so a right secret is refused too;
2. RFC 6749 §2.3: "The client MUST NOT use more than one authentication
   method in each request": 400 invalid_request;
3. the method the request uses, through Authlib's registry;
4. every failure (unknown client, wrong or expired secret, bad assertion,
   disabled client) becomes the one `ClientAuthenticationFailed`: 401
   invalid_client with the same body, so no cause can be told apart
   (RFC 6749 §5.2), and is counted towards the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Protocol

from authlib.common.errors import AuthlibHTTPError
from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError
from flask import current_app

from app.clients.records import ClientRecord
from app.http.client_cert import (
    MalformedClientCertificate,
    PresentedCertificate,
    presented_certificate,
)
from app.oauth.requests import FormRequest, claimed_client_id, parse_basic_credentials
from app.runtime import runtime
from app.timeutil import utcnow

#: Failed client authentications, one INFO line each (docs/operations.md#logs).
log = logging.getLogger("ccserver.auth")

#: RFC 8705 §2: a request with no other credentials, a client_id and a
#: certificate authenticates by one of these (app.oauth.rfc8705), tried in turn.
MTLS_METHODS: tuple[str, ...] = ("tls_client_auth", "self_signed_tls_client_auth")

QueryClient = Callable[[str], ClientRecord | None]
#: (query_client, request) -> the client, or None: Authlib's auth method shape.
AuthMethod = Callable[[QueryClient, FormRequest], ClientRecord | None]


class ClientAuthenticationFailed(InvalidClientError):
    """401 invalid_client, the same for every cause (RFC 6749 §5.2)."""

    status_code = 401

    def __init__(self, realm: str | None = None) -> None:
        super().__init__(description="Client authentication failed.", status_code=401)
        self.realm = realm

    def get_headers(self):
        headers = AuthlibHTTPError.get_headers(self)
        if self.realm:
            # RFC 6749 §5.2: answer the scheme the client used.
            headers.append(("WWW-Authenticate", f'Basic realm="{self.realm}"'))
        return headers


class FailureLimit(Protocol):
    """What app.oauth.throttle attaches as `rate_limiter`."""

    def check_request(self, request: FormRequest) -> None: ...


def methods_used(request: FormRequest) -> list[str]:
    """The authentication methods a request carries credentials for, in a fixed order."""
    data = request.payload.data
    used = []
    if request.headers.get("Authorization"):
        used.append("client_secret_basic")
    if "client_secret" in data:
        used.append("client_secret_post")
    if "client_assertion" in data or "client_assertion_type" in data:
        used.append("private_key_jwt")
    return used


def request_certificate() -> PresentedCertificate | None:
    """The certificate the current request presented (app.http.client_cert), or None.

    :raise InvalidRequestError: a trusted proxy forwarded a malformed one.
    """
    try:
        return presented_certificate()
    except MalformedClientCertificate as exc:
        raise InvalidRequestError("The forwarded client certificate is malformed.") from exc


def mtls_candidates(request: FormRequest, methods: Collection[str]) -> list[str]:
    """The RFC 8705 methods a request without other credentials may use.

    It must name its client_id (RFC 8705 §2) and present a certificate; a
    certificate beside a secret or an assertion only binds the token
    (RFC 8705 §3), so this is asked only when no other method is used.
    """
    if not request.payload.data.get("client_id") or request_certificate() is None:
        return []
    return [m for m in MTLS_METHODS if m in methods]


def check_secret(query_client: QueryClient, client_id: str, secret: str) -> ClientRecord | None:
    """The client whose active secret `secret` is, or None.

    An unknown client costs the same HMAC and comparison as a known one
    (`ClientStore.verify_secret` compares against a dummy hash), so the time
    taken does not tell whether a client id exists.
    """
    rt = runtime()
    record = query_client(client_id)
    matched = rt.clients.verify_secret(record, secret, rt.pepper, utcnow())
    if matched is None:
        return None
    rt.usage.secret_used(matched.id)
    return record


def client_secret_basic(query_client: QueryClient, request: FormRequest) -> ClientRecord | None:
    """RFC 6749 §2.3.1: id and secret in an HTTP Basic header (RFC 7617)."""
    credentials = parse_basic_credentials(request.headers.get("Authorization", ""))
    if credentials is None:
        return None
    client_id, secret = credentials
    client = check_secret(query_client, client_id, secret)
    # A client_id parameter beside the header must name the same client.
    if client is not None and request.payload.data.get("client_id", client_id) != client_id:
        return None
    return client


def client_secret_post(query_client: QueryClient, request: FormRequest) -> ClientRecord | None:
    """RFC 6749 §2.3.1: client_id and client_secret in the form body."""
    data = request.payload.data
    return check_secret(query_client, data.get("client_id") or "", data["client_secret"])


def failure_reason(
    client: ClientRecord | None, method: str | None, candidates: list[str], named: str | None
) -> str:
    """A coarse cause of a failed authentication, for the server's log only (never the answer).

    The client's record is read again through the cache that the failed
    attempt has just filled, so this costs a dictionary look-up.
    """
    if method is None:
        return "no_credentials"
    if not candidates:
        return "method_not_accepted"
    if client is not None:
        return "client_disabled"
    if not named or runtime().clients.get(named) is None:
        return "unknown_client"
    return "invalid_credentials"


def _loggable(value: str | None) -> str:
    # The id is whatever the caller sent: keep a log line one line and short.
    if not value:
        return "-"
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in value[:64])


def log_failure(named: str | None, reason: str, method: str | None, endpoint: str) -> None:
    """One line per failed client authentication: the id tried and why, never a credential."""
    log.info(
        "client authentication failed: client_id=%s reason=%s method=%s endpoint=%s",
        _loggable(named),
        reason,
        method or "none",
        endpoint,
    )


#: Failed methods answered without the Basic challenge: no Authorization header was tried.
NO_BASIC_CHALLENGE = frozenset({"private_key_jwt", *MTLS_METHODS})


class ClientAuthMixin:
    """Authorization server mixin: `authenticate_client` as described in the module docstring.

    Put before Authlib's AuthorizationServer: `super().authenticate_client`
    is Authlib's registry of methods (`register_client_auth_method`).
    """

    #: Set by app.oauth.throttle: refuses (429) a request past a failure limit.
    rate_limiter: FailureLimit | None = None
    #: Called with (request, client_id) after every failed authentication.
    on_auth_failure: Callable[[FormRequest, str | None], None] | None = None

    def authenticate_client(
        self, request: FormRequest, methods: Collection[str], endpoint: str = "token"
    ) -> ClientRecord:
        """The client the request authenticates by exactly one of `methods`.

        :raise RateLimited: the request is past a failure limit (app.oauth.throttle).
        :raise InvalidRequestError: more than one method in the request.
        :raise ClientAuthenticationFailed: anything else that is not a success.
        """
        if self.rate_limiter is not None:
            self.rate_limiter.check_request(request)
        used = methods_used(request)
        if len(used) > 1:
            raise InvalidRequestError("Use exactly one client authentication method.")
        method = used[0] if used else None
        candidates = used if method in methods else []
        if method is None:
            candidates = mtls_candidates(request, methods)
            method = candidates[0] if candidates else None
        client: ClientRecord | None = None
        if candidates:
            try:
                client = super().authenticate_client(request, candidates, endpoint)  # type: ignore[misc]
            except InvalidClientError:
                client = None
        if client is None or client.disabled:
            request.client = None
            named = client.id if client is not None else claimed_client_id(request)
            if self.on_auth_failure is not None:
                self.on_auth_failure(request, named)
            log_failure(named, failure_reason(client, method, candidates, named), method, endpoint)
            # RFC 6749 §5.2 requires the Basic challenge after a failed Basic
            # attempt; secret and credential-less failures all get it so they
            # stay alike, a failed assertion (no Authorization header) none.
            realm = None if method in NO_BASIC_CHALLENGE else current_app.config["ISSUER"]
            raise ClientAuthenticationFailed(realm)
        request.client = client
        # Authlib's registry set the method that succeeded (one of two for mTLS).
        request.auth_method = request.auth_method or method
        return client
