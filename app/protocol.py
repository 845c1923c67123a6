"""Protocol constants every layer shares: the one list of each.

Kept free of imports from the rest of the app so that settings, models, services
and every face can read them.
"""

from __future__ import annotations

#: Client authentication methods at the token, introspection and revocation
#: endpoints (RFC 8414 §2 `token_endpoint_auth_methods_supported`).
AUTH_METHODS: tuple[str, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    # RFC 8705 §2.1 and §2.2, through the TLS-terminating proxy (docs/api.md §1.2).
    "tls_client_auth",
    "self_signed_tls_client_auth",
)

#: JWS algorithms the server signs access tokens with (`SIGNING_ALG`) and accepts
#: on client assertions (RFC 7518 §3.1 names; EdDSA is RFC 8037 §3.1).
SIGNING_ALGS: tuple[str, ...] = ("ES256", "RS256", "PS256", "EdDSA")

#: Which JWS algorithms a key of each JWK `kty` (RFC 7517 §4.1) may sign with.
ALGS_BY_KTY: dict[str, tuple[str, ...]] = {
    "RSA": ("RS256", "PS256"),
    "EC": ("ES256",),
    "OKP": ("EdDSA",),
}

#: The FAPI 2.0 Security Profile (a client's `security_profile: "fapi2"`):
#: its client authentication methods (§5.3.2.1: mTLS or private_key_jwt) and
#: its JWS algorithms (§5.4.1: PS256, ES256, or EdDSA with Ed25519), for our
#: tokens, client assertions and DPoP proofs alike.
FAPI2 = "fapi2"
FAPI2_AUTH_METHODS: tuple[str, ...] = (
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
)
FAPI2_SIGNING_ALGS: tuple[str, ...] = ("PS256", "ES256", "EdDSA")
#: §5.3.2.1: JWTs with `iat` or `nbf` up to 10 s ahead are accepted; we refuse
#: anything further ahead (the profile's own hard limit is 60 s).
FAPI2_MAX_FUTURE = 10

#: JWS algorithms accepted on DPoP proofs (RFC 9449 §4.2: asymmetric only, never
#: "none" nor a MAC) and listed as RFC 9449 §5.1 `dpop_signing_alg_values_supported`.
#: ES384 is there because DPoP keys are the client's own, often made by a
#: platform keystore that offers P-384; RSA keys must have at least 2048 bits.
DPOP_SIGNING_ALGS: tuple[str, ...] = ("ES256", "ES384", "PS256", "RS256", "EdDSA")

#: JWS algorithms accepted on federated assertions (docs/api.md §1.3): the
#: asymmetric ones that workload platforms sign with; never "none" nor a MAC,
#: whose key would be the issuer's published (public) key.
FEDERATION_SIGNING_ALGS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: The curve each ES algorithm signs with (RFC 7518 §3.4).
EC_CURVE_OF_ALG: dict[str, str] = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
