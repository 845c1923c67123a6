"""A live server on a loopback port and a runner for the `ccserver` CLI against it.

Integration tests: the real app served over real HTTP in a thread, a real
admin client, and the CLI's own HTTP client; nothing is mocked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
from click.testing import CliRunner, Result

from app.remote.cli import cli
from tests.conftest import free_port, serve_wsgi


@pytest.fixture
def server(app):
    """The app served on 127.0.0.1:<free port>; yields its base URL."""
    yield from serve_wsgi(app, free_port())


@dataclass
class Remote:
    """Runs `ccserver` with CCSERVER_* settings for one admin client."""

    url: str
    client_id: str
    client_secret: str
    config: str

    def env(self, **extra: str | None) -> dict[str, str | None]:
        return {
            "CCSERVER_URL": self.url,
            "CCSERVER_CLIENT_ID": self.client_id,
            "CCSERVER_CLIENT_SECRET": self.client_secret,
            # Never a developer's own profile file.
            "CCSERVER_CONFIG": self.config,
            "CCSERVER_PROFILE": None,
            **extra,
        }

    def run(self, *args: str, env: dict[str, str | None] | None = None, input=None) -> Result:
        environment = self.env(**(env or {}))
        return CliRunner().invoke(cli, list(args), env=environment, input=input)

    def ok(self, *args: str, **kwargs) -> Result:
        result = self.run(*args, **kwargs)
        assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
        return result

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--format", "json").stdout)


@pytest.fixture
def remote(server, factory, tmp_path) -> Remote:
    """The CLI as a system admin of the live server."""
    client_id, secret = factory.admin("system")
    return Remote(server, client_id, secret, str(tmp_path / "no-config.yaml"))


@pytest.fixture
def account_remote(server, factory, tmp_path) -> Remote:
    """The CLI as an admin of the `acme` account."""
    client_id, secret = factory.admin("acme")
    return Remote(server, client_id, secret, str(tmp_path / "no-config.yaml"))


def write_private(path, text: str) -> str:
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)
