"""The authorization server: Authlib's, wired to our requests, client authentication and tokens.

`config_oauth(app)` registers everything (the Authlib example server's
shape): the client credentials grant (RFC 6749 §4.4), the introspection
(RFC 7662) and revocation (RFC 7009) endpoints, the token generator
(RFC 9068) and the client authentication methods (app.oauth.client_auth,
app.oauth.rfc7523). The views (app.oauth.views) and the token fast path
(app.oauth.fastpath) only hand it requests.
"""

from __future__ import annotations

import orjson
from authlib.integrations.flask_oauth2 import (
    AuthorizationServer as _AuthorizationServer,
)
from authlib.oauth2.rfc6749 import (
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
    grants,
)
from flask import Flask, current_app, json

from app.clients.records import ClientRecord
from app.oauth import client_auth, rfc7523, rfc8705, rfc9449
from app.oauth.client_auth import ClientAuthMixin
from app.oauth.requests import FormRequest, PlainResponse, RawFormRequest, form_request
from app.oauth.rfc7009 import RevocationEndpoint
from app.oauth.rfc7662 import IntrospectionEndpoint
from app.oauth.rfc9068 import JWTAccessTokenGenerator, NoSigningKeyError
from app.protocol import AUTH_METHODS, FAPI2, FAPI2_SIGNING_ALGS
from app.runtime import runtime, runtime_of
from app.state import autocommit


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is not one the client may use."""

    error = "invalid_target"
    status_code = 400


class TemporarilyUnavailableError(OAuth2Error):
    error = "temporarily_unavailable"
    status_code = 503


class AuthorizationServer(ClientAuthMixin, _AuthorizationServer):
    """Authlib's server with our request objects, client authentication and responses."""

    #: DPoP proof verification, key cache and nonces (set by `config_oauth`).
    dpop: rfc9449.Dpop

    def create_oauth2_request(
        self, request: FormRequest | RawFormRequest | None, endpoint: str = "token"
    ) -> FormRequest:
        """The FormRequest of a RawFormRequest (app.oauth.fastpath) or of the current Flask request.

        :raise InvalidRequestError: the body is not acceptable form data.
        """
        return form_request(request, endpoint)

    def query_client(self, client_id: str) -> ClientRecord | None:
        return runtime().clients.get(client_id)

    def save_token(self, token, request) -> None:
        """Access tokens are stateless JWTs: nothing is stored per token."""

    def handle_response(self, status_code, payload, headers) -> PlainResponse:
        if isinstance(payload, dict):
            try:
                # The same bytes as Flask's provider for these ASCII payloads, keys
                # sorted alike, at a twentieth of its cost (docs/performance.md).
                payload = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
            except orjson.JSONEncodeError:
                payload = json.dumps(payload)  # a value orjson refuses, e.g. a >64-bit int
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        return PlainResponse(status_code, payload, list(headers))

    def create_token_response(self, request=None) -> PlainResponse:
        """RFC 6749 §4.4.2-4.4.3 for a RawFormRequest, or for the Flask request when None."""
        return rfc9449.with_nonce(self._token_response(request))

    def _token_response(self, request) -> PlainResponse:
        try:
            request = self.create_oauth2_request(request)
            if not request.payload.data.get("grant_type"):
                raise InvalidRequestError("The grant_type parameter is missing.")
            # Store questions sent along the way are read before this returns.
            with autocommit.statements():
                return super().create_token_response(request)
        except OAuth2Error as error:
            # Raised while building the request (bad body, repeated parameter).
            return self.handle_error_response(None, error)
        except NoSigningKeyError:
            unavailable = TemporarilyUnavailableError("No signing key is available.")
            return self.handle_error_response(None, unavailable)

    def create_endpoint_response(self, name: str, request=None) -> PlainResponse:
        """The introspection or revocation response for the current Flask request."""
        try:
            with autocommit.statements():
                return super().create_endpoint_response(name, request)
        except OAuth2Error as error:
            # Raised while building the request (bad body, repeated parameter).
            return self.handle_error_response(None, error)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """RFC 6749 §4.4 with per-client scopes and RFC 8707 audiences."""

    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        self.request.client = client
        scope = self._resolve_scope(client)
        self.request.audiences = self._resolve_audiences(client)
        _ensure_management_audience_for_admins(client, self.request.audiences)
        self.request.scope, self.request.expires_in = self._apply_resource_servers(client, scope)
        rfc8705.bind_certificate(self.request, client)
        rfc9449.bind_token_request(self.request)
        # Last: the token's binding (DPoP, certificate) is known by now.
        _ensure_security_profile(client, self.request)

    def _resolve_scope(self, client: ClientRecord) -> str:
        """RFC 6749 §3.3: omitted scope means all of the client's scopes."""
        requested = self.request.payload.data.get("scope")
        if requested is None or not requested.strip():
            return " ".join(client.scopes)
        wanted = list(dict.fromkeys(requested.split()))
        if not set(wanted) <= set(client.scopes):
            raise InvalidScopeError("The requested scope is not allowed for this client.")
        return " ".join(wanted)

    def _resolve_audiences(self, client: ClientRecord) -> list[str]:
        """RFC 8707 §2 "resource" (repeatable) or a single "audience"."""
        datalist = self.request.payload.datalist
        resources = datalist.get("resource", [])
        audience = datalist.get("audience", [])
        if resources and audience:
            raise InvalidRequestError("Send either resource or audience, not both.")
        targets = list(dict.fromkeys(resources or audience))
        if not targets:
            if client.audiences:
                return [client.audiences[0]]
            return [current_app.config["DEFAULT_AUDIENCE"]]
        if not set(targets) <= set(client.audiences):
            raise InvalidTargetError("The requested audience is not allowed for this client.")
        # A token for the management API and another API at once would let
        # that API replay it at the management API (RFC 8707 §3: audience-
        # restrict tokens to limit where they may be replayed).
        if len(targets) > 1 and current_app.config["MANAGEMENT_AUDIENCE"] in targets:
            raise InvalidTargetError("The management audience cannot share a token.")
        return targets

    def _apply_resource_servers(self, client: ClientRecord, scope: str) -> tuple[str, int]:
        """Scopes and lifetime as the targeted resource servers allow (docs/api.md §1).

        Records come from the per-process cache: no database read on a warm cache.
        """
        ttl = client.access_token_ttl
        defined: list[frozenset[str]] = []
        store = runtime().resource_servers
        for target in self.request.audiences:
            record = store.get(target)
            if record is None:
                continue  # a built-in audience
            if not record.usable_by(client.account_id):
                # Audiences are checked when written; this refuses one that a
                # write path bypassed, so no account mints tokens for another's API.
                raise InvalidTargetError("The requested audience is not allowed for this client.")
            if record.scopes:
                defined.append(record.scopes)
            if record.access_token_ttl is not None:
                ttl = min(ttl, record.access_token_ttl)
        if not defined:
            return scope, ttl
        granted = scope.split()
        if self.request.payload.data.get("scope", "").strip():
            if not all(s in d for d in defined for s in granted):
                raise InvalidScopeError(
                    "The requested scope is not defined by the resource server."
                )
            return scope, ttl
        return " ".join(s for s in granted if all(s in d for d in defined)), ttl

    def create_token_response(self):
        generator: JWTAccessTokenGenerator = self.server.token_generator
        token = generator.generate(
            self.GRANT_TYPE,
            self.request.client,
            scope=self.request.scope,
            expires_in=self.request.expires_in,
            audiences=self.request.audiences,
            confirmation=self.request.confirmation,
        )
        # The replay cache's answer for the DPoP proof, asked before the signing.
        rfc9449.settle_token_request(self.request)
        return 200, token, self.TOKEN_RESPONSE_HEADER


def _ensure_management_audience_for_admins(client: ClientRecord, audiences: list[str]) -> None:
    """Only an admin client gets a token for the management API (docs/api.md §2.1).

    A standard client listing it (stored before the rule, or by hand) is
    refused as any target it may not use is (RFC 8707 §2), whether asked for
    or its default.
    """
    if client.client_type != "admin" and current_app.config["MANAGEMENT_AUDIENCE"] in audiences:
        raise InvalidTargetError("The management API's audience is for admin clients only.")


def _ensure_security_profile(client: ClientRecord, request: FormRequest) -> None:
    """The FAPI 2.0 Security Profile at the token endpoint (§5.3.2.1, §5.4.1).

    Client authentication (mTLS or private_key_jwt, the assertion's audience,
    clock and algorithm) is held to the profile where it happens
    (ClientRecord.check_endpoint_auth_method, app.oauth.rfc7523); here the
    token: only sender-constrained, and only signed with PS256, ES256 or EdDSA.
    """
    if client.security_profile != FAPI2:
        return
    key = runtime().keyring.snapshot().current
    if key is not None and key.alg not in FAPI2_SIGNING_ALGS:
        raise UnauthorizedClientError(
            description=f"This server signs tokens with {key.alg}, which the client's FAPI 2.0 "
            "profile does not allow (PS256, ES256 or EdDSA; see SIGNING_ALG)."
        )
    if request.confirmation is None:
        raise InvalidRequestError(
            "A FAPI 2.0 client's tokens must be sender-constrained: "
            "send a DPoP proof or present a client certificate."
        )


def config_oauth(app: Flask) -> AuthorizationServer:
    """Build this app's authorization server: grant, endpoints, token generator, client auth."""
    server = AuthorizationServer()
    server.init_app(app)
    server.dpop = rfc9449.Dpop(
        app.config["ISSUER"], runtime_of(app).pepper, app.config["DPOP_NONCES"]
    )
    server.token_generator = JWTAccessTokenGenerator(app.config["ISSUER"], runtime_of(app).keyring)
    server.register_token_generator("default", server.token_generator)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(IntrospectionEndpoint)
    server.register_endpoint(RevocationEndpoint)
    server.register_client_auth_method("client_secret_basic", client_auth.client_secret_basic)
    server.register_client_auth_method("client_secret_post", client_auth.client_secret_post)
    server.register_client_auth_method(
        "private_key_jwt",
        rfc7523.private_key_jwt(app.config["ISSUER"], app.config["ASSERTION_SIGNING_ALGS"]),
    )
    server.register_client_auth_method("tls_client_auth", rfc8705.tls_client_auth)
    server.register_client_auth_method(
        "self_signed_tls_client_auth", rfc8705.self_signed_tls_client_auth
    )
    runtime_of(app).oauth = server
    return server
