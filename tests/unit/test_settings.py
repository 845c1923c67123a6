"""Settings: read from the environment when create_app runs, typed, checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.extensions import db
from app.protocol import SIGNING_ALGS
from app.settings import (
    BASE_DIR,
    ENVIRONMENT_VARIABLES,
    Settings,
    SettingsError,
    build_settings,
    settings,
)

ROOT = Path(__file__).resolve().parent.parent.parent

# What the README's configuration table promises with nothing set.
DEFAULTS = {
    "SQLALCHEMY_DATABASE_URI": f"sqlite:///{BASE_DIR / 'instance' / 'ccserver.db'}",
    "ISSUER": "http://localhost:5000",
    "KEYS_DIR": str(BASE_DIR / "keys"),
    "KEYS_PASSPHRASE": None,
    "SIGNING_ALG": "ES256",
    "REDIS_URL": None,
    "SECRET_PEPPER": None,
    "SECRET_KEY": None,
    "DEFAULT_AUDIENCE": "http://localhost:5000",
    "MANAGEMENT_AUDIENCE": "http://localhost:5000/api",
    "JWKS_MAX_AGE": 300,
    "KEY_ROTATION_INTERVAL": 30 * 86400,
    "KEY_REFRESH_INTERVAL": 10.0,
    "KEY_SCHEDULE_INTERVAL": 60.0,
    "KEY_CLOCK_SKEW": 60,
    "DB_POOL_SIZE": 5,
    "CLIENT_CACHE_TTL": 2.0,
    "LAST_USED_RESOLUTION": 60,
    "AUTH_FAILURE_LIMIT_CLIENT": 20,
    "AUTH_FAILURE_LIMIT_ADDRESS": 300,
    "AUTH_FAILURE_LIMIT_CLIENT_TOTAL": 1000,
    "AUTH_FAILURE_WINDOW": 60,
    "AUTH_FAILURE_FEED": True,
    "DB_ASYNC_COMMIT": True,
    "TRUSTED_PROXIES": "",
    "CLIENT_CERT_FORMAT": "rfc9440",
    "CLIENT_CERT_VERIFY_HEADER": "",
    "DPOP_NONCES": False,
    "FEDERATION_ALLOW_INSECURE": False,
    "LOG_FORMAT": "text",
    "METRICS_TOKEN": None,
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "ASSERTION_SIGNING_ALGS": list(SIGNING_ALGS),
    "TOKEN_ENDPOINT": "http://localhost:5000/oauth2/token",
}


@pytest.fixture(autouse=True)
def _no_database_url(monkeypatch):
    # clean_environ leaves DATABASE_URL (it picks the test database, a session
    # fixture that is made before this one); these tests compare defaults.
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
def dispose():
    """Close the pools of the apps a test builds."""
    made = []
    yield made.append
    for app in made:
        with app.app_context():
            db.engine.dispose()


def test_defaults_with_nothing_set():
    assert build_settings().flask_config() == DEFAULTS


def test_every_variable_is_documented():
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")])
    for name in ENVIRONMENT_VARIABLES:
        assert f"`{name}`" in text, name


def test_environment_values_are_parsed_and_derived(monkeypatch):
    monkeypatch.setenv("ISSUER", "https://auth.example.com/")
    monkeypatch.setenv("JWKS_MAX_AGE", "42")
    monkeypatch.setenv("KEY_REFRESH_INTERVAL", "2.5")
    monkeypatch.setenv("SIGNING_ALG", "EdDSA")
    monkeypatch.setenv("THREADS", "8")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8")
    made = build_settings()
    assert made.issuer == "https://auth.example.com"
    assert made.default_audience == "https://auth.example.com"
    assert made.management_audience == "https://auth.example.com/api"
    assert made.token_endpoint == "https://auth.example.com/oauth2/token"
    assert made.jwks_max_age == 42
    assert made.key_refresh_interval == 2.5
    assert made.signing_alg == "EdDSA"
    assert made.db_pool_size == 9
    assert made.trusted_proxies == "10.0.0.0/8"
    assert "THREADS" not in made.flask_config()


def test_explicit_values_beat_derived_ones(monkeypatch):
    monkeypatch.setenv("DB_POOL_SIZE", "3")
    monkeypatch.setenv("THREADS", "8")
    monkeypatch.setenv("DEFAULT_AUDIENCE", "https://api.example.com")
    made = build_settings({"MANAGEMENT_AUDIENCE": "https://admin.example.com"})
    assert made.db_pool_size == 3
    assert made.default_audience == "https://api.example.com"
    assert made.management_audience == "https://admin.example.com"


def test_empty_variable_counts_as_unset(monkeypatch):
    for name in ("ISSUER", "JWKS_MAX_AGE", "KEYS_PASSPHRASE", "CLIENT_CACHE_TTL"):
        monkeypatch.setenv(name, "")
    made = build_settings()
    assert made.issuer == "http://localhost:5000"
    assert made.jwks_max_age == 300
    assert made.keys_passphrase is None
    assert made.client_cache_ttl == 2.0


@pytest.mark.parametrize(("value", "on"), [("0", False), ("1", True), ("2", True)])
def test_failure_feed_switch_is_a_number(monkeypatch, value, on):
    monkeypatch.setenv("AUTH_FAILURE_FEED", value)
    assert build_settings().auth_failure_feed is on


@pytest.mark.parametrize(("value", "on"), [("0", False), ("1", True)])
def test_async_commit_switch_is_a_number(monkeypatch, value, on):
    monkeypatch.setenv("DB_ASYNC_COMMIT", value)
    assert build_settings().db_async_commit is on


def test_overrides_beat_the_environment(monkeypatch):
    monkeypatch.setenv("JWKS_MAX_AGE", "42")
    monkeypatch.setenv("KEYS_PASSPHRASE", "from-the-shell")
    made = build_settings({"JWKS_MAX_AGE": 7, "KEYS_PASSPHRASE": None, "NOT_A_SETTING": 1})
    assert made.jwks_max_age == 7
    assert made.keys_passphrase is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SIGNING_ALG", "HS256", "SIGNING_ALG: must be ES256, RS256, PS256 or EdDSA, not 'HS256'"),
        ("JWKS_MAX_AGE", "five", "JWKS_MAX_AGE: Input should be a valid integer"),
        ("CLIENT_CACHE_TTL", "soon", "CLIENT_CACHE_TTL: Input should be a valid number"),
        ("AUTH_FAILURE_FEED", "off", "AUTH_FAILURE_FEED: must be a number (0: off)"),
    ],
)
def test_bad_environment_value_names_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        build_settings()
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_bad_value_is_reported_once(monkeypatch):
    monkeypatch.setenv("THREADS", "many")
    with pytest.raises(SettingsError) as raised:
        build_settings()
    assert str(raised.value) == (
        "invalid settings: THREADS: Input should be a valid integer,"
        " unable to parse string as an integer"
    )


def test_bad_override_names_the_setting_and_not_a_secret():
    with pytest.raises(SettingsError) as raised:
        build_settings({"SECRET_PEPPER": ["s3cret-pepper"], "ASSERTION_SIGNING_ALGS": ["HS256"]})
    text = str(raised.value)
    assert "SECRET_PEPPER:" in text and "s3cret-pepper" not in text
    assert "ASSERTION_SIGNING_ALGS: each must be ES256, RS256, PS256 or EdDSA, not 'HS256'" in text


def test_secrets_stay_out_of_repr():
    made = build_settings(
        {
            "SECRET_PEPPER": "pepper-value-of-at-least-32-bytes",
            "KEYS_PASSPHRASE": "passphrase-value",
            "SECRET_KEY": "key-value",
            "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://u:db-password@h/d",
            "REDIS_URL": "redis://:redis-password@h/0",
        }
    )
    text = repr(made)
    for secret in ("pepper-value", "passphrase-value", "key-value", "db-password", "redis-pass"):
        assert secret not in text


def test_settings_are_frozen():
    with pytest.raises(ValueError, match="frozen"):
        build_settings().issuer = "https://elsewhere.example"  # type: ignore[misc]


def test_create_app_bad_value_fails_before_anything_starts(monkeypatch, base_config):
    monkeypatch.setenv("SIGNING_ALG", "HS256")
    config = {k: v for k, v in base_config.items() if k != "SIGNING_ALG"}
    with pytest.raises(SettingsError, match="SIGNING_ALG"):
        create_app(config)


def test_env_set_after_import_reaches_a_new_app(monkeypatch, app, make_app):
    """The environment is read when create_app runs, not when app.settings is imported."""
    monkeypatch.setenv("JWKS_MAX_AGE", "42")
    monkeypatch.setenv("AUTH_FAILURE_LIMIT_CLIENT", "3")
    other = make_app()
    assert other.config["JWKS_MAX_AGE"] == 42
    assert settings(other).auth_failure_limit_client == 3
    response = other.test_client().get("/.well-known/jwks.json")
    assert response.headers["Cache-Control"] == "public, max-age=42"
    # The app built before the variable was set keeps what it was built with.
    assert app.config["JWKS_MAX_AGE"] == 300
    assert app.test_client().get("/.well-known/jwks.json").headers["Cache-Control"] == (
        "public, max-age=300"
    )


def test_app_config_and_typed_settings_agree(app):
    typed = settings(app)
    assert isinstance(typed, Settings)
    for key, value in typed.flask_config().items():
        assert app.config[key] == value, key
    # The Flask secret derived from the pepper is in both.
    assert typed.secret_key and typed.secret_key == app.config["SECRET_KEY"]
    with app.app_context():
        assert settings() is typed


def test_other_keys_pass_through_to_flask(base_config, dispose):
    made = create_app({**base_config, "CONSOLE_SESSION_LIFETIME": 60, "ACCESS_LOG": False})
    dispose(made)
    assert made.config["CONSOLE_SESSION_LIFETIME"] == 60
    assert made.config["ACCESS_LOG"] is False
    assert made.config["TESTING"] is True
    assert made.config["SQLALCHEMY_ENGINE_OPTIONS"]["pool_pre_ping"] is True


def test_config_class_still_works(base_config, dispose):
    overrides = type("Overrides", (), {**base_config, "JWKS_MAX_AGE": 9})
    made = create_app(overrides)
    dispose(made)
    assert made.config["JWKS_MAX_AGE"] == 9
    assert made.config["ISSUER"] == base_config["ISSUER"]


def test_no_setting_reaches_a_test_from_the_shell(base_config, dispose):
    """clean_environ removed every setting's variable; run in a shell full of them
    by test_clean_environ_isolates_tests_from_the_shell."""
    leaked = [name for name in ENVIRONMENT_VARIABLES if name in os.environ]
    assert leaked == []
    made = create_app({k: v for k, v in base_config.items() if k != "ISSUER"})
    dispose(made)
    assert made.config["ISSUER"] == DEFAULTS["ISSUER"]
    assert made.config["JWKS_MAX_AGE"] == DEFAULTS["JWKS_MAX_AGE"]
    assert made.config["DB_POOL_SIZE"] == DEFAULTS["DB_POOL_SIZE"]


def test_clean_environ_isolates_tests_from_the_shell(tmp_path):
    shell = {
        **os.environ,
        "ISSUER": "https://shell.example",
        "JWKS_MAX_AGE": "1",
        "THREADS": "31",
        # Would make every create_app fail if it reached one.
        "SIGNING_ALG": "HS256",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{Path(__file__).relative_to(ROOT)}::test_no_setting_reaches_a_test_from_the_shell",
        ],
        cwd=ROOT,
        env=shell,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("1", True), (" 1 ", True)])
def test_dpop_nonces_is_0_or_1(monkeypatch, value, expected):
    monkeypatch.setenv("DPOP_NONCES", value)
    assert build_settings().dpop_nonces is expected


def test_dpop_nonces_refuses_anything_else(monkeypatch):
    monkeypatch.setenv("DPOP_NONCES", "yes")
    with pytest.raises(SettingsError, match="DPOP_NONCES"):
        build_settings()


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("1", True)])
def test_federation_allow_insecure_is_0_or_1(monkeypatch, value, expected):
    monkeypatch.setenv("FEDERATION_ALLOW_INSECURE", value)
    assert build_settings().federation_allow_insecure is expected


def test_federation_allow_insecure_refuses_anything_else(monkeypatch):
    monkeypatch.setenv("FEDERATION_ALLOW_INSECURE", "true")
    with pytest.raises(SettingsError, match="FEDERATION_ALLOW_INSECURE"):
        build_settings()
