"""Client secrets: generation, keyed hashing and constant-time verification.

Our secrets carry 256 bits from the OS CSPRNG, so guessing one is hopeless
whatever the hash; a slow hash (bcrypt, PBKDF2) only protects low-entropy
passwords and would cost milliseconds per token request. We store
HMAC-SHA-256(pepper, secret): a stolen database alone is useless without the
pepper, which lives outside the database (SECRET_PEPPER or KEYS_DIR/pepper).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _random
from pathlib import Path

from app.settings import MIN_PEPPER_BYTES
from app.signing.keys_dir import FILE_MODE, PEPPER_FILE, ensure_keys_dir

SECRET_PREFIX = "ccs_"
HINT_LENGTH = 4


def generate_secret() -> str:
    """A new client secret: the prefix plus 32 random bytes, URL-safe."""
    return SECRET_PREFIX + _random.token_urlsafe(32)


def hash_secret(secret: str, pepper: bytes) -> str:
    """HMAC-SHA-256 of the secret under the server's pepper, hex encoded."""
    return hmac.new(pepper, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def secret_hint(secret: str) -> str:
    return secret[-HINT_LENGTH:]


def verify_secret(secret: str, pepper: bytes, hashes: list[str]) -> int | None:
    """Index of the hash the secret matches, or None; constant time per hash.

    Every candidate is compared (no early exit), so timing reveals nothing
    about which hash matched.
    """
    candidate = hash_secret(secret, pepper)
    found = None
    for index, stored in enumerate(hashes):
        if hmac.compare_digest(candidate, stored) and found is None:
            found = index
    return found


#: What the pepper's fingerprint is the HMAC of: a label no client secret can
#: equal (ours begin with SECRET_PREFIX), so the fingerprint is never a
#: secret's hash nor the Flask key derived from the pepper.
FINGERPRINT_LABEL = b"ccserver pepper fingerprint"


def pepper_fingerprint(pepper: bytes) -> str:
    """HMAC-SHA-256(pepper, FINGERPRINT_LABEL), hex: tells peppers apart, reveals none.

    Stored in the database so that a start with another pepper is refused
    (docs/security.md#the-pepper).
    """
    return hmac.new(pepper, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


class PepperMissing(RuntimeError):
    """KEYS_DIR/pepper does not exist and the caller may not make a new one."""


def load_pepper(configured: str | None, keys_dir: str, *, create: bool = True) -> bytes:
    """The pepper from config, or from KEYS_DIR/pepper (made when missing, if `create`).

    :raise PepperMissing: the file is missing and `create` is false.
    :raise RuntimeError: the file is empty or shorter than MIN_PEPPER_BYTES.
    """
    if configured:
        return configured.encode("utf-8", "surrogateescape")
    path = Path(keys_dir) / PEPPER_FILE
    if not path.exists():
        if not create:
            raise PepperMissing(str(path))
        ensure_keys_dir(keys_dir)
        try:
            # O_EXCL: two processes starting at once agree on one pepper.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(_random.token_hex(32))
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty; delete it or set SECRET_PEPPER")
    if len(value.encode("utf-8", "surrogateescape")) < MIN_PEPPER_BYTES:
        raise RuntimeError(f"{path} holds fewer than {MIN_PEPPER_BYTES} bytes")
    return value.encode("utf-8", "surrogateescape")
