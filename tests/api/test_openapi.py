"""Integration: /api/v1/openapi.json describes the server as it really answers.

Every response of a scenario that calls every endpoint (successes and the
4xx each can return) is recorded by an after_request hook and validated
against the document: the status must be documented for that operation, the
media type must match and the body must validate against the schema.
"""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import quote, urlsplit

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app.api import schemas as client_rules
from app.api.openapi import SCHEMAS
from tests.conftest import basic_auth
from tests.oauth.federation import Issuer, credential_body

API = "/api/v1"
DOC_URI = "urn:ccserver:openapi"
METHODS = ("get", "post", "put", "patch", "delete")
# Browser pages and their files (Swagger UI, the admin console), not API operations.
UNDOCUMENTED_PREFIXES = ("/static/", "/docs/", "/console/")
CONTRACT_OPERATIONS = {
    ("post", "/oauth2/token"),
    ("post", "/oauth2/introspect"),
    ("post", "/oauth2/revoke"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/.well-known/oauth-authorization-server"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("post", "/api/v1/clients"),
    ("get", "/api/v1/clients"),
    ("get", "/api/v1/clients/{client_id}"),
    ("patch", "/api/v1/clients/{client_id}"),
    ("put", "/api/v1/clients/{client_id}"),
    ("delete", "/api/v1/clients/{client_id}"),
    ("get", "/api/v1/clients/{client_id}/secrets"),
    ("post", "/api/v1/clients/{client_id}/secrets"),
    ("post", "/api/v1/clients/{client_id}/secrets/rotate"),
    ("delete", "/api/v1/clients/{client_id}/secrets/{secret_id}"),
    ("post", "/api/v1/clients/{client_id}/keys"),
    ("get", "/api/v1/clients/{client_id}/keys"),
    ("delete", "/api/v1/clients/{client_id}/keys/{kid}"),
    ("get", "/api/v1/clients/{client_id}/federated-credentials"),
    ("post", "/api/v1/clients/{client_id}/federated-credentials"),
    ("delete", "/api/v1/clients/{client_id}/federated-credentials/{credential_id}"),
    ("post", "/api/v1/clients/{client_id}/federated-credentials/test"),
    ("get", "/api/v1/signing-keys"),
    ("post", "/api/v1/signing-keys/rotate"),
    ("get", "/api/v1/audit-events"),
    ("post", "/api/v1/resource-servers"),
    ("get", "/api/v1/resource-servers"),
    ("get", "/api/v1/resource-servers/{resource_server_id}"),
    ("patch", "/api/v1/resource-servers/{resource_server_id}"),
    ("put", "/api/v1/resource-servers/{resource_server_id}"),
    ("delete", "/api/v1/resource-servers/{resource_server_id}"),
    ("get", "/api/v1/openapi.json"),
}


@pytest.fixture
def app_config(base_config, migrated) -> dict:
    # A low per-client failure limit so the scenario can show a real 429.
    return {**base_config, "AUTH_FAILURE_LIMIT_CLIENT": 3}


def openapi_path(rule: str) -> str:
    """Flask's /clients/<client_id> as OpenAPI's /clients/{client_id}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


@pytest.fixture
def recorded(app) -> list[dict]:
    """Every response the app sends during the test, with its matched route."""
    from flask import request

    records: list[dict] = []

    def record(response):
        rule = request.url_rule.rule if request.url_rule else None
        body = b"" if response.direct_passthrough else response.get_data()
        records.append(
            {
                "method": request.method.lower(),
                "path": openapi_path(rule) if rule else None,
                "url": request.full_path,
                "status": response.status_code,
                "mimetype": response.mimetype,
                "headers": dict(response.headers),
                "body": body,
            }
        )
        return response

    # Index 0 runs last, so the record holds the final headers.
    app.after_request_funcs.setdefault(None, []).insert(0, record)
    return records


@pytest.fixture
def document(client) -> dict:
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    return response.get_json()


class Checker:
    """Validates recorded responses against the OpenAPI document."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(DOC_URI, resource)

    def validator(self, schema: dict) -> Draft202012Validator:
        if "$ref" in schema and schema["$ref"].startswith("#"):
            schema = {"$ref": DOC_URI + schema["$ref"]}
        return Draft202012Validator(schema, registry=self.registry)

    def problems(self, rec: dict) -> list[str]:
        where = f"{rec['method'].upper()} {rec['url']} -> {rec['status']}"
        if rec["path"] is None:
            return []  # unrouted URLs (404/405 from werkzeug) are not operations
        operation = self.doc["paths"].get(rec["path"], {}).get(rec["method"])
        if operation is None:
            return [f"{where}: operation not documented"]
        spec = operation["responses"].get(str(rec["status"]))
        if spec is None:
            return [f"{where}: status not documented ({sorted(operation['responses'])})"]
        found = []
        for name, header in spec.get("headers", {}).items():
            if header.get("required") and name not in rec["headers"]:
                found.append(f"{where}: missing header {name}")
        content = spec.get("content")
        if not content:
            if rec["body"]:
                found.append(f"{where}: body where none is documented")
            return found
        if rec["mimetype"] not in content:
            return [*found, f"{where}: media type {rec['mimetype']} not in {sorted(content)}"]
        if rec["mimetype"].endswith("json"):
            body = json.loads(rec["body"])
            errors = sorted(
                self.validator(content[rec["mimetype"]]["schema"]).iter_errors(body), key=str
            )
            found += [f"{where}: {e.json_path}: {e.message}" for e in errors[:3]]
        return found


def test_document_is_openapi_31_without_a_token(client, document):
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": "http://localhost:5000"}]
    flows = document["components"]["securitySchemes"]["oauth2"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "http://localhost:5000/oauth2/token"
    response = client.get(f"{API}/openapi.json")
    assert response.mimetype == "application/json"


def test_every_schema_is_valid_and_every_ref_resolves(document):
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert name in SCHEMAS
    text = json.dumps(document)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in document["components"]["schemas"], ref
    operation_ids = [
        op["operationId"]
        for item in document["paths"].values()
        for method, op in item.items()
        if method in METHODS
    ]
    assert len(operation_ids) == len(set(operation_ids))


def test_every_route_is_documented_and_every_operation_routed(app, document):
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(UNDOCUMENTED_PREFIXES):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routed.add((method.lower(), openapi_path(rule.rule)))
    documented = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
    assert routed - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routed == set(), "documented operations the app does not serve"
    assert documented >= CONTRACT_OPERATIONS


def test_api_operations_document_the_error_statuses(document):
    """Every management call documents 401, 403 and 503; bodies add 400, 413 and 415."""
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            statuses = set(op["responses"])
            if path.startswith(API) and path != f"{API}/openapi.json":
                assert {"401", "403", "503"} <= statuses, (method, path)
                for status in ("401", "403"):
                    problem = op["responses"][status]["content"]["application/problem+json"]
                    assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
                if "{" in path:
                    assert "404" in statuses, (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= statuses, (method, path)
            if "requestBody" in op and path.startswith(API):
                assert "415" in statuses, (method, path)
            if path.startswith("/oauth2/"):
                assert {"400", "401", "413", "429", "503"} <= statuses, (method, path)
    clients = document["paths"][f"{API}/clients/{{client_id}}"]
    for method in ("patch", "put", "delete"):
        assert {"409", "412"} <= set(clients[method]["responses"])


def test_client_schemas_match_the_validation_rules(document):
    schemas = document["components"]["schemas"]
    mutable = set(client_rules.MUTABLE_CLIENT_FIELDS)
    read_only = set(client_rules.READ_ONLY_CLIENT_FIELDS)
    assert set(schemas["ClientPatch"]["properties"]) == mutable
    assert set(schemas["ClientPut"]["properties"]) == mutable
    assert set(schemas["ClientCreate"]["properties"]) == mutable | {"account_id", "create_secret"}
    assert set(schemas["Client"]["properties"]) == mutable | read_only
    for name in ("ClientCreate", "ClientPatch", "ClientPut", "SecretCreate", "SecretRotate"):
        assert schemas[name]["additionalProperties"] is False
    for field in read_only:
        assert schemas["Client"]["properties"][field]["readOnly"] is True


# (field, value, valid): the document and the API must agree on each.
FIELD_EXAMPLES = [
    ("name", "renamed_ok-1", True),
    ("name", "Upper", False),
    ("name", "x" * 64, False),
    ("name", "", False),
    ("name", 7, False),
    ("friendly_name", "ATM Monitor Reader ü", True),
    ("friendly_name", "", False),
    ("friendly_name", "x" * 201, False),
    ("friendly_name", "tab\there", False),
    ("friendly_name", None, False),
    ("description", None, True),
    ("description", "x" * 2000, True),
    ("description", "x" * 2001, False),
    ("description", 1, False),
    ("tags", [], True),
    ("tags", ["test", "prod"], True),
    ("tags", ["x" * 65], False),
    ("tags", [""], False),
    ("tags", ["a", "a"], False),
    ("tags", [f"t{i}" for i in range(21)], False),
    ("tags", "test", False),
    ("tags", [1], False),
    ("client_type", "standard", True),
    ("client_type", "admin", True),
    ("client_type", "root", False),
    ("owner", "ops@example.com", True),
    ("owner", None, True),
    ("owner", "", False),
    ("owner", "x" * 255, False),
    ("scopes", ["read", "write:all"], True),
    ("scopes", ["has space"], False),
    ("scopes", ['quo"te'], False),
    ("scopes", ["a", "a"], False),
    ("scopes", [f"s{i}" for i in range(101)], False),
    ("audiences", ["https://api.example.com"], True),
    ("audiences", ["has space"], False),
    ("audiences", ["x" * 1025], False),
    ("audiences", [f"https://a{i}" for i in range(21)], False),
    ("access_token_ttl", 60, True),
    ("access_token_ttl", 86400, True),
    ("access_token_ttl", 59, False),
    ("access_token_ttl", 86401, False),
    ("access_token_ttl", True, False),
    ("access_token_ttl", "3600", False),
    ("locked", True, True),
    ("disabled", False, True),
    ("locked", "true", False),
    ("disabled", 0, False),
    ("id", "mine", False),
    ("account_id", "other", False),
    ("created_at", "2026-01-01T00:00:00.000Z", False),
    ("updated_at", None, False),
    ("unknown", 1, False),
]


@pytest.mark.parametrize(("field", "value", "valid"), FIELD_EXAMPLES)
def test_document_and_api_agree_on_each_client_field(
    client, factory, document, field, value, valid
):
    checker = Checker(document)
    patch_schema = checker.validator({"$ref": "#/components/schemas/ClientPatch"})
    assert patch_schema.is_valid({field: value}) is valid
    factory.resource_server("acme", "https://api.example.com")
    admin = factory.admin_headers("acme")
    cid, _ = factory.client("acme")
    response = client.patch(f"{API}/clients/{cid}", json={field: value}, headers=admin)
    assert response.status_code == (200 if valid else 400), response.get_json()
    problems = checker.problems(
        {
            "method": "patch",
            "path": "/api/v1/clients/{client_id}",
            "url": f"/api/v1/clients/{cid}",
            "status": response.status_code,
            "mimetype": response.mimetype,
            "headers": dict(response.headers),
            "body": response.get_data(),
        }
    )
    assert problems == []


@pytest.mark.parametrize(
    ("schema", "body", "valid"),
    [
        ("SecretCreate", {}, True),
        ("SecretCreate", {"description": "ci", "expires_in": 60}, True),
        ("SecretCreate", {"expires_in": 59}, False),
        ("SecretCreate", {"expires_in": True}, False),
        ("SecretCreate", {"description": "x" * 201}, False),
        ("SecretCreate", {"secret": "ccs_x"}, False),
        ("SecretRotate", {"grace_period": 0}, True),
        ("SecretRotate", {"grace_period": 2592000}, True),
        ("SecretRotate", {"grace_period": 2592001}, False),
        ("SecretRotate", {"grace_period": False}, False),
    ],
)
def test_body_checker_agrees_with_jsonschema(document, schema, body, valid):
    """The views' validator (pydantic, app.api.schemas) agrees with jsonschema."""
    reference = Checker(document).validator({"$ref": f"#/components/schemas/{schema}"})
    assert reference.is_valid(body) is valid
    _, errors = client_rules.check(getattr(client_rules, schema), body)
    assert (errors == []) is valid


def test_real_responses_of_every_operation_match_the_document(
    app, client, factory, recorded, document
):
    system = factory.admin_headers("system")
    acme = factory.admin_headers("acme")
    reader = factory.admin_headers("acme", scopes=["clients:read"])
    missing = str(uuid.uuid4())

    # Discovery and operations.
    client.get(f"{API}/openapi.json")
    client.get("/healthz")
    client.get("/readyz")
    client.get("/metrics")
    client.get("/docs")
    jwks = client.get("/.well-known/jwks.json")
    client.get("/.well-known/jwks.json", headers={"If-None-Match": jwks.headers["ETag"]})
    client.get("/.well-known/oauth-authorization-server")

    # Resource servers: every status each call can answer here.
    rs_api = f"{API}/resource-servers"
    made = client.post(
        rs_api,
        json={
            "identifier": "https://api.example.com",
            "name": "Example API",
            "scopes": [{"value": "read", "description": "Read"}, {"value": "write"}],
        },
        headers=acme,
    )
    rs_id = made.get_json()["id"]
    client.post(rs_api, json={"identifier": "https://api.example.com", "name": "x"}, headers=acme)
    client.post(rs_api, json={"identifier": "has space", "name": "x"}, headers=acme)  # 400
    client.post(rs_api, json={"identifier": "https://b.example", "name": "x"}, headers=reader)
    client.post(rs_api, data="x", headers={**acme, "Content-Type": "text/plain"})  # 415
    shared = client.post(
        rs_api,
        json={"identifier": "https://shared.example", "name": "Shared", "shared": True},
        headers=system,
    ).get_json()["id"]
    client.get(rs_api, headers=acme)
    client.get(f"{rs_api}?limit=1", headers=system)
    client.get(f"{rs_api}?cursor=garbage", headers=acme)  # 400
    client.get(f"{rs_api}/{rs_id}", headers=acme)
    client.get(f"{rs_api}/{missing}", headers=acme)  # 404
    client.patch(f"{rs_api}/{rs_id}", json={"description": "d"}, headers=acme)
    client.patch(f"{rs_api}/{rs_id}", json={"name": "x"}, headers={**acme, "If-Match": '"0"'})
    client.patch(f"{rs_api}/{shared}", json={"name": "x"}, headers=acme)  # 403
    client.put(f"{rs_api}/{rs_id}", json={"name": "Example API", "scopes": []}, headers=acme)
    client.put(f"{rs_api}/{rs_id}", json={"name": "x", "identifier": "https://o"}, headers=acme)
    throwaway = client.post(
        rs_api, json={"identifier": "https://gone.example", "name": "Gone"}, headers=acme
    ).get_json()["id"]
    client.delete(f"{rs_api}/{throwaway}", headers={**acme, "If-Match": '"0"'})  # 412
    client.delete(f"{rs_api}/{throwaway}", headers=acme)

    # Clients: every status each call can answer here.
    created = client.post(
        f"{API}/clients",
        json={"name": "reader", "scopes": ["read"], "audiences": ["https://api.example.com"]},
        headers=acme,
    )
    assert created.status_code == 201
    cid = created.get_json()["id"]
    secret = created.get_json()["client_secret"]
    client.post(f"{API}/clients", json={"name": "reader"}, headers=acme)  # 409
    client.post(f"{API}/clients", json={"name": "Bad", "id": "x"}, headers=acme)  # 400
    client.post(f"{API}/clients", data="name=x", headers=acme)  # 415
    client.post(f"{API}/clients", data=b"[" * 70_000, headers=acme)  # 413
    client.post(f"{API}/clients", json={"name": "nope"}, headers=reader)  # 403
    client.post(f"{API}/clients", json={"name": "nope"})  # 401
    client.post(f"{API}/clients", json={"name": "other", "account_id": "globex"}, headers=system)
    client.get(f"{API}/clients?limit=1", headers=acme)
    client.get(f"{API}/clients?limit=5000", headers=acme)  # 400
    client.get(f"{API}/clients?cursor=garbage", headers=acme)  # 400
    client.get(f"{API}/clients", headers={"Authorization": "Bearer nope"})  # 401
    etag = client.get(f"{API}/clients/{cid}", headers=acme).headers["ETag"]
    client.get(f"{API}/clients/{missing}", headers=acme)  # 404
    client.patch(f"{API}/clients/{cid}", json={"tags": ["x"]}, headers=acme)
    client.patch(
        f"{API}/clients/{cid}",
        data=json.dumps({"owner": "ops@example.com"}),
        headers={**acme, "Content-Type": "application/merge-patch+json"},
    )
    client.patch(f"{API}/clients/{cid}", json={"tags": []}, headers={**acme, "If-Match": etag})
    client.patch(f"{API}/clients/{cid}", json={"access_token_ttl": 1}, headers=acme)  # 400
    client.patch(f"{API}/clients/{missing}", json={}, headers=acme)  # 404
    client.patch(f"{API}/clients/{cid}", data="x", headers=acme)  # 415
    client.put(
        f"{API}/clients/{cid}",
        json={"name": "reader", "scopes": ["read"], "audiences": ["https://api.example.com"]},
        headers=acme,
    )
    client.put(f"{API}/clients/{cid}", json={"friendly_name": "x"}, headers=acme)  # 400
    client.put(f"{API}/clients/{cid}", json={"name": "r"}, headers={**acme, "If-Match": '"0"'})
    client.delete(f"{API}/clients/{cid}", headers={**acme, "If-Match": '"0"'})  # 412

    # Secrets.
    client.get(f"{API}/clients/{cid}/secrets", headers=acme)
    client.get(f"{API}/clients/{missing}/secrets", headers=acme)  # 404
    new = client.post(f"{API}/clients/{cid}/secrets", json={"description": "ci"}, headers=acme)
    client.get(new.headers["Location"], headers=acme)
    client.get(f"{API}/clients/{cid}/secrets/{missing}", headers=acme)  # 404
    for _ in range(4):
        client.post(f"{API}/clients/{cid}/secrets", headers=acme)  # 201 x3, then 409
    client.post(f"{API}/clients/{cid}/secrets", json={"expires_in": 1}, headers=acme)  # 400
    client.post(f"{API}/clients/{cid}/secrets", data="x", headers=acme)  # 415
    client.post(f"{API}/clients/{cid}/secrets", json={}, headers=reader)  # 403
    client.post(f"{API}/clients/{cid}/secrets/rotate", json={"grace_period": 3600}, headers=acme)
    client.post(f"{API}/clients/{cid}/secrets/rotate", json={"grace_period": -1}, headers=acme)
    client.delete(f"{API}/clients/{cid}/secrets/{new.get_json()['id']}", headers=acme)
    client.delete(f"{API}/clients/{cid}/secrets/{missing}", headers=acme)  # 404

    # Keys.
    client.get(f"{API}/clients/{cid}/keys", headers=acme)
    made = client.post(f"{API}/clients/{cid}/keys", json={}, headers=acme)
    public = {k: v for k, v in made.get_json()["public_jwk"].items() if k != "kid"}
    public["x"] = made.get_json()["private_jwk"]["x"]
    client.post(f"{API}/clients/{cid}/keys", json={"public_jwk": {"kty": "oct", "k": "AA"}})
    client.post(f"{API}/clients/{cid}/keys", json={"public_jwk": "x"}, headers=acme)  # 400
    client.post(f"{API}/clients/{cid}/keys", json={"bogus": 1}, headers=acme)  # 400
    client.get(f"{API}/clients/{cid}/keys", headers=acme)
    client.delete(f"{API}/clients/{cid}/keys/{made.get_json()['kid']}", headers=acme)
    client.delete(f"{API}/clients/{cid}/keys/{missing}", headers=acme)  # 404

    # Federated credentials.
    fed = f"{API}/clients/{cid}/federated-credentials"
    platform = Issuer("https://token.actions.githubusercontent.com", "ES256")
    made = client.post(fed, json=credential_body(platform, subject="repo:a/b:*"), headers=acme)
    client.post(
        fed, json=credential_body(platform, subject="a", subject_pattern="b*"), headers=acme
    )
    client.post(fed, data="x", headers=acme)  # 415
    client.post(fed, json=credential_body(platform, subject="s"), headers=reader)  # 403
    client.get(fed, headers=acme)
    client.get(f"{API}/clients/{missing}/federated-credentials", headers=acme)  # 404
    client.post(f"{fed}/test", json={"assertion": platform.token("repo:a/b:x")}, headers=acme)
    client.post(f"{fed}/test", json={"assertion": platform.token("other")}, headers=acme)
    client.post(f"{fed}/test", json={"assertion": "garbage"}, headers=acme)
    client.post(f"{fed}/test", json={}, headers=acme)  # 400
    client.delete(f"{fed}/{missing}", headers=acme)  # 404
    client.delete(f"{fed}/{made.get_json()['id']}", headers=acme)

    # Locked: every change is 409.
    client.patch(f"{API}/clients/{cid}", json={"locked": True}, headers=acme)
    client.patch(f"{API}/clients/{cid}", json={"tags": ["y"]}, headers=acme)
    client.post(f"{API}/clients/{cid}/secrets", headers=acme)
    client.post(f"{API}/clients/{cid}/secrets/rotate", headers=acme)
    client.post(f"{API}/clients/{cid}/keys", json={}, headers=acme)
    client.post(fed, json=credential_body(platform, subject="s"), headers=acme)
    client.delete(f"{API}/clients/{cid}", headers=acme)
    client.patch(f"{API}/clients/{cid}", json={"locked": False}, headers=acme)

    # Token endpoint, introspection, revocation.
    listing = client.get(f"{API}/clients/{cid}/secrets", headers=acme).get_json()["data"]
    assert listing
    rotated = client.post(f"{API}/clients/{cid}/secrets/rotate", headers=acme).get_json()
    secret = rotated["secret"]
    token = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(cid, secret),
    ).get_json()["access_token"]
    client.post("/oauth2/token", data={"grant_type": "password"}, headers=basic_auth(cid, secret))
    client.post("/oauth2/token", data={"grant_type": "client_credentials"})  # 401
    client.post("/oauth2/token", data=b"x=" + b"y" * 70_000, headers=basic_auth(cid, secret))
    for _ in range(4):  # the low failure limit: 401 x3, then 429
        client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(missing, "ccs_wrong"),
        )
    client.post("/oauth2/introspect", data={"token": token}, headers=basic_auth(cid, secret))
    client.post("/oauth2/introspect", data={"token": "garbage"}, headers=basic_auth(cid, secret))
    client.post("/oauth2/introspect", data={"token": token})  # 401
    client.post("/oauth2/revoke", data={"token": token}, headers=basic_auth(cid, secret))
    client.post("/oauth2/revoke", data={}, headers=basic_auth(cid, secret))  # 400

    # Signing keys and audit.
    client.get(f"{API}/signing-keys", headers=system)
    client.get(f"{API}/signing-keys", headers=acme)  # 403
    client.post(f"{API}/signing-keys/rotate", headers=system)
    client.post(f"{API}/signing-keys/rotate", json={"x": 1}, headers=system)  # 400
    client.get(f"{API}/audit-events?limit=2", headers=acme)
    client.get(f"{API}/audit-events", headers=system)
    client.get(f"{API}/audit-events?cursor=garbage", headers=acme)  # 400
    client.delete(f"{rs_api}/{rs_id}", headers=acme)  # 409 resource_server_in_use
    client.delete(f"{API}/clients/{cid}", headers=acme)

    checker = Checker(document)
    problems = [p for rec in recorded for p in checker.problems(rec)]
    assert problems == []

    seen = {(r["method"], r["path"]) for r in recorded if r["path"]}
    assert seen >= CONTRACT_OPERATIONS, CONTRACT_OPERATIONS - seen
    statuses = {r["status"] for r in recorded if r["path"]}
    assert {200, 201, 204, 304, 400, 401, 403, 404, 409, 412, 413, 415, 429} <= statuses
    # Every management 4xx was problem+json, and every /oauth2 error RFC 6749 JSON.
    for rec in recorded:
        if rec["status"] >= 400 and rec["url"].startswith(API):
            assert rec["mimetype"] == "application/problem+json", rec["url"]
        if rec["status"] >= 400 and rec["url"].startswith("/oauth2/"):
            assert rec["mimetype"] == "application/json", rec["url"]


def test_document_passes_openapi_spec_validator(document):
    """The generated document is valid OpenAPI 3.1 by the reference validator."""
    validate_spec(document)
    assert document["openapi"] == "3.1.0"


class DocumentClient:
    """A client generated from the document alone: operations by operationId, the
    token from the security scheme's tokenUrl, parameters placed where the document
    says, and every response checked against the document."""

    def __init__(self, document: dict, http, checker: Checker) -> None:
        self.http = http
        self.checker = checker
        self.base = urlsplit(document["servers"][0]["url"]).path.rstrip("/")
        flows = document["components"]["securitySchemes"]["oauth2"]["flows"]
        self.token_url = urlsplit(flows["clientCredentials"]["tokenUrl"]).path
        self.operations = {
            op["operationId"]: (method, path, op)
            for path, item in document["paths"].items()
            for method, op in item.items()
            if method in METHODS
        }
        self.tokens: dict[str, str] = {}
        self.credentials: tuple[str, str] | None = None

    def _bearer(self, scopes: list[str]) -> str:
        key = " ".join(sorted(scopes))
        if key not in self.tokens:
            response = self.http.post(
                self.token_url,
                data={"grant_type": "client_credentials", "scope": key},
                headers=basic_auth(*self.credentials),
            )
            assert response.status_code == 200, response.get_json()
            self.tokens[key] = response.get_json()["access_token"]
        return self.tokens[key]

    def call(self, operation_id: str, body=None, **arguments):
        method, template, op = self.operations[operation_id]
        path, query, headers = template, {}, {}
        for parameter in op.get("parameters", []):
            name = parameter["name"]
            if name not in arguments:
                assert not parameter["required"], (operation_id, name)
                continue
            value = arguments.pop(name)
            if parameter["in"] == "path":
                path = path.replace("{" + name + "}", quote(str(value), safe=""))
            elif parameter["in"] == "query":
                query[name] = value
            else:
                headers[name] = value
        assert not arguments, f"{operation_id} has no parameters {sorted(arguments)}"
        for requirement in op["security"]:
            if "oauth2" in requirement:
                headers["Authorization"] = f"Bearer {self._bearer(requirement['oauth2'])}"
        kwargs = {}
        if body is not None:
            media = next(iter(op["requestBody"]["content"]))
            kwargs = {"data": json.dumps(body), "content_type": media}
        response = self.http.open(
            self.base + path, method=method.upper(), query_string=query, headers=headers, **kwargs
        )
        record = {
            "method": method,
            "path": template,
            "url": path,
            "status": response.status_code,
            "mimetype": response.mimetype,
            "headers": dict(response.headers),
            "body": response.get_data(),
        }
        assert self.checker.problems(record) == []
        return response.status_code, (response.get_json() if response.is_json else None)


def test_a_client_generated_from_the_document_works(client, factory, document):
    """Every management operation, called as a generated client would call it."""
    api = DocumentClient(document, client, Checker(document))
    api.credentials = factory.admin("acme")
    api.call("listClients")  # before anything exists: an empty page

    status, made = api.call(
        "createClient", {"name": "gen-client", "scopes": ["read"], "tags": ["gen"]}
    )
    assert status == 201 and made["client_secret"].startswith("ccs_")
    cid = made["id"]
    for i in range(3):
        assert api.call("createClient", {"name": f"gen-{i}", "tags": ["gen"]})[0] == 201
    status, page = api.call("listClients", tag="gen", limit=2)
    assert status == 200 and len(page["data"]) == 2 and page["next_cursor"]
    status, rest = api.call("listClients", tag="gen", limit=2, cursor=page["next_cursor"])
    names = sorted(c["name"] for c in page["data"] + rest["data"])
    assert names == ["gen-0", "gen-1", "gen-2", "gen-client"] and rest["next_cursor"] is None

    status, shown = api.call("getClient", client_id=cid)
    assert status == 200 and shown == {
        k: v for k, v in made.items() if k not in ("client_secret", "secret_id")
    }
    status, patched = api.call("patchClient", {"owner": "ops@example.com"}, client_id=cid)
    assert status == 200 and patched["owner"] == "ops@example.com"
    status, replaced = api.call("replaceClient", {"name": "gen-client"}, client_id=cid)
    assert status == 200 and replaced["owner"] is None and replaced["tags"] == []
    assert api.call("patchClient", {"nope": 1}, client_id=cid)[0] == 400

    status, secret = api.call("createClientSecret", {"description": "ci"}, client_id=cid)
    assert status == 201
    assert api.call("getClientSecret", client_id=cid, secret_id=secret["id"])[1]["hint"]
    status, rotated = api.call("rotateClientSecret", {"grace_period": 60}, client_id=cid)
    assert status == 201
    assert len(api.call("listClientSecrets", client_id=cid)[1]["data"]) == 3
    assert api.call("deleteClientSecret", client_id=cid, secret_id=secret["id"])[0] == 204

    status, key = api.call("createClientKey", {}, client_id=cid)
    assert status == 201 and key["private_jwk"]["d"]
    assert [k["kid"] for k in api.call("listClientKeys", client_id=cid)[1]["data"]] == [key["kid"]]
    assert api.call("deleteClientKey", client_id=cid, kid=key["kid"])[0] == 204

    status, rs = api.call(
        "createResourceServer",
        {"identifier": "https://gen.example", "name": "Gen", "scopes": [{"value": "read"}]},
    )
    assert status == 201 and rs["shared"] is False
    assert api.call("listResourceServers", limit=1)[1]["data"] == [rs]
    assert api.call("getResourceServer", resource_server_id=rs["id"])[1] == rs
    status, patched_rs = api.call(
        "patchResourceServer", {"access_token_ttl": 300}, resource_server_id=rs["id"]
    )
    assert status == 200 and patched_rs["access_token_ttl"] == 300
    status, replaced_rs = api.call(
        "replaceResourceServer", {"name": "Gen"}, resource_server_id=rs["id"]
    )
    assert status == 200 and replaced_rs["access_token_ttl"] is None
    assert replaced_rs["scopes"] == []
    assert api.call("deleteResourceServer", resource_server_id=rs["id"])[0] == 204

    status, events = api.call("listAuditEvents", limit=3)
    assert status == 200 and len(events["data"]) == 3 and events["next_cursor"]
    assert api.call("deleteClient", client_id=cid)[0] == 204
    assert api.call("getClient", client_id=cid)[0] == 404

    system = DocumentClient(document, client, Checker(document))
    system.credentials = factory.admin("system")
    status, keys = system.call("listSigningKeys")
    assert status == 200 and {k["status"] for k in keys["data"]} >= {"current", "next"}
    assert system.call("rotateSigningKeys")[0] == 200
    assert system.call("rotateSigningKeys", {"x": 1})[0] == 400


def _types(schema: dict) -> set[str]:
    found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
    for option in schema.get("anyOf", []):
        found |= _types(option)
    return found


def test_every_body_refuses_unknown_fields_duplicate_keys_and_coercion(
    client, factory, document, app
):
    """The contract's body rules hold for every operation the document gives a body."""
    headers = {**factory.admin_headers("system"), "Content-Type": "application/json"}
    cid, _ = factory.client("acme")
    schemas = document["components"]["schemas"]
    checked = 0
    for path, item in document["paths"].items():
        for method, op in item.items():
            if not path.startswith(API) or method not in METHODS or "requestBody" not in op:
                continue
            url = path.replace("{client_id}", cid)

            def send(data: bytes, url=url, method=method):
                return client.open(url, method=method.upper(), data=data, headers=headers)

            unknown = send(b'{"zz_unknown": 1}')
            assert unknown.status_code == 400, (method, path)
            assert unknown.mimetype == "application/problem+json"
            assert unknown.get_json()["errors"][0]["field"] == "zz_unknown", (method, path)
            duplicate = send(b'{"zz": 1, "zz": 1}')
            assert duplicate.status_code == 400, (method, path)
            assert duplicate.get_json()["code"] == "invalid_json", (method, path)
            ref = next(iter(op["requestBody"]["content"].values()))["schema"]["$ref"]
            for name, prop in schemas[ref.rsplit("/", 1)[1]].get("properties", {}).items():
                kinds = _types(prop)
                for wrong in (["60"] if "integer" in kinds else []) + (
                    [0, "false"] if "boolean" in kinds else []
                ):
                    response = send(json.dumps({name: wrong}).encode())
                    assert response.status_code == 400, (method, path, name, wrong)
                    fields = [e["field"] for e in response.get_json()["errors"]]
                    assert name in fields, (method, path, name, wrong, fields)
                    checked += 1
    assert checked >= 8  # ttl, locked, disabled, expires_in (x2), grace_period
