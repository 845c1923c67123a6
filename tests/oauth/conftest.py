"""Fixtures for tests that run once per shared-state backend (database, Redis)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(params=["database", "redis"])
def backend(request) -> str:
    """Where shared state lives; Redis cases need TEST_REDIS_URL."""
    if request.param == "redis" and not os.environ.get("TEST_REDIS_URL"):
        pytest.skip("TEST_REDIS_URL is not set")
    return request.param


@pytest.fixture
def backend_config(base_config, migrated, backend) -> dict:
    """The base configuration with REDIS_URL set for the Redis backend only."""
    redis_url = os.environ.get("TEST_REDIS_URL") if backend == "redis" else None
    return {**base_config, "REDIS_URL": redis_url}
