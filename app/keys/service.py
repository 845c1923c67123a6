"""The server's signing keys: generate, store, load and rotate.

Status (next/current/retired) and the public JWK live in the database so
every instance agrees on it; each private key is a PEM file in KEYS_DIR,
encrypted with KEYS_PASSPHRASE when one is set. The partial unique indexes on
signing_keys allow at most one current and one next key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from .. import audit
from ..extensions import db
from ..models import Client, SigningKey
from ..timeutil import utcnow

# Allowance for verifiers' clocks when deciding how long a retired key stays.
CLOCK_SKEW = timedelta(seconds=60)
MAX_TOKEN_TTL = 86400


def generate_private_key(alg: str):
    """A fresh private key for the JWS algorithm."""
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg in ("RS256", "PS256"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def public_jwk(public_key, alg: str, kid: str) -> dict[str, Any]:
    """The public JWK with kid, alg and use; never a private member."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        raise TypeError(f"unsupported key type {type(public_key).__name__}")
    public = {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y", "n", "e")}
    public.update({"kid": kid, "alg": alg, "use": "sig"})
    return public


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public JWK."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _pem_path(keys_dir: str, kid: str) -> Path:
    return Path(keys_dir) / f"{kid}.pem"


def write_private_key(private_key, keys_dir: str, kid: str, passphrase: str | None) -> Path:
    """Write the PKCS#8 PEM atomically with mode 0600."""
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    directory = Path(keys_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        os.replace(tmp, _pem_path(keys_dir, kid))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return _pem_path(keys_dir, kid)


def load_private_key(keys_dir: str, kid: str, passphrase: str | None):
    data = _pem_path(keys_dir, kid).read_bytes()
    password = passphrase.encode() if passphrase else None
    return serialization.load_pem_private_key(data, password=password)


def _new_key(alg: str, keys_dir: str, passphrase: str | None, status: str) -> SigningKey:
    private_key = generate_private_key(alg)
    jwk = public_jwk(private_key.public_key(), alg, "")
    kid = jwk_thumbprint(jwk)[:32]
    jwk["kid"] = kid
    write_private_key(private_key, keys_dir, kid, passphrase)
    now = utcnow()
    key = SigningKey(
        kid=kid,
        alg=alg,
        status=status,
        public_jwk=jwk,
        created_at=now,
        activated_at=now if status == "current" else None,
    )
    db.session.add(key)
    return key


def _lock_keys() -> None:
    """Serialize rotations across instances (PostgreSQL advisory lock)."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("SELECT pg_advisory_xact_lock(734271)"))


def keys_by_status() -> dict[str, list[SigningKey]]:
    result: dict[str, list[SigningKey]] = {"next": [], "current": [], "retired": []}
    for key in db.session.scalars(sa.select(SigningKey).order_by(SigningKey.created_at)):
        result[key.status].append(key)
    return result


def init_keys(alg: str, keys_dir: str, passphrase: str | None) -> list[SigningKey]:
    """Make a current and a next key when missing; returns the keys made."""
    _lock_keys()
    keys = keys_by_status()
    made = []
    if not keys["current"]:
        made.append(_new_key(alg, keys_dir, passphrase, "current"))
    if not keys["next"]:
        made.append(_new_key(alg, keys_dir, passphrase, "next"))
    db.session.flush()
    return made


def longest_token_ttl() -> int:
    value = db.session.scalar(sa.select(sa.func.max(Client.access_token_ttl)))
    return int(value or 3600)


def rotate_keys(alg: str, keys_dir: str, passphrase: str | None, actor: str) -> SigningKey:
    """Promote next to current, retire current, make a new next.

    The retired key stays published until every token it signed has expired:
    its retires_at is now + the longest client TTL + clock skew.
    """
    _lock_keys()
    keys = keys_by_status()
    now = utcnow()
    for old in keys["current"]:
        old.status = "retired"
        old.retires_at = now + timedelta(seconds=longest_token_ttl()) + CLOCK_SKEW
    db.session.flush()
    if keys["next"]:
        promoted = keys["next"][0]
        promoted.status = "current"
        promoted.activated_at = now
    else:
        promoted = _new_key(alg, keys_dir, passphrase, "current")
    db.session.flush()
    _new_key(alg, keys_dir, passphrase, "next")
    db.session.flush()
    audit.record(actor, "signing_key.rotated", promoted.kid, "system")
    return promoted


def purge_expired_keys(keys_dir: str) -> list[str]:
    """Delete retired keys whose tokens have all expired (rows and PEM files)."""
    now = utcnow()
    expired = db.session.scalars(
        sa.select(SigningKey).where(SigningKey.status == "retired", SigningKey.retires_at <= now)
    ).all()
    kids = []
    for key in expired:
        kids.append(key.kid)
        db.session.delete(key)
        _pem_path(keys_dir, key.kid).unlink(missing_ok=True)
    db.session.flush()
    return kids


def is_published(key: SigningKey, now: datetime) -> bool:
    if key.status in ("next", "current"):
        return True
    return key.retires_at is not None and key.retires_at > now


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    private_key: Any
    public_key: Any


@dataclass(frozen=True)
class KeySnapshot:
    """What one instance signs and verifies with, as of one database read."""

    current: LoadedKey | None
    verify_keys: dict[str, LoadedKey]
    jwks_body: bytes
    jwks_etag: str


class KeyRing:
    """Per-process cache of the signing keys, refreshed from the database.

    Refreshing every `refresh_interval` seconds bounds how long an instance
    keeps signing with a key another instance has rotated away.
    """

    def __init__(self, keys_dir: str, passphrase: str | None, refresh_interval: float = 10.0):
        self.keys_dir = keys_dir
        self.passphrase = passphrase
        self.refresh_interval = refresh_interval
        self._snapshot: KeySnapshot | None = None
        self._loaded_at = 0.0
        self._private: dict[str, LoadedKey] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> KeySnapshot:
        snap = self._snapshot
        if snap is None or time.monotonic() - self._loaded_at > self.refresh_interval:
            snap = self.reload()
        return snap

    def invalidate(self) -> None:
        self._loaded_at = 0.0

    def reload(self) -> KeySnapshot:
        with self._lock:
            rows = db.session.execute(
                sa.select(
                    SigningKey.kid,
                    SigningKey.alg,
                    SigningKey.status,
                    SigningKey.public_jwk,
                    SigningKey.retires_at,
                ).order_by(SigningKey.created_at)
            ).all()
            now = utcnow()
            verify: dict[str, LoadedKey] = {}
            published = []
            current = None
            for row in rows:
                if row.status == "retired" and (row.retires_at is None or row.retires_at <= now):
                    continue
                published.append(row.public_jwk)
                loaded = self._private.get(row.kid)
                if loaded is None:
                    loaded = self._load(row.kid, row.alg, row.public_jwk, row.status)
                    if loaded.private_key is not None:
                        self._private[row.kid] = loaded
                verify[row.kid] = loaded
                if row.status == "current":
                    current = loaded if loaded.private_key is not None else None
            body = json.dumps({"keys": published}, separators=(",", ":")).encode()
            etag = hashlib.sha256(body).hexdigest()[:32]
            snap = KeySnapshot(current, verify, body, etag)
            self._snapshot = snap
            self._loaded_at = time.monotonic()
            # Keep only the private keys still in use.
            self._private = {k: v for k, v in self._private.items() if k in verify}
            return snap

    def _load(self, kid: str, alg: str, jwk: dict, status: str) -> LoadedKey:
        public_key = jwt.PyJWK.from_dict(jwk).key
        private_key = None
        if status in ("current", "next"):
            try:
                private_key = load_private_key(self.keys_dir, kid, self.passphrase)
            except FileNotFoundError:
                private_key = None
        return LoadedKey(kid, alg, private_key, public_key)
