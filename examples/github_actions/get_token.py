"""Inside a GitHub Actions job: trade the job's OIDC token for an access token. No secret.

GitHub gives a job that has `permissions: id-token: write` two variables,
ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN; with them
the job asks GitHub for a JWT naming its repository, branch and workflow,
for the audience it wants. That JWT goes to the token endpoint as a
`client_assertion` with the client's id (docs/federation.md, "GitHub
Actions"). The access token is masked in the job's log and handed to later
steps as this step's output `access_token`.

Settings (environment): CCSERVER_ISSUER (this server's URL), CCSERVER_CLIENT_ID,
CCSERVER_AUDIENCE (the credential's audience; default: CCSERVER_ISSUER),
CCSERVER_SCOPE (optional).

Standard library only, so it runs on any runner with no install step.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def github_oidc_token(audience: str) -> str:
    """The job's GitHub OIDC token for `audience`."""
    url = os.environ["ACTIONS_ID_TOKEN_REQUEST_URL"]
    url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"audience": audience})
    bearer = {"Authorization": "bearer " + os.environ["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]}
    request = urllib.request.Request(url, headers=bearer)  # noqa: S310 - GitHub's https URL
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.load(response)["value"]


def access_token(issuer: str, client_id: str, assertion: str, scope: str | None = None) -> dict:
    """The token endpoint's answer to a federated client_credentials request (RFC 7523 §2.2)."""
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    if scope:
        form["scope"] = scope
    url = issuer.rstrip("/") + "/oauth2/token"
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode())  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our issuer
            return json.load(response)
    except urllib.error.HTTPError as exc:
        # RFC 6749 §5.2 body: the error code only; the server logs why (docs/federation.md).
        raise SystemExit(f"token request refused: {exc.code} {exc.read().decode()[:200]}") from None


def main() -> None:
    issuer = os.environ["CCSERVER_ISSUER"]
    audience = os.environ.get("CCSERVER_AUDIENCE") or issuer
    answer = access_token(
        issuer,
        os.environ["CCSERVER_CLIENT_ID"],
        github_oidc_token(audience),
        os.environ.get("CCSERVER_SCOPE") or None,
    )
    token = answer["access_token"]
    # Never in the log: GitHub replaces a masked value wherever it appears.
    print(f"::add-mask::{token}")
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(f"access_token={token}\n")
    print(f"got an access token for scope {answer.get('scope', '')!r}, {answer['expires_in']} s")


if __name__ == "__main__":
    sys.exit(main())
