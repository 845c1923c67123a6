"""Requests and responses of the /oauth2/* form endpoints, and the parsing they need.

RFC 6749 §2.3.1 and §3.2: parameters come from an
`application/x-www-form-urlencoded` body only, encoded as UTF-8; the query
string is ignored, except that client credentials in it are refused (RFC 6749
§2.3.1: they "MUST NOT be included in the request URI"). A request reaches
Authlib as a `FormRequest`, built either from the current Flask request or, on
the token fast path
(app.oauth.fastpath), from a `RawFormRequest` read straight from the WSGI
environ. Authlib's answer comes back as a `PlainResponse`, which a view turns
into a Flask Response (`flask_response`) and the fast path writes as it is.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Payload, OAuth2Request
from flask import Response, current_app
from flask import request as flask_request
from werkzeug.datastructures import EnvironHeaders

from app import jose

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

#: Where each endpoint is served, under ISSUER; the names are Authlib's
#: endpoint names (`ENDPOINT_NAME`, and "token" for the grant).
ENDPOINT_PATHS = {
    "token": "/oauth2/token",
    "introspection": "/oauth2/introspect",
    "revocation": "/oauth2/revoke",
}

# RFC 8707 §2: "resource" may repeat; RFC 6749 §3.2 forbids repeating the rest.
REPEATABLE = frozenset({"resource"})
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_FIELDS = 100
#: Parameters that carry client credentials: never accepted in the URL query.
CREDENTIAL_PARAMETERS = frozenset(
    {"client_id", "client_secret", "client_assertion", "client_assertion_type"}
)


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
    """An OAuth2Request built straight from the form body, for one endpoint.

    `endpoint` names the endpoint it was made to ("token", "introspection",
    "revocation"): client assertions name it in their audience (RFC 7523 §3).
    """

    def __init__(
        self, method: str, uri: str, headers, pairs: list[tuple[str, str]], endpoint: str = "token"
    ) -> None:
        # Skips OAuth2Request.__init__: its transport check would refuse
        # http:// behind a TLS-terminating proxy; ISSUER decides the scheme.
        self.method = method
        self.uri = uri
        self.headers = headers
        self._body = None
        self.payload = FormPayload(pairs)
        self.endpoint = endpoint
        self.client: Any = None
        self.auth_method: str | None = None
        self.user = None
        self.authorization_code = None
        self.refresh_token = None
        self.credential = None
        self._scope = None
        self.audiences: list[str] = []
        # RFC 7800 `cnf` of the token to issue: set when a DPoP proof or a
        # client certificate binds it (docs/api.md §1.1, §1.2).
        self.confirmation: dict[str, str] | None = None
        # What the DPoP header came to (app.oauth.rfc9449.token_proof_state).
        self.dpop: Any = None
        # The federated credential that authenticated the client (docs/api.md §1.3).
        self.federated_credential: str | None = None
        # A client assertion's replay-cache key and the store's answer, asked
        # before its signature is checked (app.oauth.rfc7523).
        self.assertion_replay: tuple[str, Any] | None = None

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


def form_request(request: FormRequest | RawFormRequest | None, endpoint: str) -> FormRequest:
    """The FormRequest of a RawFormRequest, or of the current Flask request when None.

    :raise InvalidRequestError: the body is not acceptable form data.
    """
    if isinstance(request, FormRequest):
        return request
    uri = current_app.config["ISSUER"] + ENDPOINT_PATHS[endpoint]
    if isinstance(request, RawFormRequest):
        # The fast path's headers read the WSGI environ, which holds the query.
        check_query(request.headers.environ.get("QUERY_STRING", ""))
        return FormRequest(request.method, uri, request.headers, parse_form(request.body), endpoint)
    check_query(flask_request.environ.get("QUERY_STRING", ""))
    return FormRequest(
        flask_request.method, uri, flask_request.headers, parse_form_body(), endpoint
    )


def check_query(query: str) -> None:
    """Refuse client credentials in the URL query (RFC 6749 §2.3.1).

    Only the names are looked at; the values are never read, kept or logged.

    :raise InvalidRequestError: a credential parameter is in the query.
    """
    if not query:
        return
    try:
        names = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    except ValueError:
        return  # a query this odd holds no parameter we would read
    if names & CREDENTIAL_PARAMETERS:
        raise InvalidRequestError("Client credentials must not be sent in the URL query.")


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """Decode an x-www-form-urlencoded body strictly as UTF-8.

    :raise InvalidRequestError: bad encoding, a NUL, more than MAX_FIELDS
        fields, or a repeated parameter other than "resource".
    """
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=MAX_FIELDS,
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


def claimed_client_id(request: FormRequest) -> str | None:
    """The client id a token, introspection or revocation request claims, unverified.

    One reader for the failure limits (app.oauth.throttle) and the failure
    log line (app.oauth.client_auth), so both name the same client.
    """
    data = request.payload.data
    header = request.headers.get("Authorization")
    if header:
        credentials = parse_basic_credentials(header)
        return credentials[0] if credentials else None
    assertion = data.get("client_assertion")
    if assertion:
        # Only to name the counter: the assertion is verified elsewhere.
        parsed = jose.parse(assertion, jose.MAX_TOKEN_LENGTH)
        claims = parsed.claims if parsed is not None else {}
        named = data.get("client_id")
        if named and claims.get("iss") != named:
            # A federated assertion (docs/api.md §1.3): its sub names the
            # workload, and the client is the one client_id names.
            return named
        subject = claims.get("sub")
        if isinstance(subject, str) and subject:
            return subject
    client_id = data.get("client_id")
    return client_id or None
