"""Inside a Kubernetes pod: access tokens from the pod's service-account token. No secret.

The pod mounts a projected service-account token whose audience is this
server's (pod.yaml beside this file); the kubelet writes it to a file and
replaces it before it expires. `FederatedTokenClient.token()` reads that
file each time it needs a new access token (never caching the JWT, which
would go stale) and sends it as a `client_assertion` with the client's id
(docs/federation.md, "Kubernetes service accounts"). Access tokens are
reused until shortly before they expire.

Settings (environment): CCSERVER_ISSUER, CCSERVER_CLIENT_ID, CCSERVER_TOKEN_FILE
(default /var/run/secrets/ccserver/token, the mount in pod.yaml),
CCSERVER_SCOPE (optional).

Standard library only, so any Python image runs it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_FILE = "/var/run/secrets/ccserver/token"


class TokenRefused(Exception):
    """The token endpoint said no; `error` is its RFC 6749 code (the reason is in its log)."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error


class FederatedTokenClient:
    """client_credentials tokens (RFC 6749 §4.4) with the pod's JWT as the client's credential."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        *,
        token_file: str = TOKEN_FILE,
        scope: str | None = None,
        leeway: float = 60.0,
    ) -> None:
        self.token_url = issuer.rstrip("/") + "/oauth2/token"
        self.client_id = client_id
        self.token_file = token_file
        self.scope = scope
        self.leeway = leeway
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def _assertion(self) -> str:
        # Read every time: the kubelet rotates the file well before the JWT expires.
        with open(self.token_file, encoding="ascii") as handle:
            return handle.read().strip()

    def _request(self) -> dict:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._assertion(),
        }
        if self.scope:
            form["scope"] = self.scope
        body = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.token_url, data=body)  # noqa: S310 - our issuer
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our issuer
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                error = json.load(exc).get("error", "unknown")
            except ValueError:
                error = "unknown"
            raise TokenRefused(exc.code, error) from None

    def token(self) -> str:
        """A valid access token, fetched only when the one held is about to expire."""
        with self._lock:
            if self._token is None or time.monotonic() >= self._refresh_at:
                answer = self._request()
                self._token = answer["access_token"]
                self._refresh_at = time.monotonic() + max(answer["expires_in"] - self.leeway, 0)
            return self._token


def main() -> None:
    client = FederatedTokenClient(
        os.environ["CCSERVER_ISSUER"],
        os.environ["CCSERVER_CLIENT_ID"],
        token_file=os.environ.get("CCSERVER_TOKEN_FILE", TOKEN_FILE),
        scope=os.environ.get("CCSERVER_SCOPE") or None,
    )
    client.token()
    # The token itself is never printed: logs are not a place for credentials.
    print("got an access token")


if __name__ == "__main__":
    sys.exit(main())
