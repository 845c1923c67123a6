"""RFC 8414 authorization server metadata, built from the one list of each protocol constant."""

from __future__ import annotations

from collections.abc import Collection

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from app.clients.service import MANAGEMENT_SCOPES
from app.oauth.requests import ENDPOINT_PATHS
from app.protocol import AUTH_METHODS, DPOP_SIGNING_ALGS, FAPI2_SIGNING_ALGS


def server_metadata(issuer: str, assertion_algs: Collection[str]) -> AuthorizationServerMetadata:
    """RFC 8414 §2: what a client needs to find and call our endpoints."""
    auth_methods = list(AUTH_METHODS)
    algs = list(assertion_algs)
    return AuthorizationServerMetadata(
        {
            "issuer": issuer,
            "token_endpoint": issuer + ENDPOINT_PATHS["token"],
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            # REQUIRED by RFC 8414 §2, but this server has no authorization
            # endpoint and so no response type: the implicit grant's "token" is
            # not offered (RFC 9700 §2.1.2). An empty list says exactly that.
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": auth_methods,
            "token_endpoint_auth_signing_alg_values_supported": algs,
            "introspection_endpoint": issuer + ENDPOINT_PATHS["introspection"],
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_signing_alg_values_supported": algs,
            "revocation_endpoint": issuer + ENDPOINT_PATHS["revocation"],
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_signing_alg_values_supported": algs,
            "scopes_supported": list(MANAGEMENT_SCOPES),
            # An extension member (RFC 8414 §2 allows them): the algorithms a
            # client with `security_profile: "fapi2"` may sign assertions and
            # DPoP proofs with, and that its tokens need the server to sign with
            # (FAPI 2.0 Security Profile §5.4.1; docs/api.md §2.1).
            "fapi2_signing_alg_values_supported": list(FAPI2_SIGNING_ALGS),
            # RFC 8705 §3.3: certificate-bound access tokens (docs/api.md §1.2).
            "tls_client_certificate_bound_access_tokens": True,
            # RFC 9449 §5.1.
            "dpop_signing_alg_values_supported": list(DPOP_SIGNING_ALGS),
            "service_documentation": f"{issuer}/api/v1/openapi.json",
        }
    )
