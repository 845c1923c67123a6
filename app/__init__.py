"""Application factory: config, extensions, blueprints, error handlers, CLI."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from app.http import logs
from app.settings import EXTENSION_KEY, build_settings, flask_config
from app.signing.keys_dir import tighten
from app.startup import StartupError, install_excepthook, keys_dir_errors

log = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | type | None = None) -> Flask:
    """Build the app from the environment as it is now; `config` (a dict, or a
    class as Flask's from_object reads one) overrides it, key by key.

    :raise SettingsError: a setting's value is not valid.
    """
    overrides = _overrides(config)
    if not overrides.get("TESTING"):
        # A bad setting ends `flask --app wsgi …` with one line, not a traceback.
        install_excepthook()
    settings = build_settings(overrides)
    app = Flask(__name__, instance_relative_config=False)
    app.config.update(flask_config(settings, overrides))
    if not app.testing:
        logs.configure(settings.log_format)
    _prepare_database_url(app)

    from app import models  # noqa: F401  (registers every table with the metadata)
    from app.clients.pepper import load_checked_pepper
    from app.clients.records import ClientStore, loader_for
    from app.clients.resource_server_records import ResourceServerStore
    from app.clients.usage import UsageTracker
    from app.extensions import db, migrate
    from app.federation.issuer_keys import IssuerKeyCache
    from app.oauth.throttle import Throttle
    from app.runtime import Runtime
    from app.signing.keys import KeyRing, KeyTiming, report_key_files
    from app.signing.keys_dir import tighten_keys_dir
    from app.state import failures, jti
    from app.state.autocommit import executor_for
    from app.state.redis import connect as connect_redis

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).parent.parent / "migrations"))

    # Start-up checks (docs/security.md#files-and-modes, #the-pepper).
    with keys_dir_errors(settings.keys_dir):
        tighten_keys_dir(settings.keys_dir)
    if not settings.keys_passphrase and not app.testing:
        log.warning(
            "KEYS_PASSPHRASE is not set: private signing keys in KEYS_DIR (%s) are stored"
            " unencrypted; set it in production",
            settings.keys_dir,
        )
    with app.app_context():
        try:
            with keys_dir_errors(settings.keys_dir):
                pepper = load_checked_pepper(settings.secret_pepper, settings.keys_dir)
            # No database (or no schema yet): /readyz says so.
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                report_key_files(settings.keys_dir, settings.keys_passphrase)
        finally:
            db.session.remove()
            # No connection opened here outlives start-up (or a fork after it).
            db.engine.dispose()
    if settings.federation_allow_insecure:
        log.warning(
            "FEDERATION_ALLOW_INSECURE=1: federated issuers' keys are fetched over plain http"
            " and from any address, loopback and private networks included; this is for"
            " tests and labs only, NEVER for production"
        )
    if not settings.secret_key:
        # Cursor signatures need a stable key on every instance; derive one
        # from the pepper rather than asking operators for another secret.
        secret_key = hmac.new(pepper, b"flask-secret-key", hashlib.sha256).hexdigest()
        settings = settings.model_copy(update={"secret_key": secret_key})
        app.config["SECRET_KEY"] = secret_key
    app.extensions[EXTENSION_KEY] = settings
    # Each shared-state backend is chosen here, once: Redis when REDIS_URL is
    # set, else PostgreSQL's autocommit statements, else plain SQL (SQLite).
    with app.app_context():
        engine = db.engine
    redis_client = connect_redis(settings.redis_url)
    executor = executor_for(
        engine, app.config["SQLALCHEMY_ENGINE_OPTIONS"], settings.db_async_commit
    )
    runtime = Runtime(
        clients=ClientStore(settings.client_cache_ttl, loader_for(executor, engine)),
        resource_servers=ResourceServerStore(settings.client_cache_ttl, executor, engine),
        keyring=KeyRing(
            app.config["KEYS_DIR"],
            app.config["KEYS_PASSPHRASE"],
            app.config.get("KEY_REFRESH_INTERVAL", 10.0),
            KeyTiming.from_config(app.config).publish_delay,
        ),
        pepper=pepper,
        usage=UsageTracker(app.config["LAST_USED_RESOLUTION"]),
        jti=jti.store_for(redis_client, executor, engine),
        throttle=Throttle.from_settings(
            settings, failures.store_for(redis_client, executor, engine), engine
        ),
        redis=redis_client,
        autocommit=executor,
        issuer_keys=IssuerKeyCache(allow_insecure=settings.federation_allow_insecure),
    )
    runtime.init_app(app)

    from app.errors import register_error_handlers
    from app.oauth.server import config_oauth

    config_oauth(app)
    runtime.throttle.init_app(app)
    from app.http import pipeline

    register_error_handlers(app)
    _register_blueprints(app)
    from app.signing import rotation

    pipeline.init_app(app, key_schedule=rotation.init_app(app), usage=runtime.usage)
    logging.getLogger("authlib").setLevel(logging.WARNING)
    from app.oauth import fastpath

    # Last: the fast path serves token requests only while the app's request
    # hooks are the pipeline's alone, all registered by now.
    fastpath.install(app)
    if not app.testing:
        # Again: the access log's handler exists now and takes the format too.
        logs.configure(settings.log_format)
    return app


def _overrides(config: Mapping[str, Any] | type | None) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    return {key: getattr(config, key) for key in dir(config) if key.isupper()}


def _drop_result_rows(record: logging.LogRecord) -> bool:
    """Logging filter: SQLAlchemy's DEBUG row dumps would print secret hashes."""
    return not (record.levelno == logging.DEBUG and str(record.msg).endswith("Row %r"))


def _prepare_database_url(app: Flask) -> None:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    # Bound parameters hold secret hashes: keep them out of SQL logs and
    # error messages even when an operator turns on sqlalchemy.engine logging.
    options.setdefault("hide_parameters", True)
    logging.getLogger("sqlalchemy.engine.Engine").addFilter(_drop_result_rows)
    if uri.startswith("sqlite:///"):
        _private_sqlite_file(app, uri)
        options.setdefault("connect_args", {"timeout": 30})
    elif uri.startswith("postgresql"):
        # Sized for one gunicorn worker: a connection per thread plus one;
        # the overflow absorbs the moment a thread holds two (request session
        # and the last_used_at writer).
        pool_size = int(app.config.get("DB_POOL_SIZE") or 5)
        options.setdefault("pool_size", pool_size)
        options.setdefault("max_overflow", pool_size)
        options.setdefault("pool_timeout", 5)
        options.setdefault("connect_args", {"connect_timeout": 5})
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options


def _private_sqlite_file(app: Flask, uri: str) -> None:
    """Make the SQLite file with mode 0600 before anything connects; tighten an existing one.

    SQLite would make it with the umask's mode (often 0644), and it holds
    every secret hash; its journal and WAL files take the file's mode.
    """
    database = sa.engine.make_url(uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.is_absolute():
        # Flask-SQLAlchemy reads a relative SQLite path under the instance folder.
        path = Path(app.instance_path) / path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            changed = tighten(path)
            if changed:
                log.warning(
                    "the SQLite database was readable by group or other; tightened: %s", changed
                )
    except OSError as exc:
        raise StartupError(
            f"DATABASE_URL: cannot create the SQLite file {path} ({exc.strerror}): make"
            " its directory writable by this user or point DATABASE_URL elsewhere"
        ) from None


def _register_blueprints(app: Flask) -> None:
    from app import api
    from app.api import routes  # noqa: F401  (attaches the resource views to api.bp)
    from app.cli.serve import dev_cli
    from app.cli.setup import admin_cli, keys_cli
    from app.http import health
    from app.oauth import jwks, views

    app.register_blueprint(views.bp)
    app.register_blueprint(jwks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(keys_cli)
    app.register_blueprint(admin_cli)
    app.register_blueprint(dev_cli)

    from app.cli import clients as clients_cli

    clients_cli.init_app(app)

    from app import console
    from app.http import access_log, api_docs, metrics

    app.register_blueprint(api_docs.bp)
    console.init_app(app)
    metrics.init_app(app)
    access_log.init_app(app)
