"""Integration: the secretless examples (examples/github_actions/, examples/kubernetes/,
examples/federated_admin.py) run as their users run them, against this server over real HTTP.

The admin script creates a client with no secret and its federated credential from the
example's credential file; the job side then gets an access token with nothing but a
platform token: one shaped exactly as GitHub Actions or a Kubernetes kubelet makes it,
signed by a test key whose public half the credential carries inline (the real issuers'
keys are discovered, which a test cannot reach). The workflow and pod manifests are read
as YAML and checked for what makes the exchange work: `id-token: write`, the audience on
both sides, and the token file the client reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import jwt
import pytest
import requests
import yaml

from tests.conftest import free_port, serve_wsgi
from tests.oauth.federation import Issuer

ROOT = Path(__file__).resolve().parent.parent
GITHUB_DIR = ROOT / "examples" / "github_actions"
KUBERNETES_DIR = ROOT / "examples" / "kubernetes"
GITHUB = "https://token.actions.githubusercontent.com"
REQUEST_TOKEN = "ghs_request_token_of_this_job"


@pytest.fixture
def app_config(live_config) -> dict:
    return live_config


@pytest.fixture
def issuer(live_url) -> str:
    return live_url


def run(args: list[str], env: dict[str, str], *, check: bool = True) -> subprocess.CompletedProcess:
    """A program of examples/ in a fresh interpreter, with only the environment given."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(  # noqa: S603 - our own examples
        args, env={**base, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def make_client(issuer: str, factory, credential: dict, tmp_path: Path) -> str:
    """Run examples/federated_admin.py with the credential file; returns the new client's id."""
    admin_id, admin_secret = factory.admin("acme")
    path = tmp_path / "credential.json"
    path.write_text(json.dumps(credential))
    result = run(
        [sys.executable, "examples/federated_admin.py", "workload", str(path), "--scope", "deploy"],
        {
            "CCSERVER_ISSUER": issuer,
            "ADMIN_CLIENT_ID": admin_id,
            "ADMIN_CLIENT_SECRET": admin_secret,
        },
    )
    client_id = result.stdout.strip()
    assert admin_secret not in result.stdout + result.stderr
    return client_id


def verified_claims(issuer: str, access_token: str) -> dict:
    """The access token checked with the server's published keys, as a resource server does."""
    keys = jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json")
    key = keys.get_signing_key_from_jwt(access_token)
    return jwt.decode(
        access_token,
        key.key,
        algorithms=[jwt.get_unverified_header(access_token)["alg"]],
        options={"verify_aud": False},
        issuer=issuer,
    )


def has_no_secret(issuer: str, factory, client_id: str) -> bool:
    headers = factory.admin_headers("acme")
    url = f"{issuer}/api/v1/clients/{client_id}/secrets"
    return requests.get(url, headers=headers, timeout=10).json()["data"] == []


# --- GitHub Actions --------------------------------------------------------------------------


def workflow() -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); only the job matters here.
    return yaml.safe_load((GITHUB_DIR / "deploy.yml").read_text())


def github_actions_token(platform: Issuer, audience: str) -> str:
    """A GitHub Actions OIDC token as GitHub makes one for a push to main."""
    now = int(time.time())
    repo, ref = "acme/billing", "refs/heads/main"
    return platform.token(
        f"repo:{repo}:ref:{ref}",
        aud=audience,
        lifetime=300,
        iat=now,
        headers={"typ": "JWT", "x5t": "example-thumbprint"},
        jti=str(uuid.uuid4()),
        nbf=now - 5,
        ref=ref,
        sha="d6b0e7ad0e8a5c3e2c1f1b3e8d0b4b6d2f1c9a7e",
        repository=repo,
        repository_owner="acme",
        repository_owner_id="123456",
        repository_visibility="private",
        repository_id="654321",
        run_id="7777777777",
        run_number="42",
        run_attempt="1",
        runner_environment="github-hosted",
        actor="octocat",
        actor_id="1",
        workflow="deploy",
        workflow_ref=f"{repo}/.github/workflows/deploy.yml@{ref}",
        workflow_sha="d6b0e7ad0e8a5c3e2c1f1b3e8d0b4b6d2f1c9a7e",
        job_workflow_ref=f"{repo}/.github/workflows/deploy.yml@{ref}",
        job_workflow_sha="d6b0e7ad0e8a5c3e2c1f1b3e8d0b4b6d2f1c9a7e",
        head_ref="",
        base_ref="",
        event_name="push",
        ref_type="branch",
        ref_protected="true",
    )


@pytest.fixture
def github() -> Issuer:
    return Issuer(GITHUB, "RS256")


@pytest.fixture
def github_oidc(github) -> Iterator[str]:
    """GitHub's token service for one job: the request token as a bearer, the audience asked."""

    def service(environ, start_response):
        audience = parse_qs(environ.get("QUERY_STRING", "")).get("audience")
        if environ.get("HTTP_AUTHORIZATION") != f"bearer {REQUEST_TOKEN}" or not audience:
            start_response("401 Unauthorized", [("Content-Type", "application/json")])
            return [b'{"message": "Unable to get ACTIONS_ID_TOKEN_REQUEST_URL"}']
        body = json.dumps({"count": 1, "value": github_actions_token(github, audience[0])})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]

    for url in serve_wsgi(service, free_port()):
        # GitHub's URL comes with a query of its own; the audience is appended to it.
        yield f"{url}/_apis/distributedtask/hubs/build/plans/1/jobs/2/idtoken?api-version=2.0"


def test_the_workflow_asks_for_an_id_token_and_names_the_credentials_audience():
    credential = json.loads((GITHUB_DIR / "credential.json").read_text())
    flow = workflow()
    assert flow["permissions"]["id-token"] == "write"
    job = flow["jobs"]["deploy"]
    assert job["env"]["CCSERVER_AUDIENCE"] == credential["audience"]
    assert credential["issuer"] == GITHUB
    branch = credential["subject"].removeprefix("repo:acme/billing:ref:refs/heads/")
    assert flow[True]["push"]["branches"] == [branch]  # the workflow runs where the rule allows
    [python] = [s for s in job["steps"] if s.get("id") == "token"]
    assert python["run"] == "python3 examples/github_actions/get_token.py"
    assert "CCSERVER_CLIENT_ID" in job["env"] and "secrets." not in json.dumps(job)
    [shell] = [s for s in job["steps"] if "curl" in s.get("run", "") and "audience=" in s["run"]]
    assert "audience=$CCSERVER_AUDIENCE" in shell["run"]
    assert (
        "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        in (shell["run"])
    )


def test_github_actions_job_gets_a_token_with_no_secret(
    issuer, factory, github, github_oidc, tmp_path
):
    credential = json.loads((GITHUB_DIR / "credential.json").read_text())
    client_id = make_client(issuer, factory, {**credential, "jwks": github.jwks}, tmp_path)
    assert has_no_secret(issuer, factory, client_id)
    output = tmp_path / "github_output"
    env = {
        **{k: str(v) for k, v in workflow()["jobs"]["deploy"]["env"].items()},
        "CCSERVER_ISSUER": issuer,
        "CCSERVER_CLIENT_ID": client_id,
        "CCSERVER_SCOPE": "deploy",
        "ACTIONS_ID_TOKEN_REQUEST_URL": github_oidc,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN,
        "GITHUB_OUTPUT": str(output),
    }
    result = run([sys.executable, "examples/github_actions/get_token.py"], env)
    [line] = output.read_text().splitlines()
    access_token = line.removeprefix("access_token=")
    # Masked before anything else is printed; then never printed in clear.
    assert result.stdout.startswith(f"::add-mask::{access_token}\n")
    assert access_token not in result.stdout.split("\n", 1)[1]
    claims = verified_claims(issuer, access_token)
    assert (claims["sub"], claims["client_id"], claims["scope"]) == (client_id, client_id, "deploy")


def test_github_actions_job_of_another_branch_is_refused(
    issuer, factory, github, github_oidc, tmp_path
):
    credential = json.loads((GITHUB_DIR / "credential.json").read_text())
    credential["subject"] = "repo:acme/billing:ref:refs/heads/release"
    client_id = make_client(issuer, factory, {**credential, "jwks": github.jwks}, tmp_path)
    env = {
        "CCSERVER_ISSUER": issuer,
        "CCSERVER_AUDIENCE": credential["audience"],
        "CCSERVER_CLIENT_ID": client_id,
        "ACTIONS_ID_TOKEN_REQUEST_URL": github_oidc,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN,
    }
    result = run([sys.executable, "examples/github_actions/get_token.py"], env, check=False)
    assert result.returncode != 0
    assert "401" in result.stderr and "invalid_client" in result.stderr


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")
def test_the_workflows_curl_step_gets_a_token(issuer, factory, github, github_oidc, tmp_path):
    credential = json.loads((GITHUB_DIR / "credential.json").read_text())
    client_id = make_client(issuer, factory, {**credential, "jwks": github.jwks}, tmp_path)
    job = workflow()["jobs"]["deploy"]
    [step] = [s for s in job["steps"] if s.get("name") == "Get an access token (curl)"]
    env = {
        **{k: str(v) for k, v in job["env"].items()},
        "CCSERVER_ISSUER": issuer,
        "CCSERVER_CLIENT_ID": client_id,
        "ACTIONS_ID_TOKEN_REQUEST_URL": github_oidc,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN,
    }
    result = run(["bash", "-e", "-o", "pipefail", "-c", step["run"]], env)
    access_token = result.stdout.strip().removeprefix("::add-mask::")
    assert verified_claims(issuer, access_token)["sub"] == client_id


# --- Kubernetes ------------------------------------------------------------------------------


def manifests() -> dict[str, dict]:
    documents = yaml.safe_load_all((KUBERNETES_DIR / "pod.yaml").read_text())
    return {doc["kind"]: doc for doc in documents}


def test_the_pod_projects_a_token_for_the_credentials_audience_where_the_client_reads_it():
    from examples.kubernetes import client as example

    credential = json.loads((KUBERNETES_DIR / "credential.json").read_text())
    pod = manifests()["Pod"]
    account = manifests()["ServiceAccount"]["metadata"]
    namespace, name = pod["metadata"]["namespace"], pod["spec"]["serviceAccountName"]
    assert (account["namespace"], account["name"]) == (namespace, name)
    assert credential["subject"] == f"system:serviceaccount:{namespace}:{name}"

    [container] = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    [volume] = [v for v in pod["spec"]["volumes"] if "projected" in v]
    [source] = volume["projected"]["sources"]
    projection = source["serviceAccountToken"]
    assert projection["audience"] == credential["audience"]
    # The kubelet renews the token after 80% of its lifetime: the oldest one a pod
    # holds must still be young enough for the credential.
    assert projection["expirationSeconds"] >= 600  # the API server's minimum
    assert projection["expirationSeconds"] * 0.8 <= credential["max_token_age"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    token_file = f"{mount['mountPath']}/{projection['path']}"
    assert env["CCSERVER_TOKEN_FILE"] == token_file == example.TOKEN_FILE
    assert mount["readOnly"] is True


def kubelet_token(platform: Issuer, audience: str, *, namespace: str = "billing") -> str:
    """A projected service-account token as the kubelet writes it to the pod."""
    now = int(time.time())
    return platform.token(
        f"system:serviceaccount:{namespace}:deployer",
        aud=[audience],
        lifetime=3600,
        iat=now,
        jti=str(uuid.uuid4()),
        nbf=now,
        **{
            "kubernetes.io": {
                "namespace": namespace,
                "node": {"name": "ip-10-0-1-23.ec2.internal", "uid": str(uuid.uuid4())},
                "pod": {"name": "billing-deployer", "uid": str(uuid.uuid4())},
                "serviceaccount": {"name": "deployer", "uid": str(uuid.uuid4())},
            }
        },
    )


def test_kubernetes_pod_gets_a_token_with_no_secret(issuer, factory, tmp_path):
    credential = json.loads((KUBERNETES_DIR / "credential.json").read_text())
    cluster = Issuer(credential["issuer"], "RS256")
    # The cluster's discovery is not public: its keys inline (kubectl get --raw /openid/v1/jwks).
    client_id = make_client(issuer, factory, {**credential, "jwks": cluster.jwks}, tmp_path)
    assert has_no_secret(issuer, factory, client_id)
    token_file = tmp_path / "token"
    token_file.write_text(kubelet_token(cluster, credential["audience"]))
    env = {
        "CCSERVER_ISSUER": issuer,
        "CCSERVER_CLIENT_ID": client_id,
        "CCSERVER_TOKEN_FILE": str(token_file),
        "CCSERVER_SCOPE": "deploy",
    }
    result = run([sys.executable, "examples/kubernetes/client.py"], env)
    assert result.stdout.strip() == "got an access token"


def test_kubernetes_client_reads_the_rotated_file_and_reuses_access_tokens(
    issuer, factory, tmp_path
):
    from examples.kubernetes.client import FederatedTokenClient, TokenRefused

    credential = json.loads((KUBERNETES_DIR / "credential.json").read_text())
    cluster = Issuer(credential["issuer"], "ES256")
    client_id = make_client(issuer, factory, {**credential, "jwks": cluster.jwks}, tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(kubelet_token(cluster, credential["audience"]))
    client = FederatedTokenClient(issuer, client_id, token_file=str(token_file), scope="deploy")
    first = client.token()
    assert client.token() == first  # reused: no second request
    claims = verified_claims(issuer, first)
    assert (claims["sub"], claims["scope"]) == (client_id, "deploy")

    # The kubelet's next token, from another namespace: refused, and read afresh.
    token_file.write_text(kubelet_token(cluster, credential["audience"], namespace="default"))
    fresh = FederatedTokenClient(issuer, client_id, token_file=str(token_file))
    with pytest.raises(TokenRefused) as refused:
        fresh.token()
    assert (refused.value.status, refused.value.error) == (401, "invalid_client")
