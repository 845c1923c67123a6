"""Example resource server (Flask) that accepts sender-constrained access tokens.

DPoP-bound tokens (RFC 9449 §7) and certificate-bound ones (RFC 8705 §3).

A request carries `Authorization: DPoP <token>` and a `DPoP` proof. The
token is verified as RFC 9068 §4 asks (as in resource_server_flask.py); the
proof as RFC 9449 §4.3 and §7.1 ask: `typ: dpop+jwt`, an asymmetric `alg`,
a public `jwk` whose RFC 7638 thumbprint is the token's `cnf.jkt`, the
signature, `htm` and `htu` naming this request, `iat` within 60 s, `ath`
the hash of the token, and a `jti` never seen before. Bearer tokens are
accepted too, unless they carry a `cnf.jkt` (a DPoP-bound token is never a
bearer token). A token with `cnf.x5t#S256` is accepted only when the
TLS-terminating proxy in front of this API forwards the client's certificate
in the RFC 9440 `Client-Cert` header and its SHA-256 is that value (the
proxy must overwrite any `Client-Cert` a client sends, as
docs/deployment.md shows for nginx). Run it:

    ISSUER=http://localhost:5000 AUDIENCE=https://api.example.com \\
        PUBLIC_URL=http://localhost:8000 flask --app examples/resource_server_dpop run --port 8000

The replay cache here is this process's memory: enough for one process.
Several instances need a shared one (Redis `SET NX EX`, a unique row).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import threading
import time

import jwt
from flask import Flask, current_app, g, jsonify, request

from examples.resource_server_flask import TokenVerifier

PROOF_ALGORITHMS = ["ES256", "ES384", "PS256", "RS256", "EdDSA"]
IAT_WINDOW = 60
THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: dict) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, without whitespace."""
    members = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


class ReplayCache:
    """Proof jtis seen in the last window, per key (one process only)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, key: str, now: float) -> bool:
        with self._lock:
            for old in [k for k, until in self._seen.items() if until < now]:
                del self._seen[old]
            if key in self._seen:
                return False
            self._seen[key] = now + 2 * IAT_WINDOW
            return True


class ProofError(Exception):
    pass


def check_proof(proof: str, token: str, jkt: str, method: str, url: str, seen: ReplayCache):
    """RFC 9449 §4.3 and §7.1 for one request. :raise ProofError: any check fails."""
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.DecodeError as exc:
        raise ProofError("not a JWT") from exc
    jwk = header.get("jwk")
    if header.get("typ") != "dpop+jwt" or header.get("alg") not in PROOF_ALGORITHMS:
        raise ProofError("wrong typ or alg")
    if (
        not isinstance(jwk, dict)
        or PRIVATE_MEMBERS & jwk.keys()
        or jwk.get("kty") not in THUMBPRINT_MEMBERS
    ):
        raise ProofError("jwk is not a public key")
    if not hmac.compare_digest(thumbprint(jwk), jkt):
        raise ProofError("proof key is not the token's key")
    try:
        key = jwt.PyJWK(jwk, algorithm=header["alg"]).key
        claims = jwt.decode(proof, key, algorithms=[header["alg"]], options={"verify_aud": False})
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise ProofError("bad signature") from exc
    now = time.time()
    expected_ath = b64url(hashlib.sha256(token.encode("ascii")).digest())
    if claims.get("htm") != method or str(claims.get("htu", "")).split("?")[0].split("#")[0] != url:
        raise ProofError("proof is for another request")
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or abs(now - iat) > IAT_WINDOW:
        raise ProofError("proof is too old or too new")
    if not hmac.compare_digest(str(claims.get("ath", "")), expected_ath):
        raise ProofError("proof is for another token")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not seen.first_use(f"{jkt}:{jti}", now):
        raise ProofError("proof replayed")


def certificate_thumbprint(header: str | None) -> str | None:
    """RFC 8705 §3.1 `x5t#S256` of the RFC 9440 `Client-Cert` header (`:base64 DER:`)."""
    if not header or len(header) < 3 or not (header.startswith(":") and header.endswith(":")):
        return None
    try:
        der = base64.b64decode(header[1:-1], validate=True)
    except ValueError:
        return None
    return b64url(hashlib.sha256(der).digest())


def _refuse(scheme: str, error: str, description: str, status: int = 401):
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    algs = " ".join(PROOF_ALGORITHMS)
    if scheme == "dpop":
        response.headers["WWW-Authenticate"] = f'DPoP error="{error}", algs="{algs}"'
    else:
        response.headers["WWW-Authenticate"] = f'Bearer error="{error}", DPoP algs="{algs}"'
    return response


def require_scope(scope: str):
    """Decorator: a valid Bearer or DPoP-bound token holding `scope`; claims in g.claims."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            scheme, token = scheme.lower(), token.strip()
            if scheme not in ("bearer", "dpop") or not token:
                response = jsonify({"error": "unauthorized"})
                response.status_code = 401
                response.headers["WWW-Authenticate"] = (
                    f'Bearer, DPoP algs="{" ".join(PROOF_ALGORITHMS)}"'
                )
                return response
            try:
                claims = current_app.extensions["token_verifier"].verify(token)
            except jwt.InvalidTokenError:
                return _refuse(scheme, "invalid_token", "The access token is invalid or expired.")
            cnf = claims.get("cnf") if isinstance(claims.get("cnf"), dict) else {}
            jkt = cnf.get("jkt")
            if scheme == "bearer" and jkt:
                return _refuse("dpop", "invalid_token", "A DPoP-bound token needs the DPoP scheme.")
            if scheme == "dpop":
                if not jkt:
                    return _refuse("dpop", "invalid_token", "The token is not DPoP-bound.")
                proofs = request.headers.getlist("DPoP")
                if len(proofs) != 1 or "," in proofs[0]:
                    return _refuse("dpop", "invalid_dpop_proof", "Send exactly one DPoP proof.")
                url = current_app.config["PUBLIC_URL"] + request.path
                try:
                    check_proof(
                        proofs[0],
                        token,
                        jkt,
                        request.method,
                        url,
                        current_app.extensions["dpop_seen"],
                    )
                except ProofError as exc:
                    return _refuse("dpop", "invalid_dpop_proof", str(exc))
            x5t = cnf.get("x5t#S256")
            if x5t is not None:
                presented = certificate_thumbprint(request.headers.get("Client-Cert"))
                if presented is None or not hmac.compare_digest(presented, str(x5t)):
                    return _refuse(scheme, "invalid_token", "Present the token's certificate.")
            if scope not in str(claims.get("scope", "")).split():
                return _refuse(scheme, "insufficient_scope", f"Needs scope {scope}.", 403)
            g.claims = claims
            return view(*args, **kwargs)

        return wrapper

    return decorator


def create_app(
    issuer: str | None = None, audience: str | None = None, public_url: str | None = None
) -> Flask:
    """The example API: GET /hello needs scope `read`; PUBLIC_URL is what proofs' htu name."""
    app = Flask(__name__)
    app.config["PUBLIC_URL"] = (
        public_url or os.environ.get("PUBLIC_URL", "http://localhost:8000")
    ).rstrip("/")
    app.extensions["token_verifier"] = TokenVerifier(
        issuer or os.environ.get("ISSUER", "http://localhost:5000"),
        audience or os.environ.get("AUDIENCE", "https://api.example.com"),
    )
    app.extensions["dpop_seen"] = ReplayCache()

    @app.get("/hello")
    @require_scope("read")
    def hello():
        """A protected resource."""
        cnf = g.claims.get("cnf") or {}
        return jsonify({"hello": g.claims["sub"], "dpop": "jkt" in cnf, "bound_by": sorted(cnf)})

    return app


if __name__ == "__main__":
    create_app().run(port=int(os.environ.get("PORT", "8000")))
