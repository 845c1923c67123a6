"""Example client: gets a DPoP-bound token with requests-oauth2client and calls an API with it.

The library makes the DPoP key, signs a proof for every request (the token
request and each API call, with `ath`), and answers a server's
`use_dpop_nonce` by retrying with the nonce (RFC 9449 §8, §9). Run it:

    ISSUER=http://localhost:5000 CLIENT_ID=... CLIENT_SECRET=... \\
        API=http://localhost:8000/hello python -m examples.client_dpop
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import requests
from requests_oauth2client import DPoPToken, OAuth2Client


def dpop_client(issuer: str, client_id: str, secret: str, *, testing: bool = False) -> OAuth2Client:
    """A client that asks for DPoP-bound tokens (ES256 proofs), from the server's metadata.

    `testing=True` lets the library talk plain HTTP (loopback tests only).
    """
    return OAuth2Client.from_discovery_endpoint(
        url=f"{issuer}/.well-known/oauth-authorization-server",
        issuer=issuer,
        auth=(client_id, secret),
        dpop_bound_access_tokens=True,
        testing=testing,
    )


def dpop_token(client: OAuth2Client, resource: str | None = None) -> DPoPToken:
    """A fresh DPoP-bound token for `resource`; refuses a bearer token."""
    token = client.client_credentials(scope="read", resource=resource)
    if not isinstance(token, DPoPToken):
        raise RuntimeError("the server did not bind the token")
    return token


def call_api(client: OAuth2Client, url: str, resource: str | None = None) -> requests.Response:
    """GET `url` with a fresh DPoP-bound token (and a fresh proof) for `resource`."""
    return requests.get(url, auth=dpop_token(client, resource), timeout=10)


if __name__ == "__main__":
    issuer = os.environ.get("ISSUER", "http://localhost:5000")
    oauth2 = dpop_client(
        issuer,
        os.environ["CLIENT_ID"],
        os.environ["CLIENT_SECRET"],
        # Plain HTTP only to this machine (make run); never across a network.
        testing=urlsplit(issuer).hostname in ("localhost", "127.0.0.1", "::1"),
    )
    token = dpop_token(oauth2)
    print("token_type:", token.token_type)
    answer = requests.get(
        os.environ.get("API", "http://localhost:8000/hello"), auth=token, timeout=10
    )
    print(answer.status_code, answer.text)
