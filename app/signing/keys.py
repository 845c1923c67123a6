"""The server's signing keys: generate, store, load and rotate.

Status (next/current/retired) and the public JWK live in the database so
every instance agrees on it; each private key is a PEM file in KEYS_DIR,
encrypted with KEYS_PASSPHRASE when one is set. The partial unique indexes on
signing_keys allow at most one current and one next key.

Lifecycle (the JWKS publishes every next, current and unexpired retired key):

    created as next ──rotate──▶ current ──rotate──▶ retired ──retires_at──▶ purged

A key is in every instance's JWKS at most KEY_REFRESH_INTERVAL after it is
created, and verifiers may cache an older JWKS for JWKS_MAX_AGE. So no
instance signs with a key until it has existed for the *publish delay*
(JWKS_MAX_AGE + KEY_REFRESH_INTERVAL + KEY_CLOCK_SKEW): each instance signs
with the newest current-or-retired published key that is at least that old
(see `choose_signing_key`). With the default schedule the next key is 30
days old when promoted, so the switch is immediate; a manual rotation right
after another one keeps signing with the previous key until the new current
is old enough.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from flask import current_app, has_app_context
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from app.audit import events as audit
from app.extensions import db
from app.models import Client, SigningKey
from app.timeutil import utcnow

log = logging.getLogger(__name__)

_ADVISORY_LOCK_ID = 734271


@dataclass(frozen=True)
class KeyTiming:
    """The delays of the key lifecycle, in seconds (from the app config)."""

    jwks_max_age: float = 300.0
    refresh_interval: float = 10.0
    clock_skew: float = 60.0

    @property
    def publish_delay(self) -> timedelta:
        """How long a key must exist before any instance may sign with it."""
        return timedelta(seconds=self.jwks_max_age + self.refresh_interval + self.clock_skew)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> KeyTiming:
        return cls(
            float(config.get("JWKS_MAX_AGE", 300)),
            float(config.get("KEY_REFRESH_INTERVAL", 10.0)),
            float(config.get("KEY_CLOCK_SKEW", 60)),
        )


def _timing() -> KeyTiming:
    return KeyTiming.from_config(current_app.config) if has_app_context() else KeyTiming()


#: The private keys the server signs with, one kind per SIGNING_ALG family.
SigningPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def generate_private_key(alg: str) -> SigningPrivateKey:
    """A fresh private key for the JWS algorithm."""
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg in ("RS256", "PS256"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def public_jwk(public_key: PublicKeyTypes, alg: str, kid: str) -> dict[str, Any]:
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


def write_private_key(
    private_key: PrivateKeyTypes, keys_dir: str, kid: str, passphrase: str | None
) -> Path:
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


def load_private_key(keys_dir: str, kid: str, passphrase: str | None) -> PrivateKeyTypes:
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
    """Serialize key changes across instances until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write that
    matches no row still takes the database's RESERVED lock, so a second
    writer waits (busy timeout) instead of reading a state about to change.
    """
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_ID})"))
    elif db.engine.dialect.name == "sqlite":
        db.session.execute(sa.text("UPDATE signing_keys SET status = status WHERE 1 = 0"))


def keys_by_status() -> dict[str, list[SigningKey]]:
    """Every key by status, oldest first, re-read from the database."""
    result: dict[str, list[SigningKey]] = {"next": [], "current": [], "retired": []}
    query = (
        sa.select(SigningKey)
        .order_by(SigningKey.created_at, SigningKey.kid)
        .execution_options(populate_existing=True)
    )
    for key in db.session.scalars(query):
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


def rotate_keys(
    alg: str,
    keys_dir: str,
    passphrase: str | None,
    actor: str,
    timing: KeyTiming | None = None,
) -> SigningKey:
    """Promote next to current, retire current, make a new next; returns the new current.

    Instances may keep signing with the retired key until the promoted one
    has been published for the publish delay (plus one refresh), so the
    retired key stays published until that moment + the longest client TTL
    + clock skew: every token it signed has expired by then.
    """
    timing = timing or _timing()
    _lock_keys()
    keys = keys_by_status()
    now = utcnow()
    promoted = keys["next"][0] if keys["next"] else _new_key(alg, keys_dir, passphrase, "next")
    signs_until = max(now, _aware(promoted.created_at) + timing.publish_delay) + timedelta(
        seconds=timing.refresh_interval
    )
    skew = timedelta(seconds=timing.clock_skew)
    for old in keys["current"]:
        old.status = "retired"
        old.retires_at = signs_until + timedelta(seconds=longest_token_ttl()) + skew
    db.session.flush()
    promoted.status = "current"
    promoted.activated_at = now
    db.session.flush()
    _new_key(alg, keys_dir, passphrase, "next")
    db.session.flush()
    audit.record(actor, "signing_key.rotated", promoted.kid, "system")
    return promoted


def rotation_due(interval: float, now: datetime | None = None) -> bool:
    """True when the current key has been current for `interval` seconds (0: never)."""
    if interval <= 0:
        return False
    activated = db.session.execute(
        sa.select(SigningKey.activated_at, SigningKey.created_at).where(
            SigningKey.status == "current"
        )
    ).first()
    if activated is None:
        # Only `keys init` makes the first keys; a missing current with a
        # next waiting is repaired by promoting it.
        waiting = db.session.scalar(sa.select(sa.func.count()).where(SigningKey.status == "next"))
        return bool(waiting)
    since = _aware(activated.activated_at or activated.created_at)
    return since <= (now or utcnow()) - timedelta(seconds=interval)


def rotate_if_due(
    alg: str, keys_dir: str, passphrase: str | None, interval: float, actor: str
) -> SigningKey | None:
    """Rotate once if the schedule says so; compare-and-set under the key lock.

    Two instances that find the rotation due at the same moment both get
    here; the second one to take the lock re-reads the keys, sees a fresh
    current key and does nothing, so one rotation happens, not two.
    """
    if not rotation_due(interval):
        return None
    _lock_keys()
    if not rotation_due(interval):
        return None
    return rotate_keys(alg, keys_dir, passphrase, actor)


def expired_keys_exist(now: datetime | None = None) -> bool:
    """True when a retired key is past its retires_at (cheap, lock-free check)."""
    kid = db.session.scalar(
        sa.select(SigningKey.kid)
        .where(SigningKey.status == "retired", SigningKey.retires_at <= (now or utcnow()))
        .limit(1)
    )
    return kid is not None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def purge_expired_keys(keys_dir: str) -> list[str]:
    """Delete retired keys whose tokens have all expired (rows and PEM files)."""
    _lock_keys()
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


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    private_key: Any
    public_key: Any


@dataclass(frozen=True)
class KeySnapshot:
    """What one instance signs and verifies with, as of one database read.

    `current` is the key this instance signs with (see `choose_signing_key`),
    which lags the database's current key until that one is safely published.
    """

    current: LoadedKey | None
    verify_keys: dict[str, LoadedKey]
    jwks_body: bytes
    jwks_etag: str


@dataclass(frozen=True)
class _Candidate:
    kid: str
    status: str
    created_at: datetime


def choose_signing_key(
    candidates: list[_Candidate], now: datetime, publish_delay: timedelta
) -> str | None:
    """The kid to sign with: never a next key, never one too new to be in cached JWKS.

    The current key once it was created at least `publish_delay` ago;
    until then the newest retired (still published) key that old. When no
    key is that old, every key was made within the last few minutes by `keys
    init` (and rotations right after it), so no verifier can hold a JWKS
    cached from before them: the current key then.
    """
    current = [c for c in candidates if c.status == "current"]
    retired = sorted(
        (c for c in candidates if c.status == "retired"), key=lambda c: _aware(c.created_at)
    )
    ripe = [c for c in current + retired[::-1] if _aware(c.created_at) <= now - publish_delay]
    if ripe:
        return ripe[0].kid
    if current or retired:
        return (current or retired[::-1])[0].kid
    return None


class KeyRing:
    """Per-process cache of the signing keys, refreshed from the database.

    Refreshing every `refresh_interval` seconds bounds how long an instance
    keeps serving a JWKS, or signing with a key, that another instance has
    rotated away.
    """

    def __init__(
        self,
        keys_dir: str,
        passphrase: str | None,
        refresh_interval: float = 10.0,
        publish_delay: timedelta | None = None,
    ):
        self.keys_dir = keys_dir
        self.passphrase = passphrase
        self.refresh_interval = refresh_interval
        self.publish_delay = publish_delay if publish_delay is not None else timedelta(0)
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
        self._snapshot = None

    def reload(self) -> KeySnapshot:
        with self._lock:
            rows = db.session.execute(
                sa.select(
                    SigningKey.kid,
                    SigningKey.alg,
                    SigningKey.status,
                    SigningKey.public_jwk,
                    SigningKey.created_at,
                    SigningKey.retires_at,
                ).order_by(SigningKey.created_at, SigningKey.kid)
            ).all()
            now = utcnow()
            verify: dict[str, LoadedKey] = {}
            published = []
            candidates: list[_Candidate] = []
            for row in rows:
                if row.status == "retired" and (
                    row.retires_at is None or _aware(row.retires_at) <= now
                ):
                    continue
                published.append(row.public_jwk)
                loaded = self._private.get(row.kid)
                if loaded is None:
                    loaded = self._load(row.kid, row.alg, row.public_jwk)
                    if loaded.private_key is not None:
                        self._private[row.kid] = loaded
                verify[row.kid] = loaded
                if loaded.private_key is not None:
                    candidates.append(_Candidate(row.kid, row.status, row.created_at))
            signing = choose_signing_key(candidates, now, self.publish_delay)
            body = json.dumps({"keys": published}, separators=(",", ":")).encode()
            etag = hashlib.sha256(body).hexdigest()[:32]
            snap = KeySnapshot(verify.get(signing) if signing else None, verify, body, etag)
            self._snapshot = snap
            self._loaded_at = time.monotonic()
            # Keep only the private keys still in use.
            self._private = {k: v for k, v in self._private.items() if k in verify}
            return snap

    def _load(self, kid: str, alg: str, jwk: dict[str, Any]) -> LoadedKey:
        public_key = jwt.PyJWK.from_dict(jwk).key
        private_key: PrivateKeyTypes | None
        try:
            private_key = load_private_key(self.keys_dir, kid, self.passphrase)
        except FileNotFoundError:
            # Another instance's key whose PEM is not on this volume: verify
            # with it, never sign with it.
            private_key = None
        except (TypeError, ValueError):
            # Wrong or missing KEYS_PASSPHRASE: keep serving the JWKS and let
            # /readyz and the token endpoint answer 503 rather than 500.
            log.error("cannot decrypt signing key %s: check KEYS_PASSPHRASE", kid)
            private_key = None
        return LoadedKey(kid, alg, private_key, public_key)
