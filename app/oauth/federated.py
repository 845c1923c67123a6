"""Federated client authentication at the token endpoint (docs/api.md §1.3).

app.oauth.rfc7523 hands over a jwt-bearer `client_assertion` sent with a
`client_id` that its unverified `iss` does not name: a JWT another issuer
gave the workload. The client's federated credentials decide
(app.federation.verify, the same checks as the dry run); any failure is
None, which app.oauth.client_auth turns into the one 401 invalid_client of
every failed authentication and counts towards the failure limits. Why it
failed goes to the server's log at INFO: the client id, the unverified
issuer and each credential's failed check, never the assertion.

Only the token endpoint accepts federated assertions: docs/api.md §1.3 names it
alone, and a workload that holds no secret has nothing to introspect or
revoke with at the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from app.clients.records import ClientRecord
from app.federation.verify import verify
from app.oauth import rfc9449
from app.oauth.client_auth import QueryClient
from app.oauth.requests import FormRequest
from app.protocol import FAPI2, FAPI2_SIGNING_ALGS, FEDERATION_SIGNING_ALGS
from app.runtime import runtime

log = logging.getLogger(__name__)
#: How much of an unverified issuer the log shows.
MAX_LOGGED_ISSUER = 200


def _refused(client_id: str, issuer: object, reason: str) -> None:
    shown = issuer[:MAX_LOGGED_ISSUER] if isinstance(issuer, str) else None
    log.info(
        "federated client authentication failed: client_id=%r iss=%r: %s",
        client_id[:64],
        shown,
        reason,
    )


def authenticate(
    query_client: QueryClient,
    request: FormRequest,
    client_id: str,
    unverified_issuer: object,
    algorithms: Collection[str] = FEDERATION_SIGNING_ALGS,
) -> ClientRecord | None:
    """The client whose federated credential accepts the request's assertion, or None."""
    if request.endpoint != "token":
        _refused(client_id, unverified_issuer, f"not accepted at the {request.endpoint} endpoint")
        return None
    client = query_client(client_id)
    if client is None:
        _refused(client_id, unverified_issuer, "no such client")
        return None
    if client.security_profile == FAPI2:
        # FAPI 2.0 §5.4.1 holds every JWS of the client to its algorithms.
        algorithms = [alg for alg in algorithms if alg in FAPI2_SIGNING_ALGS]
    result = verify(
        client.federated,
        request.form["client_assertion"],
        now=time.time(),
        use_once=lambda key, expires_at: rfc9449.use_once_with_proof(request, key, expires_at),
        algorithms=tuple(algorithms),
    )
    if result.matched is None:
        _refused(client_id, unverified_issuer, result.summary())
        return None
    runtime().usage.federated_used(result.matched.id)
    request.federated_credential = result.matched.id
    return client
