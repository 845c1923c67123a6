"""The server's settings: read from the environment when `create_app` runs, typed, checked.

README.md ("Configuration") documents every setting. Each is an environment
variable of the same name in capitals and, once the app is built, an
`app.config` key of that name (`database_url` is Flask-SQLAlchemy's
`SQLALCHEMY_DATABASE_URI`), so `current_app.config["ISSUER"]` and
`settings().issuer` read the same value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from flask import Flask, current_app
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app.protocol import SIGNING_ALGS

BASE_DIR = Path(__file__).resolve().parent.parent

#: Where create_app keeps the app's Settings (read them with `settings()`).
EXTENSION_KEY = "ccserver.settings"

#: The port served when PORT is unset (`make run`, `make serve-prod`).
DEFAULT_PORT = 5000

#: Database kinds the server runs on, and the SQLAlchemy driver each must use.
DATABASE_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}

#: The shortest pepper accepted (SECRET_PEPPER or KEYS_DIR/pepper), in bytes: the
#: HMAC-SHA-256 key of every client-secret hash (docs/security.md#the-pepper).
MIN_PEPPER_BYTES = 32

#: Fields only create_app's overrides set: not read from the environment.
_OVERRIDE_ONLY = frozenset({"max_content_length", "assertion_signing_algs"})
#: Fields read from the environment that are not app.config keys.
_ENVIRONMENT_ONLY = frozenset({"threads", "port"})
#: app.config keys that are not the field's name in capitals.
_CONFIG_KEYS = {"database_url": "SQLALCHEMY_DATABASE_URI"}


class SettingsError(ValueError):
    """A setting has a value the server cannot run with; the message names it."""


def _default_database_url() -> str:
    return f"sqlite:///{BASE_DIR / 'instance' / 'ccserver.db'}"


def normalise_database_url(value: str) -> str:
    """DATABASE_URL checked for a database kind and driver this server runs on.

    `postgresql://` and `postgres://` (as hosting platforms write them) mean
    psycopg 3, the one PostgreSQL driver installed.

    :raise ValueError: another database or driver, or not a URL; the message
        says what to write instead and never echoes the URL (it may hold a password).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(
            "not a database URL; write postgresql+psycopg://USER:PASSWORD@HOST:5432/NAME"
            " or sqlite:///PATH"
        ) from None
    backend = url.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in DATABASE_DRIVERS:
        raise ValueError(
            f"{backend!r} is not supported; use PostgreSQL"
            " (postgresql+psycopg://USER:PASSWORD@HOST:5432/NAME) or SQLite (sqlite:///PATH)"
        )
    driver = url.drivername.partition("+")[2]
    expected = DATABASE_DRIVERS[backend]
    if driver and driver != expected:
        raise ValueError(
            f"the {driver!r} driver is not installed; write {backend}+{expected}:// (or {backend}://)"
        )
    if backend == "postgresql" and url.drivername != "postgresql+psycopg":
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return value


def _one_of(values: tuple[str, ...]) -> str:
    return ", ".join(values[:-1]) + " or " + values[-1]


class _Environment(PydanticBaseSettingsSource):
    """os.environ as it is now. An empty variable counts as unset, as it always has."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in _OVERRIDE_ONLY:
            return None, field_name, False
        return os.environ.get(field_name.upper()) or None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[name] = value
        return values


class Settings(BaseSettings):
    """Every setting, from create_app's overrides, else the environment, else the default.

    Fields are validated in the order written: the ones derived from others
    (the audiences, the pool size) come after what they are derived from.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    # repr=False: URLs may hold passwords, and the rest are secrets.
    database_url: str = Field(default_factory=_default_database_url, repr=False)
    # The port `make run` and `make serve-prod` listen on; also the port of
    # the default ISSUER, so that `PORT=5001 make run` names itself rightly.
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    # Unset (or empty): http://localhost:PORT.
    issuer: str = ""
    keys_dir: str = str(BASE_DIR / "keys")
    keys_passphrase: str | None = Field(default=None, repr=False)
    signing_alg: str = "ES256"
    redis_url: str | None = Field(default=None, repr=False)
    # HMAC key for client-secret hashes; falls back to KEYS_DIR/pepper.
    secret_pepper: str | None = Field(default=None, repr=False)
    # Unset: create_app derives one from the pepper.
    secret_key: str | None = Field(default=None, repr=False)

    # Audience of tokens whose request names none and whose client lists none;
    # unset (or empty): ISSUER.
    default_audience: str = ""
    # Unset (or empty): ISSUER/api.
    management_audience: str = ""

    jwks_max_age: int = 300
    # Signing-key lifecycle (app/signing/keys.py): the current key is
    # replaced every KEY_ROTATION_INTERVAL seconds (0: only by hand); each
    # process re-reads the keys every KEY_REFRESH_INTERVAL seconds and checks
    # the schedule every KEY_SCHEDULE_INTERVAL seconds; KEY_CLOCK_SKEW is the
    # allowance for verifiers' clocks.
    key_rotation_interval: int = 30 * 86400
    key_refresh_interval: float = 10.0
    key_schedule_interval: float = 60.0
    key_clock_skew: int = 60

    # gunicorn's threads per worker (gunicorn.conf.py); only sizes the pool.
    threads: int = 4
    # Connections per process: one per gunicorn thread plus one for the
    # last_used_at writer. Unset: THREADS + 1.
    db_pool_size: int = Field(default_factory=lambda data: data.get("threads", 4) + 1)
    # Seconds a cached client record (and its secret hashes) may be stale on
    # instances other than the one that changed it; docs allow at most 5.
    client_cache_ttl: float = 2.0
    # last_used_at is written at most this often per secret or key.
    last_used_resolution: int = 60

    # Failed client authentications per window (app/oauth/throttle.py): per
    # client id from one address, per address, per client id from all; 0: off.
    auth_failure_limit_client: int = 20
    auth_failure_limit_address: int = 300
    auth_failure_limit_client_total: int = 1000
    auth_failure_window: int = 60
    # Keep each process's copy of the blocks current by LISTEN/NOTIFY or Redis
    # pub/sub (app/state/failure_feed.py) instead of reading counters per request.
    auth_failure_feed: bool = True
    # PostgreSQL: the token path's autocommit connections (replay cache, failure
    # counters) commit without waiting for the WAL flush (app/state/autocommit.py);
    # 0 where a pooler refuses the `options` startup parameter.
    db_async_commit: bool = True
    # Comma-separated addresses or CIDRs (or a list of them) of reverse proxies
    # whose X-Forwarded-For is believed (app/http/client_address.py); empty:
    # the header is ignored.
    trusted_proxies: str | list[str] = ""
    # How those proxies forward the client's TLS certificate (app/http/client_cert.py):
    # rfc9440 (Client-Cert: :base64 DER:), nginx (Client-Cert: URL-encoded PEM)
    # or xfcc (Envoy's X-Forwarded-Client-Cert).
    client_cert_format: Literal["rfc9440", "nginx", "xfcc"] = "rfc9440"
    # A header in which the proxy reports its chain validation ("SUCCESS");
    # empty: every forwarded certificate counts as verified by the proxy.
    client_cert_verify_header: str = ""
    # text: one human-readable line per request (development); json: every
    # line, the servers' own included, one JSON object (serve.py and
    # gunicorn.conf.py default to json). app/http/logs.py.
    log_format: Literal["text", "json"] = "text"
    # Set: /metrics answers only requests with `Authorization: Bearer <it>`.
    metrics_token: str | None = Field(default=None, repr=False)
    # RFC 9449 §8: DPoP proofs at the token endpoint and the management API
    # must carry a server nonce (stateless, app/oauth/rfc9449.py); 0: off.
    dpop_nonces: bool = False
    # Federated issuers and their key URLs over http, keys fetched from any
    # address (docs/api.md §1.3): tests and labs only; create_app warns at start.
    federation_allow_insecure: bool = False

    # Request bodies are limited to 64 KiB (413); Flask's own key.
    max_content_length: int | None = 64 * 1024
    # JWS algorithms accepted on client assertions (RFC 7523) and listed in the
    # RFC 8414 metadata.
    assertion_signing_algs: list[str] = Field(default_factory=lambda: list(SIGNING_ALGS))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Overrides first; no .env file and no secrets directory, as before.
        return init_settings, _Environment(settings_cls)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("issuer", mode="before")
    @classmethod
    def _issuer(cls, value: Any, info: ValidationInfo) -> Any:
        # ISSUER unset follows PORT (a failed PORT is reported as itself).
        if not value:
            return f"http://localhost:{info.data.get('port', DEFAULT_PORT)}"
        return value.rstrip("/") if isinstance(value, str) else value

    @field_validator("secret_pepper")
    @classmethod
    def _long_pepper(cls, value: str | None) -> str | None:
        # Never echo the value, nor its length: it is a secret.
        if value and len(value.encode("utf-8", "surrogateescape")) < MIN_PEPPER_BYTES:
            raise ValueError(
                f"must be at least {MIN_PEPPER_BYTES} bytes; make one with"
                " `python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        return value

    @field_validator("signing_alg")
    @classmethod
    def _known_signing_alg(cls, value: str) -> str:
        if value not in SIGNING_ALGS:
            raise ValueError(f"must be {_one_of(SIGNING_ALGS)}, not {value!r}")
        return value

    # An override of None means unset, as it did when overrides were a dict
    # laid over the environment's values. (A failed ISSUER or THREADS is
    # reported as itself; the value derived from it is then left empty.)
    @field_validator("default_audience", mode="before")
    @classmethod
    def _default_audience(cls, value: Any, info: ValidationInfo) -> Any:
        return value or info.data.get("issuer", "")

    @field_validator("management_audience", mode="before")
    @classmethod
    def _management_audience(cls, value: Any, info: ValidationInfo) -> Any:
        issuer = info.data.get("issuer")
        return value or (f"{issuer}/api" if issuer is not None else "")

    @field_validator("db_pool_size", mode="before")
    @classmethod
    def _pool_size(cls, value: Any, info: ValidationInfo) -> Any:
        return value if value is not None else info.data.get("threads", 4) + 1

    @field_validator("auth_failure_feed", "db_async_commit", mode="before")
    @classmethod
    def _feed_switch(cls, value: Any) -> Any:
        # The variable is a number: 0 turns the feed off, any other on.
        if isinstance(value, str | int):
            try:
                return int(value) != 0
            except ValueError:
                raise ValueError("must be a number (0: off)") from None
        return value

    @field_validator("dpop_nonces", "federation_allow_insecure", mode="before")
    @classmethod
    def _zero_or_one(cls, value: Any) -> Any:
        # The variable is a number, as AUTH_FAILURE_FEED: 0 off, 1 on.
        if isinstance(value, str):
            if value.strip() not in ("0", "1"):
                raise ValueError("must be 0 or 1")
            return value.strip() == "1"
        return value

    @field_validator("assertion_signing_algs")
    @classmethod
    def _known_assertion_algs(cls, value: list[str]) -> list[str]:
        unknown = [alg for alg in value if alg not in SIGNING_ALGS]
        if unknown:
            raise ValueError(f"each must be {_one_of(SIGNING_ALGS)}, not {unknown[0]!r}")
        return value

    @property
    def token_endpoint(self) -> str:
        """The token endpoint's URL: the audience client assertions must name (RFC 7523 §3)."""
        return f"{self.issuer}/oauth2/token"

    def flask_config(self) -> dict[str, Any]:
        """The settings under their app.config keys."""
        values = {
            _CONFIG_KEYS.get(name, name.upper()): getattr(self, name)
            for name in type(self).model_fields
            if name not in _ENVIRONMENT_ONLY
        }
        values["TOKEN_ENDPOINT"] = self.token_endpoint
        return values


def _config_key(field_name: str) -> str:
    return _CONFIG_KEYS.get(field_name, field_name.upper())


#: The field each app.config key (as create_app's overrides name it) sets.
_FIELD_BY_CONFIG_KEY = {
    _config_key(name): name for name in Settings.model_fields if name not in _ENVIRONMENT_ONLY
}

#: Every environment variable the settings read.
ENVIRONMENT_VARIABLES = tuple(
    name.upper() for name in Settings.model_fields if name not in _OVERRIDE_ONLY
)

#: Flask and Flask-SQLAlchemy keys the server sets that no environment variable changes.
FLASK_DEFAULTS: Mapping[str, Any] = {
    "TESTING": False,
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
}


def build_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """The settings from the environment as it is now, under `overrides` (app.config keys).

    Keys of `overrides` that name no setting are ignored here (create_app
    passes them to app.config as they are).

    :raise SettingsError: a value is not valid; the message names each such setting.
    """
    overrides = overrides or {}
    known = {
        field: overrides[key] for key, field in _FIELD_BY_CONFIG_KEY.items() if key in overrides
    }
    try:
        return Settings(**known)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    # Name the variable and say what is wrong, without echoing the value:
    # KEYS_PASSPHRASE, SECRET_PEPPER and SECRET_KEY are secrets.
    problems = []
    for error in exc.errors():
        if error["type"] == "default_factory_not_called":
            continue  # derived from a setting already reported
        field = str(error["loc"][0]) if error["loc"] else ""
        name = field.upper()
        if field in _CONFIG_KEYS:
            name = f"{name} ({_CONFIG_KEYS[field]})"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}")
    return "invalid settings: " + "; ".join(problems)


def flask_config(values: Settings, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """app.config for these settings: Flask's defaults, then `overrides`, then the settings."""
    config = {**FLASK_DEFAULTS, **(overrides or {})}
    config["SQLALCHEMY_ENGINE_OPTIONS"] = dict(config["SQLALCHEMY_ENGINE_OPTIONS"] or {})
    config.update(values.flask_config())
    return config


def settings(app: Flask | None = None) -> Settings:
    """The settings create_app built for `app` (default: the current app)."""
    target = current_app if app is None else app
    return cast(Settings, target.extensions[EXTENSION_KEY])
