"""The three shared-state backends, built for real for tests that run once per backend.

"sql" runs on the test database (SQLite, or PostgreSQL through Core), "postgres"
needs DATABASE_URL to be PostgreSQL and "redis" needs TEST_REDIS_URL; the
others are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import redis
import sqlalchemy as sa

from app.extensions import db
from app.runtime import runtime
from app.state.autocommit import AutocommitExecutor
from app.state.redis import connect

BACKENDS = ["sql", "postgres", "redis"]


@dataclass
class Backend:
    name: str
    engine: sa.Engine
    executor: AutocommitExecutor | None
    redis: redis.Redis | None


def backend_for(name: str, app) -> Backend:
    """The connections one backend needs, or a skip when this run has no such backend."""
    with app.app_context():
        engine = db.engine
        executor = runtime().autocommit
    client = None
    if name == "postgres" and executor is None:
        pytest.skip("PostgreSQL only")
    if name == "redis":
        url = os.environ.get("TEST_REDIS_URL")
        if not url:
            pytest.skip("TEST_REDIS_URL is not set")
        client = connect(url)
        client.flushdb()
    return Backend(name, engine, executor, client)
