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


def load_pepper(configured: str | None, keys_dir: str) -> bytes:
    """The pepper from config, or from KEYS_DIR/pepper (made on first use)."""
    if configured:
        return configured.encode("utf-8")
    path = Path(keys_dir) / "pepper"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes starting at once agree on one pepper.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(_random.token_hex(32))
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty; delete it or set SECRET_PEPPER")
    return value.encode("utf-8")
