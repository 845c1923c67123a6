"""Resource server records for the token endpoint, cached per process (docs/api.md §2.7).

The token endpoint looks up every target it grants: on a warm cache that is
a dict lookup, never a database read. Entries (unknown identifiers included)
live CLIENT_CACHE_TTL seconds, like client records (app.clients.records); a
change made through this process drops the entry at commit, so it takes
effect here at once and on other instances within the TTL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from flask import has_app_context
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import ResourceServer
from app.runtime import runtime
from app.state.autocommit import AutocommitExecutor


@dataclass(frozen=True)
class ResourceServerRecord:
    identifier: str
    account_id: str
    shared: bool
    #: The scope values it defines; empty: it accepts any scope.
    scopes: frozenset[str]
    access_token_ttl: int | None
    #: RFC 8705 §3: every token for it must be certificate-bound (docs/api.md §1.2).
    tls_client_certificate_bound_access_tokens: bool = False
    #: RFC 9449: every token for it must be DPoP-bound (docs/api.md §1.1).
    dpop_bound_access_tokens: bool = False

    def usable_by(self, account_id: str) -> bool:
        return self.shared or self.account_id == account_id


_PG_LOAD = """
SELECT identifier, account_id, shared, scopes, access_token_ttl,
       tls_client_certificate_bound_access_tokens, dpop_bound_access_tokens
  FROM resource_servers WHERE identifier = %s
"""


def _record(
    identifier, account_id, shared, scopes, ttl, cert_bound, dpop_bound
) -> ResourceServerRecord:
    values = frozenset(s["value"] for s in scopes or () if isinstance(s, dict) and "value" in s)
    return ResourceServerRecord(
        identifier, account_id, bool(shared), values, ttl, bool(cert_bound), bool(dpop_bound)
    )


def load_record(
    executor: AutocommitExecutor | None, engine: sa.Engine, identifier: str
) -> ResourceServerRecord | None:
    """One resource server by identifier: one autocommit statement on PostgreSQL, else Core."""
    if not identifier or "\x00" in identifier:
        return None
    if executor is not None:
        rows = executor.fetch(_PG_LOAD, (identifier,))
        return _record(*rows[0]) if rows else None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                ResourceServer.identifier,
                ResourceServer.account_id,
                ResourceServer.shared,
                ResourceServer.scopes,
                ResourceServer.access_token_ttl,
                ResourceServer.tls_client_certificate_bound_access_tokens,
                ResourceServer.dpop_bound_access_tokens,
            ).where(ResourceServer.identifier == identifier)
        ).first()
    return _record(*row) if row is not None else None


class ResourceServerStore:
    """Per-process cache of ResourceServerRecords keyed by identifier."""

    #: Unknown identifiers are cached too; bound what random ones can make us hold.
    MAX_ENTRIES = 100_000

    def __init__(self, ttl: float, executor: AutocommitExecutor | None, engine: sa.Engine) -> None:
        self.ttl = ttl
        self._executor = executor
        self._engine = engine
        self._cache: dict[str, tuple[float, ResourceServerRecord | None]] = {}
        self._lock = threading.Lock()
        # Bumped by every invalidation: a record read before a change commits
        # must not be cached after that change dropped the entry.
        self._generation = 0

    def get(self, identifier: str) -> ResourceServerRecord | None:
        now = time.monotonic()
        hit = self._cache.get(identifier)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        generation = self._generation
        record = load_record(self._executor, self._engine, identifier)
        if self.ttl > 0:
            with self._lock:
                if len(self._cache) >= self.MAX_ENTRIES:
                    self._cache.clear()
                if self._generation == generation:
                    self._cache[identifier] = (now, record)
        return record

    def invalidate(self, identifier: str) -> None:
        with self._lock:
            self._generation += 1
            self._cache.pop(identifier, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._cache.clear()


def mark_resource_server_changed(identifier: str) -> None:
    """Drop the resource server's cached record in this process once the change commits."""
    db.session.info.setdefault("changed_resource_servers", set()).add(identifier)


@sa.event.listens_for(Session, "after_commit")
def _invalidate_after_commit(session: Session) -> None:
    changed = session.info.pop("changed_resource_servers", None)
    if changed and has_app_context():
        store = runtime().resource_servers
        for identifier in changed:
            store.invalidate(identifier)


@sa.event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop("changed_resource_servers", None)
