"""The pepper at start-up: loaded, checked against the database, never silently replaced.

Every client secret is stored as HMAC-SHA-256(pepper, secret). Starting with
another pepper than the one those hashes were made with makes every secret
fail (and re-keys cursors and console cookies), so the database keeps the
pepper's fingerprint (`pepper_fingerprint` in app/clients/hashing.py) in
`server_settings`, and a start whose pepper does not match it is refused.
The first start on a database whose `server_settings` table is empty stores
it. A missing KEYS_DIR/pepper file is made anew only when the database holds
no client secret and no fingerprint (docs/security.md#the-pepper).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.clients.hashing import PepperMissing, load_pepper, pepper_fingerprint
from app.extensions import db
from app.models import PEPPER_FINGERPRINT, ClientSecret, ServerSetting
from app.settings import SettingsError
from app.signing.keys_dir import PEPPER_FILE
from app.startup import explain
from app.timeutil import utcnow

log = logging.getLogger(__name__)


class PepperError(SettingsError):
    """The server must not start with this pepper; the message says why in one line."""


@dataclass(frozen=True)
class _Stored:
    """What the database says about the pepper; `reachable` False: nothing known."""

    reachable: bool
    #: Why the database could not be read (app.startup's line), when it could not.
    problem: str = ""
    has_table: bool = False
    fingerprint: str | None = None
    secrets_exist: bool = False


def _stored_fingerprint() -> str | None:
    return db.session.scalar(
        sa.select(ServerSetting.value).where(ServerSetting.name == PEPPER_FINGERPRINT)
    )


def _read_stored() -> _Stored:
    # Tables that do not exist yet (`flask db upgrade` builds the app before
    # it migrates) are simply skipped.
    try:
        tables = set(sa.inspect(db.engine).get_table_names())
        has_table = ServerSetting.__tablename__ in tables
        fingerprint = _stored_fingerprint() if has_table else None
        secrets_exist = ClientSecret.__tablename__ in tables and bool(
            db.session.scalar(sa.select(ClientSecret.id).limit(1))
        )
    except sa.exc.SQLAlchemyError as exc:
        db.session.rollback()
        return _Stored(reachable=False, problem=explain(exc) or type(exc).__name__)
    return _Stored(True, "", has_table, fingerprint, secrets_exist)


def _store(fingerprint: str) -> str | None:
    """Store the fingerprint unless another process did first; returns the stored one."""
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(ServerSetting)
        .values(name=PEPPER_FINGERPRINT, value=fingerprint, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["name"])
    )
    db.session.execute(statement)
    db.session.commit()
    return _stored_fingerprint()


def _source(configured: str | None, keys_dir: str) -> str:
    return "SECRET_PEPPER" if configured else str(Path(keys_dir) / PEPPER_FILE)


def load_checked_pepper(configured: str | None, keys_dir: str) -> bytes:
    """The pepper, once the database agrees it is the one its secrets were hashed with.

    Runs in an app context. A database that cannot be reached leaves the
    check to the next start (logged), but then no new pepper file is made.

    :raise PepperError: the pepper does not match the stored fingerprint, or
        the pepper file is missing while secrets or a fingerprint exist (or
        the database cannot tell whether they do).
    """
    stored = _read_stored()
    may_create = stored.reachable and stored.fingerprint is None and not stored.secrets_exist
    try:
        pepper = load_pepper(configured, keys_dir, create=may_create)
    except PepperMissing as missing:
        if not stored.reachable:
            # The database is the first thing to fix: until it answers, nobody
            # can tell whether a new pepper would orphan every secret.
            raise PepperError(
                f"{stored.problem} (the pepper file {missing} is missing too, and is made"
                " only once the database shows that no client secret needs an old one)"
            ) from None
        elif stored.secrets_exist:
            reason = (
                "the database already holds client secrets hashed with the old one;"
                " restore the file"
            )
        else:
            reason = "the database holds the fingerprint of another pepper; restore the file"
        raise PepperError(
            f"refusing to start: {missing} is missing (KEYS_DIR={keys_dir}) and {reason}"
            " (or set SECRET_PEPPER to the old pepper) instead of making a new one"
        ) from None
    except RuntimeError as unusable:
        # An empty or short pepper file: one line, naming where it is.
        raise PepperError(f"refusing to start: {unusable} (KEYS_DIR={keys_dir})") from None
    if not stored.reachable:
        log.warning("database unreachable at start: the pepper was not checked against it")
        return pepper
    fingerprint = pepper_fingerprint(pepper)
    expected = stored.fingerprint
    if expected is None and stored.has_table:
        try:
            expected = _store(fingerprint)
        except sa.exc.SQLAlchemyError:
            db.session.rollback()
            log.warning("could not store the pepper's fingerprint; the next start will")
            return pepper
    if expected is not None and not hmac.compare_digest(expected, fingerprint):
        raise PepperError(
            f"refusing to start: {_source(configured, keys_dir)} is not the pepper this"
            " database's client secrets were hashed with (its fingerprint in server_settings"
            " differs); restore the original pepper"
        )
    return pepper
