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
from functools import lru_cache
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
from app.errors import ServiceUnavailable
from app.extensions import db
from app.models import Client, SigningKey
from app.signing.keys_dir import ensure_keys_dir
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


_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public JWK."""
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    values = tuple(jwk[k] for k in members)
    if all(isinstance(value, str) for value in values):
        # A DPoP client sends the same key with every proof: 3 % of a DPoP
        # token request in process went here (docs/performance.md).
        return _thumbprint(members, values)
    return _thumbprint.__wrapped__(members, values)


@lru_cache(maxsize=1024)
def _thumbprint(members: tuple[str, ...], values: tuple[Any, ...]) -> str:
    canonical = json.dumps(dict(zip(members, values, strict=True)), separators=(",", ":"))
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
    directory = ensure_keys_dir(keys_dir)
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


#: Why a key's private half cannot be used (see `open_private_key`).
MISSING = "missing"
UNREADABLE = "unreadable"

_KEY_MEMBERS = ("kty", "crv", "x", "y", "n", "e")


def open_private_key(
    keys_dir: str, kid: str, jwk: Mapping[str, Any], passphrase: str | None
) -> tuple[PrivateKeyTypes | None, str | None]:
    """The private key of a stored key and None, or None and why it cannot be used.

    MISSING: no `<kid>.pem` in KEYS_DIR. UNREADABLE: the file is there but
    KEYS_PASSPHRASE does not open it (wrong passphrase, an encrypted key
    without one, a plaintext key where one is set, a damaged file), this
    process may not read it, or it holds another key than the public JWK the
    database publishes.
    """
    try:
        private_key = load_private_key(keys_dir, kid, passphrase)
    except FileNotFoundError:
        return None, MISSING
    except (TypeError, ValueError, OSError):
        # OSError: a file this process may not read is as useless as one it
        # cannot decrypt, and must not turn /readyz into a 500.
        return None, UNREADABLE
    try:
        public = public_jwk(private_key.public_key(), str(jwk.get("alg", "")), kid)
    except TypeError:
        return None, UNREADABLE
    if any(public.get(m) != jwk.get(m) for m in _KEY_MEMBERS):
        return None, UNREADABLE
    return private_key, None


class SigningKeysUnreadable(ServiceUnavailable):
    """KEYS_PASSPHRASE does not open a stored key: making or promoting keys is refused.

    A key written now would be one the other instances (or this one) cannot
    read, and promoting one that cannot be read leaves every instance signing
    with a retired key (docs/decisions.md#secure-defaults).
    """

    code = "signing_keys_unreadable"


def _published(keys: dict[str, list[SigningKey]], now: datetime) -> list[SigningKey]:
    """The keys in the JWKS: next, current and retired ones not yet past retires_at."""
    retired = [
        k for k in keys["retired"] if k.retires_at is not None and _aware(k.retires_at) > now
    ]
    return keys["next"] + keys["current"] + retired


def _problems(keys: list[SigningKey], keys_dir: str, passphrase: str | None) -> dict[str, str]:
    found = {}
    for key in keys:
        _, problem = open_private_key(keys_dir, key.kid, key.public_jwk, passphrase)
        if problem is not None:
            found[key.kid] = problem
    return found


def _refuse_unless_readable(
    keys: dict[str, list[SigningKey]], keys_dir: str, passphrase: str | None, doing: str
) -> dict[str, str]:
    """Refuse when a published key's file is there but KEYS_PASSPHRASE does not open it.

    Returns every published key's problem (a missing file is not refused
    here: the caller decides whether it matters).
    """
    problems = _problems(_published(keys, utcnow()), keys_dir, passphrase)
    unreadable = sorted(kid for kid, problem in problems.items() if problem == UNREADABLE)
    if unreadable:
        raise SigningKeysUnreadable(
            f"KEYS_PASSPHRASE does not open signing key {', '.join(unreadable)} in KEYS_DIR:"
            f" refusing to {doing}, which would write or promote a key other instances"
            " cannot read; set the KEYS_PASSPHRASE the keys were made with"
            " (docs/operations.md#signing-keys-that-cannot-be-read)"
        )
    return problems


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


def keys_for_listing() -> list[SigningKey]:
    """Every key as listings show them: next, current, then retired keys newest first."""
    order = {"next": 0, "current": 1, "retired": 2}
    keys = [key for group in keys_by_status().values() for key in group]
    keys.sort(key=lambda k: (order[k.status], -k.created_at.timestamp()))
    return keys


def init_keys(alg: str, keys_dir: str, passphrase: str | None) -> list[SigningKey]:
    """Make a current and a next key when missing; returns the keys made.

    A next key whose file is gone from KEYS_DIR is replaced (it has signed
    nothing, and no instance could ever sign with it).

    :raise SigningKeysUnreadable: KEYS_PASSPHRASE does not open a stored key.
    """
    _lock_keys()
    keys = keys_by_status()
    problems = _refuse_unless_readable(keys, keys_dir, passphrase, "make keys")
    for lost in [k for k in keys["next"] if problems.get(k.kid) == MISSING]:
        log.warning("replacing next signing key %s: its file is not in KEYS_DIR", lost.kid)
        db.session.delete(lost)
        keys["next"].remove(lost)
    db.session.flush()
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

    :raise SigningKeysUnreadable: KEYS_PASSPHRASE does not open a stored key,
        or the next key's file is not in KEYS_DIR: nothing changes.
    """
    timing = timing or _timing()
    _lock_keys()
    keys = keys_by_status()
    problems = _refuse_unless_readable(keys, keys_dir, passphrase, "rotate")
    lost = [k.kid for k in keys["next"] if problems.get(k.kid) == MISSING]
    if lost:
        raise SigningKeysUnreadable(
            f"next signing key {lost[0]} has no file in KEYS_DIR: refusing to promote a key"
            " no instance can sign with; run `flask keys init` to replace it"
        )
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
    #: The database's current key, and the published keys this instance
    #: cannot sign with (file missing or not opened by KEYS_PASSPHRASE).
    database_current: str | None = None
    unusable: frozenset[str] = frozenset()

    @property
    def ready(self) -> bool:
        """True when this instance can sign with the database's current key.

        While that key is too new to sign with, `current` is a retired key,
        which is fine; a current key this instance cannot read is not: it
        would go on signing with a retired key until that one leaves the JWKS.
        """
        return (
            self.current is not None
            and self.database_current is not None
            and self.database_current not in self.unusable
        )


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
            unusable = set()
            database_current = None
            for row in rows:
                if row.status == "retired" and (
                    row.retires_at is None or _aware(row.retires_at) <= now
                ):
                    continue
                published.append(row.public_jwk)
                if row.status == "current":
                    database_current = row.kid
                loaded = self._private.get(row.kid)
                if loaded is None:
                    loaded = self._load(row.kid, row.alg, row.public_jwk)
                    if loaded.private_key is not None:
                        self._private[row.kid] = loaded
                verify[row.kid] = loaded
                if loaded.private_key is not None:
                    candidates.append(_Candidate(row.kid, row.status, row.created_at))
                else:
                    unusable.add(row.kid)
            signing = choose_signing_key(candidates, now, self.publish_delay)
            body = json.dumps({"keys": published}, separators=(",", ":")).encode()
            etag = hashlib.sha256(body).hexdigest()[:32]
            snap = KeySnapshot(
                verify.get(signing) if signing else None,
                verify,
                body,
                etag,
                database_current,
                frozenset(unusable),
            )
            self._snapshot = snap
            self._loaded_at = time.monotonic()
            # Keep only the private keys still in use.
            self._private = {k: v for k, v in self._private.items() if k in verify}
            return snap

    def _load(self, kid: str, alg: str, jwk: dict[str, Any]) -> LoadedKey:
        public_key = jwt.PyJWK.from_dict(jwk).key
        private_key, problem = open_private_key(self.keys_dir, kid, jwk, self.passphrase)
        if problem == UNREADABLE:
            # Wrong or missing KEYS_PASSPHRASE: keep serving the JWKS and let
            # /readyz and the token endpoint answer 503 rather than 500.
            log.error("cannot decrypt signing key %s: check KEYS_PASSPHRASE", kid)
        # MISSING: a key whose PEM is not on this volume: verify with it,
        # never sign with it.
        return LoadedKey(kid, alg, private_key, public_key)


def report_key_files(keys_dir: str, passphrase: str | None) -> dict[str, str]:
    """Log how many published keys this instance cannot sign with; returns kid -> why.

    Run once at start, so a wrong KEYS_PASSPHRASE or a KEYS_DIR that is not
    the shared one shows in the log before the first token request.
    """
    keys = _published(keys_by_status(), utcnow())
    problems = _problems(keys, keys_dir, passphrase)
    if problems:
        unreadable = sorted(k for k, p in problems.items() if p == UNREADABLE)
        missing = sorted(k for k, p in problems.items() if p == MISSING)
        log.warning(
            "%d of %d signing keys cannot be used by this instance: %d unreadable with"
            " KEYS_PASSPHRASE (%s), %d missing from KEYS_DIR (%s)",
            len(problems),
            len(keys),
            len(unreadable),
            ", ".join(unreadable) or "-",
            len(missing),
            ", ".join(missing) or "-",
        )
    return problems
