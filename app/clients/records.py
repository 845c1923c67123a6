"""Plain client records for the OAuth endpoints, cached for a few seconds.

The token endpoint must not open an ORM session per request: on a miss a
`RecordLoader` reads the record (one statement on PostgreSQL, Core selects
elsewhere; `create_app` picks the loader once with `loader_for`) and the
`ClientStore` caches it per client id for CLIENT_CACHE_TTL seconds. A change
made through this process drops the entry at commit (see
`mark_client_changed`), so it takes effect here at once and on other
instances within the TTL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from authlib.oauth2.rfc6749 import ClientMixin
from flask import has_app_context
from sqlalchemy.orm import Session

from app.clients.hashing import verify_secret
from app.clients.subject_pattern import SubjectPattern
from app.extensions import db
from app.models import Client, ClientKey, ClientSecret, FederatedCredential
from app.models.client import TLS_CLIENT_AUTH_FIELDS
from app.protocol import AUTH_METHODS, FAPI2, FAPI2_AUTH_METHODS
from app.runtime import runtime
from app.state.autocommit import AutocommitExecutor


@dataclass(frozen=True)
class SecretRecord:
    id: str
    secret_hash: str
    expires_at: datetime | None


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    alg: str
    public_jwk: dict
    expires_at: datetime | None


@dataclass(frozen=True)
class FederatedRecord:
    """A federated credential (docs/api.md §2.8), its subject pattern compiled once."""

    id: str
    name: str
    issuer: str
    subject: str | None
    subject_pattern: SubjectPattern | None
    claims: dict
    audience: str
    jwks_uri: str | None
    jwks: dict | None
    max_token_age: int
    single_use: bool


def federated_record(
    id: str,
    name: str,
    issuer: str,
    subject: str | None,
    subject_pattern: str | None,
    claims: dict | None,
    audience: str,
    jwks_uri: str | None,
    jwks: dict | None,
    max_token_age: int,
    single_use: bool,
) -> FederatedRecord:
    """A FederatedRecord from a row's columns, in the table's order."""
    return FederatedRecord(
        id=id,
        name=name,
        issuer=issuer,
        subject=subject,
        subject_pattern=None if subject_pattern is None else SubjectPattern(subject_pattern),
        claims=dict(claims or {}),
        audience=audience,
        jwks_uri=jwks_uri,
        jwks=jwks,
        max_token_age=max_token_age,
        single_use=bool(single_use),
    )


@dataclass(frozen=True, eq=False)
class ClientRecord(ClientMixin):
    """An immutable snapshot of one client, its secrets and keys."""

    id: str
    account_id: str
    name: str
    client_type: str
    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    access_token_ttl: int
    disabled: bool
    secrets: tuple[SecretRecord, ...] = ()
    keys: tuple[KeyRecord, ...] = ()
    #: None: every method of AUTH_METHODS; else only these (docs/api.md §1).
    allowed_auth_methods: tuple[str, ...] | None = None
    #: Epoch milliseconds: tokens issued earlier are cut off (None: no cut-off).
    tokens_valid_after: int | None = None
    dpop_bound_access_tokens: bool = False
    tls_client_certificate_bound_access_tokens: bool = False
    #: (field name, value) of tls_client_auth's one certificate rule, or None.
    tls_client_auth: tuple[str, str] | None = None
    security_profile: str | None = None
    #: Federated credentials, oldest first (docs/api.md §1.3).
    federated: tuple[FederatedRecord, ...] = ()

    # Authlib ClientMixin hooks.
    def get_client_id(self) -> str:
        return self.id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        raise NotImplementedError("use ClientStore.verify_secret")

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """Authlib asks this after the method's check passed: any other method is invalid_client."""
        if method not in AUTH_METHODS:
            return False
        if self.security_profile == FAPI2 and method not in FAPI2_AUTH_METHODS:
            return False
        return self.allowed_auth_methods is None or method in self.allowed_auth_methods

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"

    def cuts_off(self, issued_ms: int | None) -> bool:
        """Whether a token of this client issued then (epoch ms) is before its cut-off."""
        if self.tokens_valid_after is None:
            return False
        return issued_ms is None or issued_ms < self.tokens_valid_after

    def active_secrets(self, now: datetime) -> list[SecretRecord]:
        return [s for s in self.secrets if s.expires_at is None or s.expires_at > now]

    def active_keys(self, now: datetime) -> list[KeyRecord]:
        return [k for k in self.keys if k.expires_at is None or k.expires_at > now]


# Compared against when the client does not exist, so a wrong secret for an
# unknown client and for a known one cost the same HMAC and comparison.
_DUMMY_HASHES = ["0" * 64]


class RecordLoader(Protocol):
    """Reads one client's record from the database."""

    def load(self, client_id: str) -> ClientRecord | None:
        """The client with its secrets and keys, or None when no such client exists."""


def loader_for(executor: AutocommitExecutor | None, engine: sa.Engine) -> RecordLoader:
    """The loader for this database: PostgreSQL's one statement, else Core selects."""
    if executor is not None:
        return PostgresRecordLoader(executor)
    return SqlRecordLoader(engine)


class ClientStore:
    """Per-process cache of ClientRecords keyed by client id."""

    def __init__(self, ttl: float, loader: RecordLoader) -> None:
        self.ttl = ttl
        self.loader = loader
        self._cache: dict[str, tuple[float, ClientRecord | None]] = {}
        self._lock = threading.Lock()
        # Bumped by every invalidation: a record read before a change commits
        # must not be cached after that change dropped the entry.
        self._generation = 0
        self._next_sweep = 0.0

    def get(self, client_id: str) -> ClientRecord | None:
        now = time.monotonic()
        hit = self._cache.get(client_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        generation = self._generation
        record = self.loader.load(client_id)
        if self.ttl > 0:
            with self._lock:
                if now >= self._next_sweep:
                    # Expired entries are never read again: without this sweep a
                    # worker serving many clients would keep one record per
                    # client it ever saw (up to the bound below).
                    self._next_sweep = now + self.ttl
                    self._cache = {
                        cid: hit for cid, hit in self._cache.items() if now - hit[0] < self.ttl
                    }
                if len(self._cache) > 100_000:
                    # Unknown ids are cached too; bound the memory an attacker
                    # can make us hold by sending random ids.
                    self._cache.clear()
                if self._generation == generation:
                    self._cache[client_id] = (now, record)
        return record

    def invalidate(self, client_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._cache.pop(client_id, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._cache.clear()

    @staticmethod
    def verify_secret(
        record: ClientRecord | None, secret: str, pepper: bytes, now: datetime
    ) -> SecretRecord | None:
        """The active secret that `secret` matches, or None."""
        if record is None:
            verify_secret(secret, pepper, _DUMMY_HASHES)
            return None
        active = record.active_secrets(now)
        index = verify_secret(secret, pepper, [s.secret_hash for s in active] or _DUMMY_HASHES)
        if index is None or not active:
            return None
        return active[index]


def _possible_id(client_id: str) -> bool:
    # PostgreSQL refuses NUL in text; such an id names no client.
    return bool(client_id) and len(client_id) <= 64 and "\x00" not in client_id


# One statement, one round trip: the client with its secrets, keys and
# federated credentials as JSON arrays. Most token requests in a real
# deployment miss the cache (a client asks for a token once per token
# lifetime), so this is the common path.
_PG_LOAD = """
SELECT c.id, c.account_id, c.name, c.client_type, c.scopes, c.audiences,
       c.access_token_ttl, c.disabled, c.allowed_auth_methods, c.tokens_valid_after,
       c.dpop_bound_access_tokens, c.tls_client_certificate_bound_access_tokens,
       c.tls_client_auth_subject_dn, c.tls_client_auth_san_dns, c.tls_client_auth_san_uri,
       c.tls_client_auth_san_ip, c.tls_client_auth_san_email, c.security_profile,
       (SELECT json_agg(json_build_array(s.id, s.secret_hash, s.expires_at))
          FROM client_secrets s WHERE s.client_id = c.id),
       (SELECT json_agg(json_build_array(k.kid, k.alg, k.public_jwk, k.expires_at))
          FROM client_keys k WHERE k.client_id = c.id),
       (SELECT json_agg(json_build_array(f.id, f.name, f.issuer, f.subject, f.subject_pattern,
                                         f.claims, f.audience, f.jwks_uri, f.jwks,
                                         f.max_token_age, f.single_use)
                        ORDER BY f.created_at, f.id)
          FROM federated_credentials f WHERE f.client_id = c.id)
  FROM clients c
 WHERE c.id = %s
"""


def _utc(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def _tls_rule(values) -> tuple[str, str] | None:
    """The one certificate field a tls_client_auth client set, with its value."""
    for field, value in zip(TLS_CLIENT_AUTH_FIELDS, values, strict=True):
        if value is not None:
            return field, value
    return None


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else round(value.timestamp() * 1000)


class PostgresRecordLoader:
    """`SqlRecordLoader`'s record in one PostgreSQL statement on the autocommit executor."""

    def __init__(self, executor: AutocommitExecutor) -> None:
        self.executor = executor

    def load(self, client_id: str) -> ClientRecord | None:
        if not _possible_id(client_id):
            return None
        rows = self.executor.fetch(_PG_LOAD, (client_id,))
        if not rows:
            return None
        row = rows[0]
        cid, account_id, name, client_type, scopes, audiences, ttl, disabled, methods = row[:9]
        valid_after, dpop_bound, cert_bound = row[9:12]
        tls_values, profile = row[12:17], row[17]
        secrets, keys, federated = row[18:]
        return ClientRecord(
            id=cid,
            account_id=account_id,
            name=name,
            client_type=client_type,
            scopes=tuple(scopes or ()),
            audiences=tuple(audiences or ()),
            access_token_ttl=ttl,
            disabled=disabled,
            allowed_auth_methods=None if methods is None else tuple(methods),
            tokens_valid_after=_epoch(valid_after),
            dpop_bound_access_tokens=dpop_bound,
            tls_client_certificate_bound_access_tokens=cert_bound,
            tls_client_auth=_tls_rule(tls_values),
            security_profile=profile,
            secrets=tuple(
                SecretRecord(sid, hashed, _utc(exp)) for sid, hashed, exp in secrets or ()
            ),
            keys=tuple(KeyRecord(kid, alg, jwk, _utc(exp)) for kid, alg, jwk, exp in keys or ()),
            federated=tuple(federated_record(*values) for values in federated or ()),
        )


class SqlRecordLoader:
    """A record read with Core selects on a short connection of the app's engine.

    Not the request's session: the connection goes back to the pool at once
    instead of at teardown, so a request that needs a second one (the
    replay-cache insert) cannot starve it.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def load(self, client_id: str) -> ClientRecord | None:
        with self.engine.connect() as conn:
            return load_record(conn, client_id)


#: The columns of a FederatedRecord, in `federated_record`'s order.
FEDERATED_COLUMNS = (
    FederatedCredential.id,
    FederatedCredential.name,
    FederatedCredential.issuer,
    FederatedCredential.subject,
    FederatedCredential.subject_pattern,
    FederatedCredential.claims,
    FederatedCredential.audience,
    FederatedCredential.jwks_uri,
    FederatedCredential.jwks,
    FederatedCredential.max_token_age,
    FederatedCredential.single_use,
)


def load_record(session: Session | sa.Connection, client_id: str) -> ClientRecord | None:
    """Read a client and its credentials with Core selects (no ORM objects)."""
    if not _possible_id(client_id):
        return None
    row = session.execute(
        sa.select(
            Client.id,
            Client.account_id,
            Client.name,
            Client.client_type,
            Client.scopes,
            Client.audiences,
            Client.access_token_ttl,
            Client.disabled,
            Client.allowed_auth_methods,
            Client.tokens_valid_after,
            Client.dpop_bound_access_tokens,
            Client.tls_client_certificate_bound_access_tokens,
            *(getattr(Client, f) for f in TLS_CLIENT_AUTH_FIELDS),
            Client.security_profile,
        ).where(Client.id == client_id)
    ).first()
    if row is None:
        return None
    secrets = session.execute(
        sa.select(ClientSecret.id, ClientSecret.secret_hash, ClientSecret.expires_at).where(
            ClientSecret.client_id == client_id
        )
    ).all()
    keys = session.execute(
        sa.select(ClientKey.kid, ClientKey.alg, ClientKey.public_jwk, ClientKey.expires_at).where(
            ClientKey.client_id == client_id
        )
    ).all()
    federated = session.execute(
        sa.select(*FEDERATED_COLUMNS)
        .where(FederatedCredential.client_id == client_id)
        .order_by(FederatedCredential.created_at, FederatedCredential.id)
    ).all()
    return ClientRecord(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        client_type=row.client_type,
        scopes=tuple(row.scopes or ()),
        audiences=tuple(row.audiences or ()),
        access_token_ttl=row.access_token_ttl,
        disabled=row.disabled,
        allowed_auth_methods=(
            None if row.allowed_auth_methods is None else tuple(row.allowed_auth_methods)
        ),
        tokens_valid_after=_epoch(row.tokens_valid_after),
        dpop_bound_access_tokens=row.dpop_bound_access_tokens,
        tls_client_certificate_bound_access_tokens=row.tls_client_certificate_bound_access_tokens,
        tls_client_auth=_tls_rule([getattr(row, f) for f in TLS_CLIENT_AUTH_FIELDS]),
        security_profile=row.security_profile,
        secrets=tuple(SecretRecord(s.id, s.secret_hash, s.expires_at) for s in secrets),
        keys=tuple(KeyRecord(k.kid, k.alg, k.public_jwk, k.expires_at) for k in keys),
        federated=tuple(federated_record(*values) for values in federated),
    )


def mark_client_changed(client_id: str) -> None:
    """Drop the client's cached record in this process once the change commits."""
    db.session.info.setdefault("changed_clients", set()).add(client_id)


@sa.event.listens_for(Session, "after_commit")
def _invalidate_after_commit(session: Session) -> None:
    changed = session.info.pop("changed_clients", None)
    if changed and has_app_context():
        store = runtime().clients
        for client_id in changed:
            store.invalidate(client_id)


@sa.event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop("changed_clients", None)
