"""The one per-process object `create_app` builds: caches, keys, pepper, shared-state backends.

Every backend is chosen here once, at start-up (Redis, PostgreSQL or plain
SQL), and the request path reaches it with one attribute access:
`runtime().jti.is_revoked(jti)`. The classes are imported for type checking
only, so any layer may import this module without importing the layers above
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    import redis

    from app.clients.records import ClientStore
    from app.clients.resource_server_records import ResourceServerStore
    from app.clients.usage import UsageTracker
    from app.federation.issuer_keys import IssuerKeyCache
    from app.http.pipeline import Pipeline
    from app.oauth.server import AuthorizationServer
    from app.oauth.throttle import Throttle
    from app.signing.keys import KeyRing
    from app.state.autocommit import AutocommitExecutor
    from app.state.jti import JtiStore

#: The app.extensions key that holds the app's Runtime.
EXTENSION = "ccserver"


@dataclass
class Runtime:
    #: Client records cached per process, loaded by one PostgreSQL statement or Core selects.
    clients: ClientStore
    #: Resource servers cached per process by identifier, for the token endpoint.
    resource_servers: ResourceServerStore
    #: The server's signing keys, re-read from the database every few seconds.
    keyring: KeyRing
    #: The HMAC key of client-secret hashes.
    pepper: bytes
    #: last_used_at writes, batched per process.
    usage: UsageTracker
    #: The deny-list and the replay cache (Redis, PostgreSQL or SQL).
    jti: JtiStore
    #: The failed-authentication limits and their shared counters (Redis, PostgreSQL or SQL).
    throttle: Throttle
    #: The Redis client when REDIS_URL is set.
    redis: redis.Redis | None
    #: Single autocommit statements beside the app's pool, on PostgreSQL only.
    autocommit: AutocommitExecutor | None
    #: Federated issuers' public keys, fetched and cached per process (app/federation/).
    issuer_keys: IssuerKeyCache
    #: The Authlib authorization server (set by `config_oauth`).
    oauth: AuthorizationServer | None = None
    #: The ordered request observers that Flask's hooks and the token fast path run.
    pipeline: Pipeline | None = None

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self


def runtime() -> Runtime:
    """The current app's Runtime."""
    # Asked about ten times per token request: the proxy's attribute lookup
    # costs six times the direct object's (docs/performance.md).
    return current_app._get_current_object().extensions[EXTENSION]  # type: ignore[attr-defined]


def runtime_of(app: Flask) -> Runtime:
    """The given app's Runtime (at start-up, before any app context)."""
    return app.extensions[EXTENSION]
