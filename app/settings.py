"""Configuration classes built from the environment (contract section 4)."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _default_database_url() -> str:
    instance = BASE_DIR / "instance"
    return f"sqlite:///{instance / 'ccserver.db'}"


class Config:
    """Production-safe defaults; every value can come from the environment."""

    TESTING = False
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL") or _default_database_url()
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    SQLALCHEMY_TRACK_MODIFICATIONS = False

    ISSUER = (os.environ.get("ISSUER") or "http://localhost:5000").rstrip("/")
    KEYS_DIR = os.environ.get("KEYS_DIR") or str(BASE_DIR / "keys")
    KEYS_PASSPHRASE = os.environ.get("KEYS_PASSPHRASE") or None
    SIGNING_ALG = os.environ.get("SIGNING_ALG") or "ES256"
    REDIS_URL = os.environ.get("REDIS_URL") or None
    # HMAC key for client-secret hashes; falls back to KEYS_DIR/pepper.
    SECRET_PEPPER = os.environ.get("SECRET_PEPPER") or None
    SECRET_KEY = os.environ.get("SECRET_KEY") or None

    # Audience of tokens whose request names none and whose client lists none.
    DEFAULT_AUDIENCE = os.environ.get("DEFAULT_AUDIENCE") or None
    MANAGEMENT_AUDIENCE = os.environ.get("MANAGEMENT_AUDIENCE") or None

    JWKS_MAX_AGE = _int("JWKS_MAX_AGE", 300)
    # Signing-key lifecycle (app/signing/keys.py): the current key is
    # replaced every KEY_ROTATION_INTERVAL seconds (0: only by hand); each
    # process re-reads the keys every KEY_REFRESH_INTERVAL seconds and checks
    # the schedule every KEY_SCHEDULE_INTERVAL seconds; KEY_CLOCK_SKEW is the
    # allowance for verifiers' clocks.
    KEY_ROTATION_INTERVAL = _int("KEY_ROTATION_INTERVAL", 30 * 86400)
    KEY_REFRESH_INTERVAL = float(os.environ.get("KEY_REFRESH_INTERVAL") or 10.0)
    KEY_SCHEDULE_INTERVAL = float(os.environ.get("KEY_SCHEDULE_INTERVAL") or 60.0)
    KEY_CLOCK_SKEW = _int("KEY_CLOCK_SKEW", 60)
    # Connections per process: one per gunicorn thread plus one for the
    # last_used_at writer (see gunicorn.conf.py).
    DB_POOL_SIZE = _int("DB_POOL_SIZE", _int("THREADS", 4) + 1)
    # Seconds a cached client record (and its secret hashes) may be stale on
    # instances other than the one that changed it; the contract allows 5.
    CLIENT_CACHE_TTL = float(os.environ.get("CLIENT_CACHE_TTL") or 2.0)
    # last_used_at is written at most this often per secret or key.
    LAST_USED_RESOLUTION = _int("LAST_USED_RESOLUTION", 60)

    MAX_CONTENT_LENGTH = 64 * 1024
    AUTH_FAILURE_LIMIT_CLIENT = _int("AUTH_FAILURE_LIMIT_CLIENT", 20)
    AUTH_FAILURE_LIMIT_ADDRESS = _int("AUTH_FAILURE_LIMIT_ADDRESS", 300)
    AUTH_FAILURE_WINDOW = _int("AUTH_FAILURE_WINDOW", 60)
    # Keep each process's copy of the blocks current by LISTEN/NOTIFY or Redis
    # pub/sub (app/state/failure_feed.py) instead of reading counters per request.
    AUTH_FAILURE_FEED = _int("AUTH_FAILURE_FEED", 1) != 0
    # Comma-separated addresses or CIDRs of reverse proxies whose
    # X-Forwarded-For is believed (app/proxy.py); empty: the header is ignored.
    TRUSTED_PROXIES = os.environ.get("TRUSTED_PROXIES") or ""


class DevelopmentConfig(Config):
    """Laptop defaults: SQLite under instance/, http://localhost:5000."""


class TestingConfig(Config):
    """Used by the test suite; DATABASE_URL still picks the database."""

    TESTING = True


def finalize(config: dict) -> None:
    """Fill values that depend on others once overrides are applied."""
    issuer = config["ISSUER"].rstrip("/")
    config["ISSUER"] = issuer
    config["DEFAULT_AUDIENCE"] = config.get("DEFAULT_AUDIENCE") or issuer
    config["MANAGEMENT_AUDIENCE"] = config.get("MANAGEMENT_AUDIENCE") or f"{issuer}/api"
    config["TOKEN_ENDPOINT"] = f"{issuer}/oauth2/token"
    config.setdefault("ASSERTION_SIGNING_ALGS", ["RS256", "PS256", "ES256", "EdDSA"])
    if config["SIGNING_ALG"] not in ("ES256", "RS256", "PS256", "EdDSA"):
        raise ValueError(
            f"SIGNING_ALG must be ES256, RS256, PS256 or EdDSA, not {config['SIGNING_ALG']!r}"
        )
