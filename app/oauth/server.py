"""Authlib wiring: the authorization server, its request and client auth.

Everything that touches Authlib sits here; `config_oauth(app)` registers the
grant. Client authentication is ours (`authenticate_client`): it must treat
an unknown client, a wrong or expired secret, a bad assertion and a disabled
client alike (RFC 6749 §5.2 invalid_client) and refuse requests that use more
than one method (RFC 6749 §2.3).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote

from authlib.common.errors import AuthlibHTTPError
from authlib.integrations.flask_oauth2 import (
    AuthorizationServer as _AuthorizationServer,
)
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    grants,
)
from flask import Flask, Response, current_app, json
from flask import request as flask_request
from werkzeug.datastructures import EnvironHeaders

from app.clients.records import ClientRecord
from app.oauth.rfc9068 import JWTAccessTokenGenerator, NoSigningKeyError
from app.runtime import runtime
from app.timeutil import utcnow

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# RFC 8707 §2: "resource" may repeat; RFC 6749 §3.2 forbids repeating the rest.
REPEATABLE = frozenset({"resource"})
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is not one the client may use."""

    error = "invalid_target"
    status_code = 400


class TemporarilyUnavailableError(OAuth2Error):
    error = "temporarily_unavailable"
    status_code = 503


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


class FormPayload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        datalist: defaultdict[str, list] = defaultdict(list)
        for name, value in pairs:
            datalist[name].append(value)
        self._datalist = datalist
        self._data = {name: values[0] for name, values in datalist.items()}

    @property
    def data(self):
        return self._data

    @property
    def datalist(self):
        return self._datalist


class FormRequest(OAuth2Request):
    """An OAuth2Request built straight from the form body.

    RFC 6749 §2.3.1 and §3.2: parameters come from the request body only;
    the query string is ignored. The body is capped by MAX_CONTENT_LENGTH.
    """

    def __init__(self, method: str, uri: str, headers, pairs: list[tuple[str, str]]) -> None:
        # Skips OAuth2Request.__init__: its transport check would refuse
        # http:// behind a TLS-terminating proxy; ISSUER decides the scheme.
        self.method = method
        self.uri = uri
        self.headers = headers
        self._body = None
        self.payload = FormPayload(pairs)
        self.client = None
        self.auth_method = None
        self.user = None
        self.authorization_code = None
        self.refresh_token = None
        self.credential = None
        self._scope = None
        self.audiences: list[str] = []

    @property
    def form(self):
        return self.payload.data

    @property
    def args(self):
        return {}


class RawFormRequest(NamedTuple):
    """A form POST read straight from the WSGI environ by app.oauth.fastpath, not yet parsed."""

    method: str
    headers: EnvironHeaders
    body: bytes


class PlainResponse(NamedTuple):
    """What `AuthorizationServer.handle_response` gives: a view makes a Response of it
    (`flask_response`), app.oauth.fastpath writes it straight to start_response."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]


def flask_response(plain: PlainResponse) -> Response:
    """The Flask Response of a PlainResponse; werkzeug adds Content-Length."""
    return Response(plain.body, status=plain.status, headers=plain.headers)


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """Decode an x-www-form-urlencoded body strictly as UTF-8.

    :raise InvalidRequestError: bad encoding or a repeated parameter.
    """
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=100,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequestError("The request body is not valid form data.") from exc
    seen: set[str] = set()
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise InvalidRequestError("The request body is not valid form data.")
        if name in seen and name not in REPEATABLE:
            # RFC 6749 §5.2 limits error_description to printable ASCII without
            # '"' or '\\'; never echo an arbitrary parameter name into it.
            shown = name if SAFE_NAME.fullmatch(name) else "A parameter"
            raise InvalidRequestError(f"{shown} is repeated.")
        seen.add(name)
    return pairs


def parse_form_body() -> list[tuple[str, str]]:
    """The current Flask request's form body, parsed by `parse_form`.

    :raise InvalidRequestError: wrong content type, bad encoding, or a
        repeated parameter.
    """
    if flask_request.mimetype != FORM_CONTENT_TYPE:
        raise InvalidRequestError(f"The request body must be {FORM_CONTENT_TYPE}.")
    return parse_form(flask_request.get_data(cache=True))


def parse_basic_credentials(header: str) -> tuple[str, str] | None:
    """client id and secret from an RFC 7617 Basic header, form-decoded (RFC 6749 §2.3.1)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


AssertionAuthenticator = Callable[[FormRequest, str], ClientRecord | None]


class AuthorizationServer(_AuthorizationServer):
    """Authlib's server with our request object and client authentication."""

    #: Set by the private_key_jwt module: (request, endpoint) -> client or None.
    assertion_authenticator: AssertionAuthenticator | None = None
    #: Called with (request, client_id) after every failed authentication.
    on_auth_failure: Callable[[FormRequest, str | None], None] | None = None
    #: Set by app.state.failures: refuses (429) a client id or address past its limit.
    rate_limiter = None

    def create_oauth2_request(self, request) -> FormRequest:
        """The FormRequest of a RawFormRequest (app.oauth.fastpath) or of the current Flask request.

        :raise InvalidRequestError: the body is not acceptable form data.
        """
        if isinstance(request, FormRequest):
            return request
        if isinstance(request, RawFormRequest):
            return FormRequest(
                request.method,
                current_app.config["TOKEN_ENDPOINT"],
                request.headers,
                parse_form(request.body),
            )
        return FormRequest(
            flask_request.method,
            current_app.config["TOKEN_ENDPOINT"],
            flask_request.headers,
            parse_form_body(),
        )

    def query_client(self, client_id: str) -> ClientRecord | None:
        return runtime().clients.get(client_id)

    def save_token(self, token, request) -> None:
        """Access tokens are stateless JWTs: nothing is stored per token."""

    def authenticate_client(self, request: FormRequest, methods, endpoint: str = "token"):
        """Authenticate by exactly one of Basic, POST secret or private_key_jwt.

        :raise InvalidRequestError: more than one method in the request.
        :raise ClientAuthenticationFailed: anything else that is not a success.
        """
        if self.rate_limiter is not None:
            # Before any credential check: past the limit even a right secret is refused.
            self.rate_limiter.check(request)
        data = request.payload.data
        auth_header = request.headers.get("Authorization")
        used = []
        if auth_header:
            used.append("client_secret_basic")
        if "client_secret" in data:
            used.append("client_secret_post")
        if "client_assertion" in data or "client_assertion_type" in data:
            used.append("private_key_jwt")
        if len(used) > 1:
            raise InvalidRequestError("Use exactly one client authentication method.")
        realm = current_app.config["ISSUER"] if used != ["private_key_jwt"] else None

        client_id: str | None = None
        client: ClientRecord | None = None
        if used == ["client_secret_basic"]:
            credentials = parse_basic_credentials(auth_header)
            if credentials is not None:
                client_id, secret = credentials
                client = self._check_secret(client_id, secret)
                if client is not None and data.get("client_id", client_id) != client_id:
                    client = None
        elif used == ["client_secret_post"]:
            client_id = data.get("client_id")
            client = self._check_secret(client_id or "", data["client_secret"])
        elif (
            used == ["private_key_jwt"]
            and self.assertion_authenticator is not None
            and data.get("client_assertion_type") == ASSERTION_TYPE
            and data.get("client_assertion")
        ):
            client = self.assertion_authenticator(request, endpoint)
            client_id = client.id if client else data.get("client_id")

        if client is None or client.disabled:
            if self.on_auth_failure is not None:
                self.on_auth_failure(request, client_id)
            raise ClientAuthenticationFailed(realm)
        request.client = client
        request.auth_method = used[0]
        return client

    def _check_secret(self, client_id: str, secret: str) -> ClientRecord | None:
        rt = runtime()
        record = rt.clients.get(client_id)
        matched = rt.clients.verify_secret(record, secret, rt.pepper, utcnow())
        if matched is None:
            return None
        rt.usage.secret_used(matched.id)
        return record

    def handle_response(self, status_code, payload, headers) -> PlainResponse:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        return PlainResponse(status_code, payload, list(headers))

    def create_token_response(self, request=None) -> PlainResponse:
        """RFC 6749 §4.4.2-4.4.3 for a RawFormRequest, or for the Flask request when None."""
        try:
            request = self.create_oauth2_request(request)
            if not request.payload.data.get("grant_type"):
                raise InvalidRequestError("The grant_type parameter is missing.")
            return super().create_token_response(request)
        except OAuth2Error as error:
            # Raised while building the request (bad body, repeated parameter).
            return self.handle_error_response(None, error)
        except NoSigningKeyError:
            error = TemporarilyUnavailableError("No signing key is available.")
            return self.handle_error_response(None, error)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """RFC 6749 §4.4 with per-client scopes and RFC 8707 audiences."""

    TOKEN_ENDPOINT_AUTH_METHODS = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ]

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        self.request.client = client
        self.request.scope = self._resolve_scope(client)
        self.request.audiences = self._resolve_audiences(client)

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
        return targets

    def create_token_response(self):
        generator: JWTAccessTokenGenerator = self.server.token_generator
        token = generator.generate(
            self.GRANT_TYPE,
            self.request.client,
            scope=self.request.scope,
            audiences=self.request.audiences,
        )
        return 200, token, self.TOKEN_RESPONSE_HEADER


def config_oauth(app: Flask) -> AuthorizationServer:
    """Build the authorization server for this app and register the grant."""
    server = AuthorizationServer()
    server.init_app(app)
    server.token_generator = JWTAccessTokenGenerator(
        app.config["ISSUER"], app.extensions["ccserver"].keyring
    )
    server.register_token_generator("default", server.token_generator)
    server.register_grant(ClientCredentialsGrant)
    from app.oauth.rfc7523 import authenticate_assertion

    server.assertion_authenticator = authenticate_assertion
    app.extensions["ccserver.oauth"] = server
    return server
