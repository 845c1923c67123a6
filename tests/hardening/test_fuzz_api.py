"""Integration tests: schema-driven fuzzing of /api/v1 against our own OpenAPI document.

schemathesis generates valid and invalid requests for every operation of
/api/v1/openapi.json and sends them to the Flask app (WSGI) with a system
admin's token. Every response must be no 5xx and conform to the document
(status code, content type, headers, body schema); invalid data must be
refused; and a refused (4xx) request must leave every table's row count as
it was. Hand-written hostile JSON bodies follow.
"""

from __future__ import annotations

import json
import random

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis import checks as base_checks
from schemathesis.specs.openapi import checks as openapi_checks

from app.extensions import db

CHECKS = [
    base_checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]
# Rows a rejected request must not change (auth_failures counts failures by design).
TABLES = [
    "clients",
    "client_secrets",
    "client_keys",
    "signing_keys",
    "audit_events",
    "revoked_tokens",
    "used_assertions",
    "federated_credentials",
]


def row_counts(app) -> dict[str, int]:
    with app.app_context(), db.engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}


@pytest.fixture
def app_config(base_config, migrated) -> dict:
    return {**base_config, "AUTH_FAILURE_LIMIT_CLIENT": 0, "AUTH_FAILURE_LIMIT_ADDRESS": 0}


@pytest.fixture
def api_schema(app, client):
    assert client.get("/api/v1/openapi.json").status_code == 200
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app).include(
        path_regex=r"^/api/v1/(clients|audit-events|signing-keys)"
    )


@pytest.fixture
def admin(factory) -> dict:
    headers = factory.admin_headers("system")
    cid, _ = factory.client("acme", name="target", scopes=["read"])
    return {"headers": headers, "client_id": cid}


BODY_METHODS = {"POST", "PUT", "PATCH"}
POSITIVE = GenerationMode.POSITIVE
FUZZ = settings(
    max_examples=8,
    phases=[Phase.generate],
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_api_conforms_to_its_openapi_document(app, api_schema, admin):
    """Positive and negative examples for every /api/v1 operation."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    rng = random.Random(7)

    for operation in operations:
        # Invalid data matters where a body is parsed; elsewhere it costs
        # generation time (most negative draws are discarded) for little gain.
        modes = list(GenerationMode) if operation.method.upper() in BODY_METHODS else [POSITIVE]
        for mode in modes:

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                # Half the time aim at a real client, so paths past the 404 are reached.
                if "client_id" in (case.path_parameters or {}) and rng.random() < 0.5:
                    case.path_parameters["client_id"] = admin["client_id"]
                before = row_counts(app)
                response = case.call(headers=admin["headers"])
                label = (mode.value, case.method, case.formatted_path, response.text[:300])
                assert response.status_code < 500, label
                checks = CHECKS
                if response.status_code == 413:
                    # An oversized body is refused before it is read (docs/api.md §3):
                    # a rejection too, which schemathesis's list of them lacks.
                    checks = [c for c in CHECKS if c is not openapi_checks.negative_data_rejection]
                case.validate_response(response, checks=checks)
                if 400 <= response.status_code < 500:
                    assert row_counts(app) == before, (label, case.body)

            try:
                run()
            except Unsatisfiable:
                # Some operations have nothing to make invalid (no body, no parameters).
                if mode is POSITIVE:
                    raise


# --- Hand-written hostile JSON -------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE = [
    pytest.param(DEEP, "application/json", id="100k-nested-lists"),
    pytest.param(b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "application/json", id="deep-objects"),
    pytest.param(
        b'{"name": "x", "access_token_ttl": 1' + b"0" * 5000 + b"}",
        "application/json",
        id="huge-int",
    ),
    pytest.param(b'{"name": "x", "access_token_ttl": 1e999}', "application/json", id="inf-float"),
    pytest.param(b'{"name": "x", "access_token_ttl": NaN}', "application/json", id="nan"),
    pytest.param(b'{"name": "x\\u0000y"}', "application/json", id="escaped-nul"),
    pytest.param(b'{"name": "x\x00y"}', "application/json", id="raw-nul"),
    pytest.param(b'{"name": "\xff\xfe"}', "application/json", id="invalid-utf8"),
    pytest.param(b'{"name": "\\ud800"}', "application/json", id="lone-surrogate"),
    pytest.param(b'{"name": "a", "name": "b"}', "application/json", id="duplicate-keys"),
    pytest.param(b'{"name": "ok-name", "tags": ["\\u0000"]}', "application/json", id="nul-tag"),
    pytest.param(b'{"friendly_name": "' + b"x" * 70_000 + b'"}', "application/json", id="over-64k"),
    pytest.param(b"[]", "application/json", id="array"),
    pytest.param(b"null", "application/json", id="null"),
    pytest.param(b'"x"', "application/json", id="string"),
    pytest.param(b"", "application/json", id="empty"),
    pytest.param(b'{"name": "x"', "application/json", id="truncated"),
    pytest.param(b'{"name": "x"}', "text/plain", id="wrong-content-type"),
    pytest.param(b'\xef\xbb\xbf{"name": "bom-name"}', "application/json", id="bom"),
]


def _assert_problem(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data()[:300])
    assert response.mimetype == "application/problem+json", response.mimetype
    body = response.get_json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == response.status_code


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/clients"),
        ("PATCH", "/api/v1/clients/{id}"),
        ("PUT", "/api/v1/clients/{id}"),
        ("POST", "/api/v1/clients/{id}/secrets"),
        ("POST", "/api/v1/clients/{id}/secrets/rotate"),
    ],
)
def test_hostile_json_is_a_4xx_problem(app, client, admin, method, path):
    before = row_counts(app)
    for case in HOSTILE:
        body, content_type = case.values
        response = client.open(
            path.format(id=admin["client_id"]),
            method=method,
            data=body,
            headers={**admin["headers"], "Content-Type": content_type},
        )
        if body.startswith(b"\xef\xbb\xbf") and response.status_code in (200, 201):
            # RFC 8259 §8.1 lets a parser ignore a byte order mark; accepting it is fine.
            before = row_counts(app)
            continue
        if not body and "/secrets" in path and response.status_code == 201:
            # Every field of these bodies is optional: no body at all means defaults.
            before = row_counts(app)
            continue
        try:
            _assert_problem(response)
            if len(body) > 64 * 1024:
                assert response.status_code == 413
            assert row_counts(app) == before
        except AssertionError as error:
            raise AssertionError(f"{case.id}: {error}") from None


def test_duplicate_keys_do_not_smuggle_a_field(client, admin):
    """Whatever the parser does with duplicates, a read-only field never gets through."""
    body = json.dumps({"name": "dup-check"})[:-1] + ', "id": "chosen", "id": "chosen2"}'
    response = client.post(
        "/api/v1/clients",
        data=body,
        headers={**admin["headers"], "Content-Type": "application/json"},
    )
    _assert_problem(response)
