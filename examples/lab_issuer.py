"""A stand-in for a workload platform's token issuer, to try federated credentials locally.

Not for production, and not needed there: a real workload gets its JWT from
its platform (GitHub Actions, GitLab CI, Kubernetes, SPIFFE:
docs/federation.md). This script plays the platform's part with a key pair
of its own, as the README's walk-through does:

    python examples/lab_issuer.py keys lab-issuer.pem > lab-jwks.json
    python examples/lab_issuer.py token lab-issuer.pem --issuer https://ci.example.com \\
        --subject job:deploy --audience http://localhost:5000

`keys` writes a new ES256 private key (mode 0600, never over an existing
file) and prints its public JWKS, for a credential's inline `jwks`
(`ccserver federated-credentials add … --jwks-file lab-jwks.json`).
`token` prints a JWT signed by that key, shaped as platforms make them
(`iss`, `sub`, `aud`, `iat`, `nbf`, `exp`, `jti`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

LIFETIME = 300


def public_jwk(private_key: ec.EllipticCurvePrivateKey) -> dict:
    """The public JWK, its `kid` the RFC 7638 thumbprint."""
    jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "alg": "ES256", "use": "sig", "kid": kid}


def make_keys(path: str) -> dict:
    """Write a new private key to `path`; return the public JWKS."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: an existing key is never replaced (credentials trust it).
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return {"keys": [public_jwk(key)]}


def make_token(path: str, issuer: str, subject: str, audience: str) -> str:
    """A workload JWT signed with the key at `path`."""
    with open(path, "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{path}: not a key made by `lab_issuer.py keys`")
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + LIFETIME,
        "jti": uuid.uuid4().hex,
    }
    headers = {"kid": public_jwk(key)["kid"], "typ": "JWT"}
    return jwt.encode(claims, key, algorithm="ES256", headers=headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="make a key pair; print the public JWKS")
    keys.add_argument("private_key", help="where to write the private key (a new file)")
    token = commands.add_parser("token", help="print a signed workload JWT")
    token.add_argument("private_key", help="the file `keys` wrote")
    token.add_argument("--issuer", required=True, help="`iss`: the credential's issuer")
    token.add_argument("--subject", required=True, help="`sub`: the workload's identity")
    token.add_argument("--audience", required=True, help="`aud`: the server's ISSUER")
    args = parser.parse_args(argv)
    if args.command == "keys":
        print(json.dumps(make_keys(args.private_key), indent=2))
    else:
        print(make_token(args.private_key, args.issuer, args.subject, args.audience))


if __name__ == "__main__":
    sys.exit(main())
