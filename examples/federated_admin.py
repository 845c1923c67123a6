"""Admin side of a secretless client: create it with no secret, then trust a workload's JWTs.

Usage (an admin client's secret from the environment, never the command line):

    export CCSERVER_ISSUER=https://auth.acme.example ADMIN_CLIENT_ID=... ADMIN_CLIENT_SECRET=...
    python examples/federated_admin.py billing-deployer examples/github_actions/credential.json \\
        --scope deploy

prints the new client's id, the only thing the workload needs besides its
platform's token. The calls are those of docs/api.md §2.1 (`create_secret:
false`) and §2.8; the credential file is the JSON body of §2.8, as
docs/federation.md gives one for each platform.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import requests


def admin_token(issuer: str, client_id: str, secret: str) -> str:
    """An access token for the management API (the admin client's own audience)."""
    response = requests.post(
        f"{issuer}/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "clients:read clients:write"},
        auth=(client_id, secret),
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def _call(method: str, url: str, token: str, body: dict) -> dict:
    response = requests.request(
        method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    if response.status_code >= 400:
        # problem+json (docs/api.md §2): `errors` names each refused field.
        raise SystemExit(f"{method} {url}: {response.status_code} {response.text}")
    return response.json()


def create_secretless_client(issuer: str, token: str, name: str, scopes: list[str]) -> str:
    """A client with no secret at all; returns its id."""
    body = {"name": name, "scopes": scopes, "create_secret": False}
    return _call("POST", f"{issuer}/api/v1/clients", token, body)["id"]


def add_credential(issuer: str, token: str, client_id: str, credential: dict) -> dict:
    """Add a federated credential to the client; returns it as stored."""
    url = f"{issuer}/api/v1/clients/{client_id}/federated-credentials"
    return _call("POST", url, token, credential)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the new client's name")
    parser.add_argument("credential", help="a JSON file: the federated credential's body")
    parser.add_argument("--scope", action="append", default=[], help="a scope it may get")
    args = parser.parse_args(argv)
    issuer = os.environ["CCSERVER_ISSUER"].rstrip("/")
    with open(args.credential, encoding="utf-8") as handle:
        credential = json.load(handle)
    token = admin_token(issuer, os.environ["ADMIN_CLIENT_ID"], os.environ["ADMIN_CLIENT_SECRET"])
    client_id = create_secretless_client(issuer, token, args.name, args.scope)
    add_credential(issuer, token, client_id, credential)
    print(client_id)


if __name__ == "__main__":
    sys.exit(main())
