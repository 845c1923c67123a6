"""Federated credentials (docs/api.md §2.8): /api/v1/clients/{id}/federated-credentials."""

from __future__ import annotations

import time

from flask import g

from app.api import bp
from app.api import schemas as s
from app.api.auth import require_scope
from app.clients import federation as federation_service
from app.clients import policy
from app.clients.service import get_client
from app.extensions import db
from app.federation.verify import parse_unverified, verify


@bp.get("/clients/<client_id>/federated-credentials")
@require_scope("clients:read")
@s.operation(
    "listFederatedCredentials",
    tag="federated-credentials",
    response=s.FederatedCredentialList,
    description="The federated credentials, oldest first.",
)
def list_federated_credentials(client_id: str):
    """The client's federated credentials."""
    client = get_client(g.caller.account_filter(), client_id)
    return s.dump(s.FederatedCredentialList, {"data": federation_service.list_credentials(client)})


@bp.post("/clients/<client_id>/federated-credentials")
@require_scope("clients:write")
@s.operation(
    "createFederatedCredential",
    tag="federated-credentials",
    status=201,
    response=s.FederatedCredential,
    body=s.FederatedCredentialCreate,
    description="Created.",
    errors=(409,),
)
def create_federated_credential(client_id: str, body: s.FederatedCredentialCreate):
    """Add a federated credential (at most 50 per client)."""
    # The row lock serializes adds per client: the fifty-credential limit holds.
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    credential = federation_service.add_credential(client, dict(body), g.caller.client_id)
    db.session.commit()
    return s.dump(s.FederatedCredential, credential), 201


@bp.delete("/clients/<client_id>/federated-credentials/<credential_id>")
@require_scope("clients:write")
@s.operation("deleteFederatedCredential", tag="federated-credentials", status=204, errors=(409,))
def delete_federated_credential(client_id: str, credential_id: str):
    """Delete a federated credential; assertions it accepted fail from now on."""
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    federation_service.delete_credential(client, credential_id, g.caller.client_id)
    db.session.commit()
    return "", 204


@bp.post("/clients/<client_id>/federated-credentials/test")
@require_scope("clients:write")
@s.operation(
    "testFederatedCredentials",
    tag="federated-credentials",
    response=s.FederatedTestResult,
    body=s.FederatedCredentialTest,
    description="Which credential accepts the assertion, or which check of each failed.",
    headers=("Cache-Control",),
)
def test_federated_credentials(client_id: str, body: s.FederatedCredentialTest):
    """Dry run of the token endpoint's federated checks; consumes no single-use jti.

    Changes nothing, so a locked client may be tested too.
    """
    client = get_client(g.caller.account_filter(), client_id)
    assertion = body["assertion"]
    parsed = parse_unverified(assertion)
    matched = None
    if parsed is not None and parsed[1].get("iss") == client.id:
        # The token endpoint would check it as the client's own private_key_jwt assertion.
        answer: dict = {"matched": False, "error": s.NOT_FEDERATED, "results": []}
    else:
        result = verify(
            federation_service.credential_records(client),
            assertion,
            now=time.time(),
            use_once=None,
            every=True,
        )
        matched = result.matched
        answer = {
            "matched": matched is not None,
            "error": result.error,
            "results": [
                {
                    "id": r.credential.id,
                    "name": r.credential.name,
                    "matched": r.failed is None,
                    "failed_check": r.failed,
                    "detail": r.detail,
                }
                for r in result.results
            ],
        }
    answer["credential_id"] = matched.id if matched is not None else None
    answer["credential_name"] = matched.name if matched is not None else None
    return s.dump(s.FederatedTestResult, answer), 200, {"Cache-Control": "no-store"}
