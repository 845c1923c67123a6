"""Token revocation (RFC 7009) of our stateless JWT access tokens, as an Authlib endpoint.

The caller authenticates with the token endpoint's methods (app.oauth.client_auth).
Revoking puts the token's `jti` on the shared deny-list (app.state.jti) until
the token's own `exp`, so the list never outgrows the tokens still alive.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import InvalidRequestError, UnauthorizedClientError
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint

from app.clients.records import ClientRecord
from app.oauth.requests import FormRequest
from app.oauth.rfc9068 import AccessToken
from app.protocol import AUTH_METHODS
from app.runtime import runtime
from app.state.jti import from_timestamp

#: RFC 6749 §5.1, which RFC 7009 §2.2 follows: responses must not be cached.
NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


class RevocationEndpoint(_RevocationEndpoint):
    """RFC 7009 §2.1: a client revokes one of its own access tokens.

    Unknown, malformed, expired and already revoked tokens are answered 200
    with an empty body (§2.2: "invalid tokens do not cause an error
    response"; the client ignores the body). A valid token issued to another
    client is refused with 400 unauthorized_client (RFC 6749 §5.2) and stays
    active.
    """

    CLIENT_AUTH_METHODS = list(AUTH_METHODS)

    def create_endpoint_request(self, request) -> FormRequest:
        return self.server.create_oauth2_request(request, self.ENDPOINT_NAME)

    def check_params(self, request: FormRequest, client: ClientRecord) -> None:
        """RFC 7009 §2.1: "token" is REQUIRED; token_type_hint is only a hint, ignored."""
        if "token" not in request.form:
            raise InvalidRequestError("The token parameter is missing.")

    def query_token(self, token_string: str, token_type_hint: str | None) -> AccessToken | None:
        return AccessToken.read(token_string)

    def authenticate_token(self, request: FormRequest, client: ClientRecord) -> AccessToken | None:
        """The token to revoke, or None when there is nothing to revoke.

        :raise UnauthorizedClientError: a valid token issued to another client.
        """
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        if token is not None and not token.check_client(client):
            raise UnauthorizedClientError(description="The token was not issued to this client.")
        return token

    def revoke_token(self, token: AccessToken, request: FormRequest) -> None:
        expires_at = from_timestamp(token.claims["exp"])
        runtime().jti.revoke(token.jti, token.client_id, expires_at)

    def create_endpoint_response(self, request: FormRequest):
        status, _body, _headers = super().create_endpoint_response(request)
        # Authlib sends "{}" as JSON; an empty body says the same (§2.2).
        return status, b"", NO_STORE
