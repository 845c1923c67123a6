"""Federated workload identity (docs/api.md §1.3, §2.8): foreign JWTs as client assertions.

- `fetch`: one HTTPS GET of a JSON document from a public address, bounded in
  time and size (docs/federation-keys.md).
- `issuer_keys`: the per-process cache of issuers' public keys, fetched from
  a `jwks_uri` or by OpenID Connect discovery, and `issuer_keys()` to reach it.
"""
