"""Example machine client: client_credentials tokens, cached until shortly before expiry.

Usage (the secret comes from the environment, never from the command line,
where other users could read it in the process list):

    export CLIENT_ID=... CLIENT_SECRET=...
    python examples/client.py http://localhost:5000 https://api.example.com/hello

`TokenClient.token()` asks the token endpoint only when it holds no token or
the one it holds expires within `leeway` seconds, so a busy service makes one
token request per token lifetime, not one per call. Thread-safe.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import requests


class TokenError(Exception):
    """The token endpoint refused the request; `error` is its RFC 6749 code."""

    def __init__(self, status: int, error: str, description: str | None) -> None:
        super().__init__(f"{status} {error}: {description or ''}".strip())
        self.status = status
        self.error = error


class TokenClient:
    """Gets and caches client_credentials access tokens (RFC 6749 §4.4)."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 10.0,
    ) -> None:
        self.token_url = token_url
        self._auth = (client_id, client_secret)
        self.scope = scope
        self.audience = audience
        self.leeway = leeway
        self.session = session or requests.Session()
        self.clock = clock
        self.timeout = timeout
        self.requests_made = 0
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        """A valid access token, from the cache while it has more than `leeway` seconds left."""
        with self._lock:
            if self._token is None or self.clock() >= self._refresh_at:
                self._fetch()
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token, e.g. after a resource server answered 401."""
        with self._lock:
            self._token = None

    def _fetch(self) -> None:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        if self.audience:
            data["audience"] = self.audience
        started = self.clock()
        # client_secret_basic (RFC 6749 §2.3.1); requests form-encodes the pair.
        response = self.session.post(
            self.token_url, data=data, auth=self._auth, timeout=self.timeout
        )
        self.requests_made += 1
        body = response.json() if response.content else {}
        if response.status_code != 200:
            raise TokenError(
                response.status_code, body.get("error", "unknown"), body.get("error_description")
            )
        expires_in = float(body.get("expires_in", 0))
        self._token = body["access_token"]
        # Count from when we asked, not when the answer came: the server's
        # clock started the token's life before the response left it.
        self._refresh_at = started + max(0.0, expires_in - self.leeway)

    def get(self, url: str, **kwargs) -> requests.Response:
        """GET a protected resource with the token; retry once with a fresh one on 401."""
        response = self._call(url, **kwargs)
        if response.status_code == 401:
            self.invalidate()
            response = self._call(url, **kwargs)
        return response

    def _call(self, url: str, **kwargs) -> requests.Response:
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self.token()}"}
        return self.session.get(url, headers=headers, timeout=self.timeout, **kwargs)


def main(argv: list[str]) -> int:
    """python examples/client.py ISSUER [RESOURCE_URL]"""
    if len(argv) < 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    issuer = argv[1].rstrip("/")
    client = TokenClient(
        f"{issuer}/oauth2/token",
        os.environ["CLIENT_ID"],
        os.environ["CLIENT_SECRET"],
        scope=os.environ.get("SCOPE"),
        audience=os.environ.get("AUDIENCE"),
    )
    if len(argv) > 2:
        response = client.get(argv[2])
        print(response.status_code, response.text)
        return 0 if response.ok else 1
    print(client.token())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
