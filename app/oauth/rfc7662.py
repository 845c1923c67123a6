"""Token introspection (RFC 7662) of our stateless JWT access tokens, as an Authlib endpoint.

The caller authenticates with the token endpoint's methods (app.oauth.client_auth),
so failures are the same 401 invalid_client and count towards the same limits.
A token is active when it verifies (app.oauth.rfc9068), its client still
exists and is enabled, and its `jti` is not on the shared deny-list.
Authlib answers with `Cache-Control: no-store` and `Pragma: no-cache`
(RFC 7662 §2.2 refers to RFC 6749 §5.1).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint

from app.clients.records import ClientRecord
from app.oauth.requests import FormRequest
from app.oauth.rfc9068 import AccessToken, token_type
from app.protocol import AUTH_METHODS
from app.runtime import runtime

INTROSPECTION_CLAIMS = (
    "iss",
    "sub",
    "client_id",
    "aud",
    "iat",
    "nbf",
    "exp",
    "jti",
    "scope",
    "account_id",
    "cnf",
)


class IntrospectionEndpoint(_IntrospectionEndpoint):
    """RFC 7662 §2: any authenticated client may introspect any of our tokens."""

    CLIENT_AUTH_METHODS = list(AUTH_METHODS)

    def create_endpoint_request(self, request) -> FormRequest:
        return self.server.create_oauth2_request(request, self.ENDPOINT_NAME)

    def check_params(self, request: FormRequest, client: ClientRecord) -> None:
        """RFC 7662 §2.1: "token" is REQUIRED.

        token_type_hint is only a hint and we have one type of token, so any
        value, known or not, is ignored.
        """
        if "token" not in request.form:
            raise InvalidRequestError("The token parameter is missing.")

    def query_token(self, token_string: str, token_type_hint: str | None) -> AccessToken | None:
        """Our token if it verifies, its client still exists and is enabled, and it is not cut off.

        The shared store's deny-list and cut-off are asked afterwards, by
        Authlib through `AccessToken.is_revoked`; the record's cut-off answers
        here first, at no cost, once this process has seen it.
        """
        # The deny-list is asked now and answers while the signature is checked.
        token = AccessToken.read(token_string, ask_early=True)
        if token is None:
            return None
        record = runtime().clients.get(token.client_id)
        if record is None or record.disabled or record.cuts_off(token.issued_ms):
            return None
        return token

    def check_permission(self, token: AccessToken, client: ClientRecord, request) -> bool:
        return True

    def introspect_token(self, token: AccessToken) -> dict:
        """RFC 7662 §2.2: "active" and the token's claims."""
        body: dict[str, Any] = {"active": True}
        claims = token.claims
        body.update({name: claims[name] for name in INTROSPECTION_CLAIMS if name in claims})
        body["token_type"] = token_type(claims)
        return body
