"""The OpenAPI 3.1 document of this server, generated from app/api/schemas.py.

The management API's paths, bodies, query parameters and responses come from
the views' `operation` declarations and the pydantic types they name, so the
document describes what the views really parse and return. Only the /oauth2
form endpoints (RFC 6749, 7662, 7009) and the discovery and operations routes
outside /api/v1 are described here by hand. This module serves the document
and is on no other request's path.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal

from flask import Flask, current_app, jsonify
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from app.api import bp
from app.api import schemas as s
from app.clients.service import MANAGEMENT_SCOPES

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"

#: Every schema type of the document: request types validate, response types serialize.
COMPONENTS: tuple[Any, ...] = (
    s.Problem,
    s.Client,
    s.NewClient,
    s.ClientCreate,
    s.ClientPatch,
    s.ClientPut,
    s.ClientPage,
    s.ResourceServer,
    s.ResourceServerCreate,
    s.ResourceServerPatch,
    s.ResourceServerPut,
    s.ResourceServerPage,
    s.Secret,
    s.NewSecret,
    s.RotatedSecret,
    s.SecretList,
    s.SecretCreate,
    s.SecretRotate,
    s.PublicJWK,
    s.Key,
    s.NewKey,
    s.KeyList,
    s.KeyCreate,
    s.FederatedCredential,
    s.FederatedCredentialList,
    s.FederatedCredentialCreate,
    s.FederatedCredentialTest,
    s.FederatedTestResult,
    s.SigningKey,
    s.SigningKeyList,
    s.SigningKeyRotate,
    s.AuditEvent,
    s.AuditPage,
    s.JWKS,
    s.ServerMetadata,
    s.Health,
)

# The /oauth2 endpoints take forms and answer RFC 6749 JSON: described by hand.
OAUTH_SCHEMAS: dict[str, dict] = {
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


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema without per-field titles or a response field's null default."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        # An optional response member is omitted, never null (exclude_if in the models).
        if self.mode == "serialization" and schema.get("default", ...) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)


def _name(schema_type: Any) -> str:
    return schema_type.__name__


def _mode(schema_type: Any) -> Literal["validation", "serialization"]:
    response = isinstance(schema_type, type) and issubclass(schema_type, BaseModel)
    return "serialization" if response else "validation"


def _generated_schemas() -> dict[str, dict]:
    inputs = [(_name(t), _mode(t), s.adapter(t)) for t in COMPONENTS]
    _, defs = TypeAdapter.json_schemas(inputs, ref_template=REF, schema_generator=_Generator)
    return defs["$defs"]


SCHEMAS: dict[str, dict] = {**_generated_schemas(), **OAUTH_SCHEMAS}

# --- Responses ---------------------------------------------------------------------------------

_PROBLEM_JSON = "application/problem+json"
_DESCRIPTIONS = {
    400: "Invalid request: bad JSON, wrong field types, unknown or read-only fields (errors[]).",
    401: "Missing, invalid, expired or revoked access token.",
    403: (
        "insufficient_scope: the token lacks the scope this call needs; "
        "insufficient_privilege: the client holds a management scope the caller lacks."
    ),
    404: "No such resource in the caller's account.",
    405: "Method not allowed.",
    409: (
        "Conflict: client_locked, name_taken, too_many_secrets, too_many_keys "
        "or too_many_credentials."
    ),
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
#: Response headers an operation may name in its `headers`.
RESPONSE_HEADERS = {
    "Location": {
        "schema": {"type": "string"},
        "required": True,
        "description": "URL of the new resource.",
    },
    "ETag": {"schema": {"type": "string"}, "required": True},
    "Link": {"schema": {"type": "string"}, "description": 'rel="next" while more pages.'},
    "Cache-Control": {"schema": {"type": "string"}},
}
_PATH_PARAMETERS = {
    "client_id": "The client id.",
    "secret_id": "The secret id.",
    "kid": "The key id.",
    "credential_id": "The federated credential id.",
    "resource_server_id": "The resource server id.",
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "ETag from a GET; a mismatch is 412 and changes nothing.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _problem(status: int) -> dict:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {_PROBLEM_JSON: {"schema": _ref("Problem")}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": _REQUIRED["WWW-Authenticate"]}
    if status == 403:
        # RFC 6750 §3.1: a challenge only for insufficient_scope; insufficient_privilege
        # (the target client) and a shared resource server (docs/api.md §2.7) have none.
        response["headers"] = {"WWW-Authenticate": _HEADER_SCHEMAS["WWW-Authenticate"]}
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


# --- Management API operations, from the views ----------------------------------------------------


def openapi_path(rule: str) -> str:
    """Flask's /clients/<client_id> as OpenAPI's /clients/{client_id}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _query_parameters(query: Any) -> list[dict]:
    schema = s.adapter(query).json_schema(ref_template=REF, schema_generator=_Generator)
    parameters = []
    for name, spec in schema["properties"].items():
        spec = dict(spec)
        description = spec.pop("description", None)
        parameter = {"name": name, "in": "query", "required": False, "schema": spec}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _api_operation(path: str, view: Any, op: s.Operation) -> dict:
    """One management call: Bearer auth with the view's scope, problem+json errors."""
    scope = view.required_scope
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": _PATH_PARAMETERS[name],
        }
        for name in re.findall(r"{([^}]+)}", path)
    ]
    statuses = {401, 403, 503, *op.errors}
    if parameters:
        statuses.add(404)
    if op.body is not None:
        statuses |= {400, 413, 415}
    if op.query is not None:
        statuses.add(400)
        parameters += _query_parameters(op.query)
    if op.if_match:
        parameters.append(_IF_MATCH)
        statuses.add(412)
    success: dict[str, Any] = {"description": op.description or "Done; no body."}
    if op.response is not None:
        success["content"] = {"application/json": {"schema": _ref(_name(op.response))}}
    if op.headers:
        success["headers"] = {name: RESPONSE_HEADERS[name] for name in op.headers}
    summary = (view.__doc__ or "").strip().splitlines()[0]
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": summary,
        "tags": [op.tag],
        "security": [{"oauth2": [scope]}],
        "responses": {
            str(op.status): success,
            **{str(status): _problem(status) for status in sorted(statuses)},
        },
    }
    if op.body is not None:
        operation["requestBody"] = {
            "required": not op.body_optional,
            "content": {media: {"schema": _ref(_name(op.body))} for media in op.body_types},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


def _api_paths(app: Flask) -> dict[str, dict]:
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        op = getattr(view, "operation", None)
        if op is None:
            continue
        path = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _api_operation(path, view, op)
    return paths


# --- Everything else, by hand ------------------------------------------------------------------


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


def _public_get(op_id: str, summary: str, tag: str, responses: dict) -> dict:
    return {
        "get": {
            "operationId": op_id,
            "summary": summary,
            "tags": [tag],
            "security": [],
            "responses": responses,
        }
    }


def _other_paths() -> dict[str, dict]:
    no_store = {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}}
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
        "/.well-known/jwks.json": _public_get(
            "getJwks",
            "Public signing keys (RFC 7517).",
            "discovery",
            {
                "200": _json(
                    "Published keys.",
                    "JWKS",
                    {
                        "ETag": RESPONSE_HEADERS["ETag"],
                        "Cache-Control": {"schema": {"type": "string"}},
                    },
                ),
                "304": {"description": "If-None-Match matched the ETag."},
                "503": _problem(503),
            },
        ),
        "/.well-known/oauth-authorization-server": _public_get(
            "getServerMetadata",
            "RFC 8414 metadata.",
            "discovery",
            {"200": _json("Metadata.", "ServerMetadata")},
        ),
        "/healthz": _public_get(
            "healthz", "Liveness.", "operations", {"200": _json("The process is up.", "Health")}
        ),
        "/readyz": _public_get(
            "readyz",
            "Readiness: database answers and a signing key is loaded.",
            "operations",
            {"200": _json("Ready.", "Health"), "503": _json("Not ready.", "Health")},
        ),
        "/metrics": _public_get(
            "metrics",
            "Prometheus text exposition.",
            "operations",
            {
                "200": {
                    "description": "Metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": {"description": "METRICS_TOKEN is set and the Bearer token is not it."},
            },
        ),
        "/": _public_get(
            "getRoot",
            "The server's address leads to the console.",
            "discovery",
            {
                "302": {
                    "description": "To /console/.",
                    "headers": {"Location": {"schema": {"type": "string", "const": "/console/"}}},
                }
            },
        ),
        "/docs": _public_get(
            "getDocs",
            "Swagger UI over this document.",
            "discovery",
            {
                "200": {
                    "description": "HTML page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        ),
        "/api/v1/openapi.json": _public_get(
            "getOpenApi",
            "This document (no token needed).",
            "discovery",
            {
                "200": {
                    "description": "OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        ),
    }


_SCOPE_DESCRIPTIONS = {
    "clients:read": "Read clients, their secrets, keys and federated credentials.",
    "clients:write": "Change clients, their secrets, keys and federated credentials.",
    "keys:read": "Read signing keys (system account).",
    "keys:write": "Rotate signing keys (system account).",
    "audit:read": "Read the audit log.",
}


def build_document(app: Flask) -> dict:
    """The OpenAPI 3.1 document of `app` at its ISSUER."""
    issuer = app.config["ISSUER"]
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
                "federated-credentials",
                "resource-servers",
                "signing-keys",
                "audit",
            )
        ],
        "paths": {**_other_paths(), **_api_paths(app)},
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "oauth2": {
                    "type": "oauth2",
                    "description": "Bearer access token from this server's token endpoint.",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": f"{issuer}/oauth2/token",
                            "scopes": {s: _SCOPE_DESCRIPTIONS[s] for s in MANAGEMENT_SCOPES},
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
    response = jsonify(build_document(current_app._get_current_object()))  # type: ignore[attr-defined]
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
