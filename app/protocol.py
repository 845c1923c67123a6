"""Protocol constants every layer shares: the one list of each.

Kept free of imports from the rest of the app so that settings, models, services
and every face can read them.
"""

from __future__ import annotations

#: Client authentication methods at the token, introspection and revocation
#: endpoints (RFC 8414 §2 `token_endpoint_auth_methods_supported`).
AUTH_METHODS: tuple[str, ...] = ("client_secret_basic", "client_secret_post", "private_key_jwt")

#: JWS algorithms the server signs access tokens with (`SIGNING_ALG`) and accepts
#: on client assertions (RFC 7518 §3.1 names; EdDSA is RFC 8037 §3.1).
SIGNING_ALGS: tuple[str, ...] = ("ES256", "RS256", "PS256", "EdDSA")

#: Which JWS algorithms a key of each JWK `kty` (RFC 7517 §4.1) may sign with.
ALGS_BY_KTY: dict[str, tuple[str, ...]] = {
    "RSA": ("RS256", "PS256"),
    "EC": ("ES256",),
    "OKP": ("EdDSA",),
}
