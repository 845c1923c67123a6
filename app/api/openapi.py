"""The OpenAPI 3.1 description of this server (contract 2.6) and the JSON Schemas behind it.

Request-body schemas are declared once here: the secret views validate their
bodies with `parse_body`, which reads these very schemas, and the test suite
validates real responses of every endpoint against the document, so the
document cannot drift from the views unnoticed.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import current_app, jsonify

from app.api import bp
from app.api import schemas as client_rules
from app.clients import keys as client_keys
from app.errors import ValidationError

OPENAPI_VERSION = "3.1.0"

# RFC 3339 UTC with a Z suffix, as the contract writes every time.
TIME = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$",
}
TIME_OR_NULL = {**TIME, "type": ["string", "null"]}
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ACCOUNT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
AUDIT_ACTIONS = [
    "client.created",
    "client.updated",
    "client.deleted",
    "secret.created",
    "secret.rotated",
    "secret.deleted",
    "key.created",
    "key.deleted",
    "signing_key.rotated",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict, required: list[str] | None = None, **extra: Any) -> dict:
    """A closed object schema (additionalProperties false)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


# --- Clients (2.1) -----------------------------------------------------------

# Limits come from app.api.schemas, which validates client bodies, so the two agree.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
_CLIENT_MUTABLE: dict[str, dict] = {
    "name": {"type": "string", "pattern": NAME_PATTERN},
    "friendly_name": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": _NO_CONTROL,
        "description": "Defaults to name.",
    },
    "description": {"type": ["string", "null"], "maxLength": 2000},
    "tags": {
        "type": "array",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": client_rules.MAX_TAG_LENGTH,
            "pattern": _NO_CONTROL,
        },
        "maxItems": client_rules.MAX_TAGS,
        "uniqueItems": True,
    },
    "client_type": {"type": "string", "enum": ["standard", "admin"]},
    "owner": {"type": ["string", "null"], "minLength": 1, "maxLength": 254, "pattern": _NO_CONTROL},
    "scopes": {
        "type": "array",
        "items": {"type": "string", "pattern": client_rules.SCOPE_TOKEN_RE.pattern},
        "maxItems": client_rules.MAX_SCOPES,
        "uniqueItems": True,
        "description": "Management scopes only for admin clients (keys:* only in system).",
    },
    "audiences": {
        "type": "array",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": client_rules.MAX_AUDIENCE_LENGTH,
            "pattern": r"^[^\x00-\x20\x7f]*$",
        },
        "maxItems": client_rules.MAX_AUDIENCES,
        "uniqueItems": True,
    },
    "access_token_ttl": {
        "type": "integer",
        "minimum": client_rules.MIN_TTL,
        "maximum": client_rules.MAX_TTL,
    },
    "locked": {"type": "boolean"},
    "disabled": {"type": "boolean"},
}
_CLIENT_READ_ONLY: dict[str, dict] = {
    "id": {"type": "string", "readOnly": True},
    "account_id": {"type": "string", "readOnly": True},
    "created_at": {**TIME, "readOnly": True},
    "updated_at": {**TIME, "readOnly": True},
}
CLIENT_FIELDS = [
    "id",
    "account_id",
    *client_rules.MUTABLE_CLIENT_FIELDS,
    "created_at",
    "updated_at",
]
_client_props = {**_CLIENT_MUTABLE, **_CLIENT_READ_ONLY}
_CLIENT = _obj({f: _client_props[f] for f in CLIENT_FIELDS}, required=CLIENT_FIELDS)

# --- Secrets (2.2) -------------------------------------------------------------

MAX_EXPIRES_IN = 365 * 24 * 3600
MAX_GRACE_PERIOD = 30 * 24 * 3600
SECRET_FIELDS = ["id", "description", "hint", "created_at", "expires_at", "last_used_at"]
_SECRET_PROPS = {
    "id": {"type": "string"},
    "description": {"type": ["string", "null"], "maxLength": 200},
    "hint": {"type": "string", "minLength": 4, "maxLength": 4, "description": "Last 4 characters."},
    "created_at": TIME,
    "expires_at": {**TIME_OR_NULL, "description": "null: never expires."},
    "last_used_at": {
        **TIME_OR_NULL,
        "description": "Last successful authentication, written at most every "
        "LAST_USED_RESOLUTION seconds (default 60).",
    },
}
_NEW_SECRET_VALUE = {
    "type": "string",
    "pattern": "^ccs_[A-Za-z0-9_-]{43,}$",
    "description": "The plaintext secret; shown in this response only.",
}

# --- Keys (2.3) ------------------------------------------------------------------

_JWK = {
    "type": "object",
    "required": ["kty"],
    "properties": {"kty": {"type": "string"}, "kid": {"type": "string"}},
    "additionalProperties": True,
}
KEY_FIELDS = ["kid", "alg", "public_jwk", "created_at", "expires_at", "last_used_at"]
_KEY_PROPS = {
    "kid": {"type": "string"},
    "alg": {"type": "string"},
    "public_jwk": _ref("PublicJWK"),
    "created_at": TIME,
    "expires_at": TIME_OR_NULL,
    "last_used_at": TIME_OR_NULL,
}

# --- Components -----------------------------------------------------------------------

SCHEMAS: dict[str, dict] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": {"type": "string", "description": "Machine-readable, e.g. client_locked."},
            "errors": {
                "type": "array",
                "items": _obj(
                    {"field": {"type": "string"}, "message": {"type": "string"}},
                    required=["field", "message"],
                ),
            },
        },
        "additionalProperties": False,
    },
    "OAuthError": {
        "type": "object",
        "description": "RFC 6749 section 5.2 error response.",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "error_description": {"type": "string"},
            "error_uri": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "Client": _CLIENT,
    "NewClient": _obj(
        {
            **_CLIENT["properties"],
            "client_secret": _NEW_SECRET_VALUE,
            "secret_id": {"type": "string"},
        },
        required=[*CLIENT_FIELDS, "client_secret", "secret_id"],
    ),
    "ClientCreate": _obj(
        {
            **_CLIENT_MUTABLE,
            "account_id": {
                "type": "string",
                "pattern": ACCOUNT_PATTERN,
                "description": "System admins only; others create in their own account.",
            },
        },
        required=["name"],
    ),
    "ClientPatch": _obj(dict(_CLIENT_MUTABLE), minProperties=0),
    "ClientPut": _obj(
        dict(_CLIENT_MUTABLE),
        required=["name"],
        description="Every mutable field; an omitted optional field is reset to its default.",
    ),
    "ClientPage": _obj(
        {"data": {"type": "array", "items": _ref("Client")}, "next_cursor": _ref("Cursor")},
        required=["data", "next_cursor"],
    ),
    "Cursor": {"type": ["string", "null"], "description": "Opaque; null on the last page."},
    "Secret": _obj(dict(_SECRET_PROPS), required=SECRET_FIELDS),
    "NewSecret": _obj(
        {**_SECRET_PROPS, "secret": _NEW_SECRET_VALUE}, required=[*SECRET_FIELDS, "secret"]
    ),
    "SecretList": _obj({"data": {"type": "array", "items": _ref("Secret")}}, required=["data"]),
    "SecretCreate": _obj(
        {
            "description": {"type": ["string", "null"], "maxLength": 200},
            "expires_in": {
                "type": ["integer", "null"],
                "minimum": 60,
                "maximum": MAX_EXPIRES_IN,
                "description": "Seconds until the secret expires; omitted or null: never.",
            },
        }
    ),
    "SecretRotate": _obj(
        {
            "grace_period": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_GRACE_PERIOD,
                "default": 0,
                "description": "Seconds the other active secrets keep working.",
            }
        }
    ),
    "PublicJWK": _JWK,
    "Key": _obj(dict(_KEY_PROPS), required=KEY_FIELDS),
    "NewKey": _obj(
        {
            **_KEY_PROPS,
            "private_jwk": {**_JWK, "description": "Only when the server made the key pair."},
            "private_key_pem": {"type": "string", "description": "Shown this once."},
        },
        required=KEY_FIELDS,
    ),
    "KeyList": _obj({"data": {"type": "array", "items": _ref("Key")}}, required=["data"]),
    "KeyCreate": _obj(
        {
            "public_jwk": _ref("PublicJWK"),
            "expires_in": {
                "type": ["integer", "null"],
                "minimum": client_keys.MIN_EXPIRES_IN,
                "maximum": client_keys.MAX_EXPIRES_IN,
            },
        },
        description="With public_jwk: register it. Empty: the server makes an Ed25519 pair.",
    ),
    "SigningKey": _obj(
        {
            "kid": {"type": "string"},
            "alg": {"type": "string", "enum": ["ES256", "RS256", "PS256", "EdDSA"]},
            "status": {"type": "string", "enum": ["next", "current", "retired"]},
            "created_at": TIME,
            "activated_at": TIME_OR_NULL,
            "retires_at": TIME_OR_NULL,
        },
        required=["kid", "alg", "status", "created_at", "activated_at", "retires_at"],
    ),
    "SigningKeyRotate": _obj({}, description="No fields; the body may be empty."),
    "SigningKeyList": _obj(
        {"data": {"type": "array", "items": _ref("SigningKey")}}, required=["data"]
    ),
    "AuditEvent": _obj(
        {
            "id": {"type": ["string", "integer"]},
            "at": TIME,
            "actor": {"type": "string", "description": "Acting client id, or cli."},
            "action": {"type": "string", "enum": AUDIT_ACTIONS},
            "target": {"type": "string"},
            "account_id": {"type": "string"},
        },
        required=["id", "at", "actor", "action", "target", "account_id"],
    ),
    "AuditPage": _obj(
        {"data": {"type": "array", "items": _ref("AuditEvent")}, "next_cursor": _ref("Cursor")},
        required=["data", "next_cursor"],
    ),
    "TokenResponse": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string", "description": "RFC 9068 JWT."},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer"},
            "scope": {"type": "string"},
        },
    },
    "Introspection": {
        "type": "object",
        "required": ["active"],
        "properties": {
            "active": {"type": "boolean"},
            "scope": {"type": "string"},
            "client_id": {"type": "string"},
            "sub": {"type": "string"},
            "aud": {"type": ["string", "array"]},
            "iss": {"type": "string"},
            "exp": {"type": "integer"},
            "iat": {"type": "integer"},
            "nbf": {"type": "integer"},
            "jti": {"type": "string"},
            "token_type": {"type": "string"},
            "account_id": {"type": "string"},
        },
        "additionalProperties": True,
    },
    "JWKS": {
        "type": "object",
        "required": ["keys"],
        "properties": {
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kid", "kty", "alg", "use"],
                    "properties": {
                        "kid": {"type": "string"},
                        "kty": {"type": "string"},
                        "alg": {"type": "string"},
                        "use": {"const": "sig"},
                    },
                    # Private members must never appear (RFC 7517 section 4 and 6).
                    "not": {
                        "anyOf": [
                            {"required": ["d"]},
                            {"required": ["p"]},
                            {"required": ["q"]},
                            {"required": ["dp"]},
                            {"required": ["dq"]},
                            {"required": ["qi"]},
                        ]
                    },
                },
            }
        },
    },
    "ServerMetadata": {
        "type": "object",
        "description": "RFC 8414 authorization server metadata.",
        "required": [
            "issuer",
            "token_endpoint",
            "jwks_uri",
            "grant_types_supported",
            "token_endpoint_auth_methods_supported",
            "token_endpoint_auth_signing_alg_values_supported",
            "introspection_endpoint",
            "revocation_endpoint",
            "scopes_supported",
            "response_types_supported",
        ],
        "additionalProperties": True,
    },
    "Health": {"type": "object", "required": ["status"], "additionalProperties": True},
    "TokenRequest": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"const": "client_credentials"},
            "scope": {"type": "string"},
            "resource": {"type": "string", "description": "RFC 8707; may repeat."},
            "audience": {"type": "string"},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
            "client_assertion_type": {
                "const": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            },
            "client_assertion": {"type": "string"},
        },
    },
    "TokenParameter": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string"},
            "token_type_hint": {"type": "string"},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
            "client_assertion_type": {"type": "string"},
            "client_assertion": {"type": "string"},
        },
    },
}

# --- Responses ---------------------------------------------------------------------------

_PROBLEM_JSON = "application/problem+json"
_DESCRIPTIONS = {
    400: "Invalid request: bad JSON, wrong field types, unknown or read-only fields (errors[]).",
    401: "Missing, invalid, expired or revoked access token.",
    403: "The token lacks the scope this call needs.",
    404: "No such resource in the caller's account.",
    405: "Method not allowed.",
    409: "Conflict: client_locked, name_taken, too_many_secrets or too_many_keys.",
    412: "If-Match no longer matches the client's ETag; nothing changed.",
    413: "Request body larger than 64 KiB.",
    415: "Request body is not application/json.",
    429: "Too many failed client authentications; see Retry-After.",
    503: "Database unavailable; retry later.",
}
_HEADER_SCHEMAS = {
    "WWW-Authenticate": {"schema": {"type": "string"}},
    "Retry-After": {"schema": {"type": "integer"}},
}
_REQUIRED = {name: {**spec, "required": True} for name, spec in _HEADER_SCHEMAS.items()}


def _problem(status: int) -> dict:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {_PROBLEM_JSON: {"schema": _ref("Problem")}},
    }
    if status in (401, 403):
        response["headers"] = {"WWW-Authenticate": _REQUIRED["WWW-Authenticate"]}
    if status == 503:
        response["headers"] = {"Retry-After": _HEADER_SCHEMAS["Retry-After"]}
    return response


def _oauth_error(status: int, description: str) -> dict:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref("OAuthError")}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": _HEADER_SCHEMAS["WWW-Authenticate"]}
    if status == 429:
        response["headers"] = {"Retry-After": _REQUIRED["Retry-After"]}
    if status == 503:
        response["headers"] = {"Retry-After": _HEADER_SCHEMAS["Retry-After"]}
    return response


def _json(description: str, schema: str, headers: dict | None = None) -> dict:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


_LOCATION = {
    "Location": {
        "schema": {"type": "string"},
        "required": True,
        "description": "URL of the new resource.",
    }
}
_ETAG = {"ETag": {"schema": {"type": "string"}, "required": True}}
_LINK = {"Link": {"schema": {"type": "string"}, "description": 'rel="next" while more pages.'}}
_NO_CONTENT = {"description": "Done; no body."}


def _api_op(
    op_id: str,
    summary: str,
    scope: str,
    ok: dict[str, dict],
    errors: list[int],
    *,
    body: str | None = None,
    body_required: bool = True,
    body_types: tuple[str, ...] = ("application/json",),
    tag: str,
    parameters: list[dict] | None = None,
) -> dict:
    """One management API operation: Bearer auth with `scope`, problem+json errors."""
    statuses = sorted({401, 403, 503, *errors, *([400, 413, 415] if body else [])})
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "security": [{"oauth2": [scope]}],
        "responses": {**ok, **{str(s): _problem(s) for s in statuses}},
    }
    if body:
        op["requestBody"] = {
            "required": body_required,
            "content": {media: {"schema": _ref(body)} for media in body_types},
        }
    if parameters:
        op["parameters"] = parameters
    return op


def _path_param(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def _query(name: str, schema: dict, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_CLIENT_ID = _path_param("client_id", "The client id.")
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "ETag from a GET; a mismatch is 412 and changes nothing.",
}
_PAGING = [
    _query(
        "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}, "Page size."
    ),
    _query("cursor", {"type": "string"}, "next_cursor of the previous page."),
]


def _oauth_post(op_id: str, summary: str, ok: dict, body: str, *, tag: str = "oauth") -> dict:
    return {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "security": [{"clientBasic": []}, {}],
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _ref(body)}},
        },
        "responses": {
            **ok,
            "400": _oauth_error(
                400, "invalid_request, unsupported_grant_type, invalid_scope, invalid_target."
            ),
            "401": _oauth_error(401, "invalid_client: authentication failed."),
            "413": _oauth_error(413, "Request body larger than 64 KiB."),
            "429": _oauth_error(429, "Too many failed authentications; see Retry-After."),
            "503": _oauth_error(503, "Temporarily unavailable."),
        },
    }


def _paths() -> dict[str, dict]:
    no_store = {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}}
    client_id = [_CLIENT_ID]
    return {
        "/oauth2/token": {
            "post": _oauth_post(
                "issueToken",
                "RFC 6749 section 4.4: client credentials grant.",
                {"200": _json("An access token (RFC 9068 JWT).", "TokenResponse", no_store)},
                "TokenRequest",
            )
        },
        "/oauth2/introspect": {
            "post": _oauth_post(
                "introspectToken",
                "RFC 7662 token introspection.",
                {"200": _json("active true with claims, or active false.", "Introspection")},
                "TokenParameter",
            )
        },
        "/oauth2/revoke": {
            "post": _oauth_post(
                "revokeToken",
                "RFC 7009 token revocation of the caller's own tokens.",
                {"200": {"description": "Revoked, or nothing to revoke."}},
                "TokenParameter",
            )
        },
        "/.well-known/jwks.json": {
            "get": {
                "operationId": "getJwks",
                "summary": "Public signing keys (RFC 7517).",
                "tags": ["discovery"],
                "security": [],
                "responses": {
                    "200": _json(
                        "Published keys.",
                        "JWKS",
                        {**_ETAG, "Cache-Control": {"schema": {"type": "string"}}},
                    ),
                    "304": {"description": "If-None-Match matched the ETag."},
                    "503": _problem(503),
                },
            }
        },
        "/.well-known/oauth-authorization-server": {
            "get": {
                "operationId": "getServerMetadata",
                "summary": "RFC 8414 metadata.",
                "tags": ["discovery"],
                "security": [],
                "responses": {"200": _json("Metadata.", "ServerMetadata")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness.",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": _json("The process is up.", "Health")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: database answers and a signing key is loaded.",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": _json("Ready.", "Health"),
                    "503": _json("Not ready.", "Health"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text exposition.",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/docs": {
            "get": {
                "operationId": "getDocs",
                "summary": "Swagger UI over this document.",
                "tags": ["discovery"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document (no token needed).",
                "tags": ["discovery"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/api/v1/clients": {
            "get": _api_op(
                "listClients",
                "List clients, paged (keyset), newest last.",
                "clients:read",
                {"200": _json("A page of clients.", "ClientPage", _LINK)},
                [400],
                tag="clients",
                parameters=[
                    *_PAGING,
                    _query("tag", {"type": "string"}, "Only clients with this tag."),
                    _query(
                        "client_type",
                        {"type": "string", "enum": ["standard", "admin"]},
                        "Only this type.",
                    ),
                    _query("name_prefix", {"type": "string"}, "Names starting with this."),
                    _query(
                        "account_id",
                        {"type": "string"},
                        "System admins only: one account's clients.",
                    ),
                ],
            ),
            "post": _api_op(
                "createClient",
                "Create a client; its first secret is shown once.",
                "clients:write",
                {"201": _json("Created.", "NewClient", {**_LOCATION, **_ETAG})},
                [409],
                body="ClientCreate",
                tag="clients",
            ),
        },
        "/api/v1/clients/{client_id}": {
            "parameters": client_id,
            "get": _api_op(
                "getClient",
                "One client.",
                "clients:read",
                {"200": _json("The client.", "Client", _ETAG)},
                [404],
                tag="clients",
            ),
            "patch": _api_op(
                "patchClient",
                "Change some fields.",
                "clients:write",
                {"200": _json("The changed client.", "Client", _ETAG)},
                [404, 409, 412],
                body="ClientPatch",
                body_types=("application/json", "application/merge-patch+json"),
                tag="clients",
                parameters=[_IF_MATCH],
            ),
            "put": _api_op(
                "replaceClient",
                "Replace every mutable field.",
                "clients:write",
                {"200": _json("The replaced client.", "Client", _ETAG)},
                [404, 409, 412],
                body="ClientPut",
                tag="clients",
                parameters=[_IF_MATCH],
            ),
            "delete": _api_op(
                "deleteClient",
                "Delete a client; its secrets, keys and tokens stop working.",
                "clients:write",
                {"204": _NO_CONTENT},
                [404, 409, 412],
                tag="clients",
                parameters=[_IF_MATCH],
            ),
        },
        "/api/v1/clients/{client_id}/secrets": {
            "parameters": client_id,
            "get": _api_op(
                "listClientSecrets",
                "Every secret of the client, expired ones included; never the secret.",
                "clients:read",
                {"200": _json("The secrets, oldest first.", "SecretList")},
                [404],
                tag="secrets",
            ),
            "post": _api_op(
                "createClientSecret",
                "Add a secret (at most 5 active); the secret is shown once.",
                "clients:write",
                {"201": _json("Created.", "NewSecret", _LOCATION)},
                [404, 409],
                body="SecretCreate",
                body_required=False,
                tag="secrets",
            ),
        },
        "/api/v1/clients/{client_id}/secrets/rotate": {
            "parameters": client_id,
            "post": _api_op(
                "rotateClientSecret",
                "New secret; the other active ones expire after grace_period seconds.",
                "clients:write",
                {"201": _json("The new secret, shown once.", "NewSecret", _LOCATION)},
                [404, 409],
                body="SecretRotate",
                body_required=False,
                tag="secrets",
            ),
        },
        "/api/v1/clients/{client_id}/secrets/{secret_id}": {
            "parameters": [*client_id, _path_param("secret_id", "The secret id.")],
            "get": _api_op(
                "getClientSecret",
                "One secret's metadata; never the secret.",
                "clients:read",
                {"200": _json("The secret.", "Secret")},
                [404],
                tag="secrets",
            ),
            "delete": _api_op(
                "deleteClientSecret",
                "Delete a secret; it stops working at once.",
                "clients:write",
                {"204": _NO_CONTENT},
                [404, 409],
                tag="secrets",
            ),
        },
        "/api/v1/clients/{client_id}/keys": {
            "parameters": client_id,
            "get": _api_op(
                "listClientKeys",
                "The client's public keys for private_key_jwt.",
                "clients:read",
                {"200": _json("The keys.", "KeyList")},
                [404],
                tag="keys",
            ),
            "post": _api_op(
                "createClientKey",
                "Register a public key, or have the server make an Ed25519 pair.",
                "clients:write",
                {"201": _json("Created.", "NewKey")},
                [404, 409],
                body="KeyCreate",
                body_required=False,
                tag="keys",
            ),
        },
        "/api/v1/clients/{client_id}/keys/{kid}": {
            "parameters": [*client_id, _path_param("kid", "The key id.")],
            "delete": _api_op(
                "deleteClientKey",
                "Delete a key; it stops working at once.",
                "clients:write",
                {"204": _NO_CONTENT},
                [404, 409],
                tag="keys",
            ),
        },
        "/api/v1/signing-keys": {
            "get": _api_op(
                "listSigningKeys",
                "The server's signing keys (system account); never private material.",
                "keys:read",
                {"200": _json("The keys.", "SigningKeyList")},
                [],
                tag="signing-keys",
            ),
        },
        "/api/v1/signing-keys/rotate": {
            "post": _api_op(
                "rotateSigningKeys",
                "next becomes current, a new next is made, current is retired.",
                "keys:write",
                {"200": _json("The signing keys after rotation.", "SigningKeyList")},
                [409],
                body="SigningKeyRotate",
                body_required=False,
                tag="signing-keys",
            ),
        },
        "/api/v1/audit-events": {
            "get": _api_op(
                "listAuditEvents",
                "The audit log, newest first, paged like clients.",
                "audit:read",
                {"200": _json("A page of events.", "AuditPage", _LINK)},
                [400],
                tag="audit",
                parameters=[
                    *_PAGING,
                    _query(
                        "account_id",
                        {"type": "string"},
                        "System admins only: one account's events.",
                    ),
                ],
            ),
        },
    }


def build_document(issuer: str) -> dict:
    """The OpenAPI 3.1 document for a server at `issuer`."""
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "OAuth2 client-credentials authorization server",
            "version": "1.0.0",
            "description": "Token endpoint (RFC 6749 section 4.4), management API "
            "(/api/v1), JWKS and metadata. Management calls need a Bearer token "
            "from this server with the management audience and the listed scope.",
        },
        "servers": [{"url": issuer}],
        "tags": [
            {"name": name}
            for name in (
                "oauth",
                "discovery",
                "operations",
                "clients",
                "secrets",
                "keys",
                "signing-keys",
                "audit",
            )
        ],
        "paths": _paths(),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "oauth2": {
                    "type": "oauth2",
                    "description": "Bearer access token from this server's token endpoint.",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": f"{issuer}/oauth2/token",
                            "scopes": {
                                "clients:read": "Read clients, their secrets and keys.",
                                "clients:write": "Change clients, their secrets and keys.",
                                "keys:read": "Read signing keys (system account).",
                                "keys:write": "Rotate signing keys (system account).",
                                "audit:read": "Read the audit log.",
                            },
                        }
                    },
                },
                "clientBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "client_secret_basic; client_secret_post and "
                    "private_key_jwt go in the form body instead.",
                },
            },
        },
    }


@bp.get("/openapi.json")
def get_openapi():
    """The OpenAPI 3.1 document; public, no token needed."""
    response = jsonify(build_document(current_app.config["ISSUER"]))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# --- Request bodies validated against the schemas above ---------------------------------


def parse_body(schema_name: str, *, allow_empty: bool = False) -> dict[str, Any]:
    """The JSON object body of this request, validated against SCHEMAS[schema_name].

    :raise UnsupportedMediaType: a body that is not application/json (415).
    :raise BadRequest: malformed JSON or not an object (400).
    :raise ValidationError: fields that break the schema, unknown or read-only ones (400).
    """
    body = client_rules.json_body(optional=allow_empty)
    errors = check(SCHEMAS[schema_name], body, "")
    if errors:
        raise ValidationError(errors)
    return body


_JSON_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    # JSON true is not a number, and neither is 1.0 an integer for our fields.
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def check(schema: dict, value: Any, field: str) -> list[dict[str, str]]:
    """Errors of `value` against the subset of JSON Schema these request schemas use."""
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_JSON_TYPES[name](value) for name in names):
            return [{"field": field or "body", "message": f"must be {' or '.join(names)}"}]
    if "const" in schema and value != schema["const"]:
        return [{"field": field, "message": f"must be {schema['const']!r}"}]
    if "enum" in schema and value not in schema["enum"]:
        return [{"field": field, "message": "must be one of " + ", ".join(schema["enum"])}]
    errors: list[dict[str, str]] = []
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            errors.append({"field": field, "message": f"at most {schema['maxLength']} characters"})
        if len(value) < schema.get("minLength", 0):
            errors.append({"field": field, "message": f"at least {schema['minLength']} characters"})
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append({"field": field, "message": f"must match {schema['pattern']}"})
    elif _JSON_TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append({"field": field, "message": f"must be at least {schema['minimum']}"})
        if "maximum" in schema and value > schema["maximum"]:
            errors.append({"field": field, "message": f"must be at most {schema['maximum']}"})
    elif isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            errors.append({"field": field, "message": f"at most {schema['maxItems']} items"})
        for index, item in enumerate(value):
            errors += check(schema.get("items", {}), item, f"{field}[{index}]")
    elif isinstance(value, dict):
        properties = schema.get("properties", {})
        prefix = f"{field}." if field else ""
        for name in schema.get("required", []):
            if name not in value:
                errors.append({"field": prefix + name, "message": "is required"})
        for name, item in value.items():
            if name in properties:
                errors += check(properties[name], item, prefix + name)
            elif schema.get("additionalProperties", True) is False:
                errors.append({"field": prefix + name, "message": "unknown or read-only field"})
    return errors
