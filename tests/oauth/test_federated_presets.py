"""Integration: tokens shaped exactly as each platform makes them (docs/api.md §1.3), with a
credential written as a user of that platform would write it: each is accepted, and a near
miss (the same token for the wrong branch, project, namespace or workload) is refused.

The claim sets follow the platforms' documented ID tokens: GitHub Actions OIDC,
GitLab CI `id_tokens`, Kubernetes projected service-account tokens and SPIFFE JWT-SVIDs.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.oauth.federation import (
    SERVER_ISSUER,
    Issuer,
    add_credential,
    create_secretless,
    dry_run,
    federated_request,
)


@pytest.fixture
def admin(factory):
    return factory.admin_headers("acme")


@pytest.fixture
def secretless(client, admin) -> str:
    return create_secretless(client, admin, "workload", ["deploy"])


def check(client, admin, client_id, good: str, near_miss: str, failed: str, detail=None):
    response = federated_request(client, client_id, good)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["scope"] == "deploy"
    refused = federated_request(client, client_id, near_miss)
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_client"
    [result] = dry_run(client, admin, client_id, near_miss).get_json()["results"]
    assert (result["failed_check"], result["detail"]) == (failed, detail)


# --- GitHub Actions ---------------------------------------------------------------------------

GITHUB = "https://token.actions.githubusercontent.com"


def github_token(
    issuer: Issuer,
    *,
    ref: str = "refs/heads/main",
    environment: str | None = None,
    owner: str = "acme",
    repo: str = "acme/billing",
) -> str:
    """A GitHub Actions OIDC token (RS256, kid, the documented claims)."""
    now = int(time.time())
    sub = f"repo:{repo}:environment:{environment}" if environment else f"repo:{repo}:ref:{ref}"
    claims = {
        "jti": str(uuid.uuid4()),
        "sub": sub,
        "environment": environment,
        "ref": ref,
        "sha": "d6b0e7ad0e8a5c3e2c1f1b3e8d0b4b6d2f1c9a7e",
        "repository": repo,
        "repository_owner": owner,
        "repository_owner_id": "123456",
        "repository_id": "654321",
        "repository_visibility": "private",
        "run_id": "7777777777",
        "run_number": "42",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "actor_id": "1",
        "workflow": "deploy",
        "workflow_ref": f"{repo}/.github/workflows/deploy.yml@{ref}",
        "workflow_sha": "d6b0e7ad0e8a5c3e2c1f1b3e8d0b4b6d2f1c9a7e",
        "job_workflow_ref": f"{repo}/.github/workflows/deploy.yml@{ref}",
        "job_workflow_sha": "d6b0e7ad0e8a5c3e2c1f1b3e8d0b4b6d2f1c9a7e",
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref_type": "branch",
        "ref_protected": "true",
        "nbf": now - 5,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return issuer.token(aud=SERVER_ISSUER, lifetime=300, iat=now, headers={"x5t": "abc"}, **claims)


def test_github_actions_branch(client, admin, secretless):
    github = Issuer(GITHUB, "RS256")
    add_credential(
        client,
        admin,
        secretless,
        {
            "name": "github-deploy",
            "issuer": GITHUB,
            "subject": "repo:acme/billing:ref:refs/heads/main",
            "claims": {
                "repository_owner": "acme",
                "job_workflow_ref": "acme/billing/.github/workflows/deploy.yml@refs/heads/main",
            },
            "jwks": github.jwks,
        },
    )
    check(
        client,
        admin,
        secretless,
        github_token(github),
        github_token(github, ref="refs/heads/feature"),
        "subject",
    )


def test_github_actions_environment_with_pattern(client, admin, secretless):
    github = Issuer(GITHUB, "RS256")
    add_credential(
        client,
        admin,
        secretless,
        {
            "name": "github-prod",
            "issuer": GITHUB,
            "subject_pattern": "repo:acme/*:environment:production",
            "claims": {"repository_owner": "acme"},
            "jwks": github.jwks,
        },
    )
    # A fork owned by someone else, with a repository named to look like ours.
    check(
        client,
        admin,
        secretless,
        github_token(github, environment="production"),
        github_token(github, environment="production", owner="evil", repo="acme/billing"),
        "claim",
        "repository_owner",
    )


# --- GitLab CI -------------------------------------------------------------------------------

GITLAB = "https://gitlab.com"


def gitlab_token(issuer: Issuer, *, ref: str = "main", protected: str = "true") -> str:
    """A GitLab CI `id_tokens` token (RS256)."""
    now = int(time.time())
    claims = {
        "namespace_id": "72",
        "namespace_path": "acme",
        "project_id": "20",
        "project_path": "acme/billing",
        "user_id": "1",
        "user_login": "deployer",
        "user_email": "deployer@acme.example",
        "user_access_level": "maintainer",
        "pipeline_id": "574",
        "pipeline_source": "push",
        "job_id": "302",
        "ref": ref,
        "ref_type": "branch",
        "ref_path": f"refs/heads/{ref}",
        "ref_protected": protected,
        "environment": "production",
        "environment_protected": "true",
        "deployment_tier": "production",
        "runner_id": "1",
        "runner_environment": "gitlab-hosted",
        "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "project_visibility": "private",
        "ci_config_ref_uri": f"gitlab.com/acme/billing//.gitlab-ci.yml@refs/heads/{ref}",
        "ci_config_sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "jti": str(uuid.uuid4()),
        "nbf": now - 5,
    }
    sub = f"project_path:acme/billing:ref_type:branch:ref:{ref}"
    return issuer.token(sub, aud=SERVER_ISSUER, lifetime=300, iat=now, **claims)


def test_gitlab_ci_protected_branches(client, admin, secretless):
    gitlab = Issuer(GITLAB, "RS256")
    add_credential(
        client,
        admin,
        secretless,
        {
            "name": "gitlab-deploy",
            "issuer": GITLAB,
            "subject_pattern": "project_path:acme/billing:ref_type:branch:ref:*",
            "claims": {"project_path": "acme/billing", "ref_protected": "true"},
            "jwks": gitlab.jwks,
        },
    )
    check(
        client,
        admin,
        secretless,
        gitlab_token(gitlab, ref="release-1"),
        gitlab_token(gitlab, ref="my-feature", protected="false"),
        "claim",
        "ref_protected",
    )


# --- Kubernetes service accounts -------------------------------------------------------------

CLUSTER = "https://oidc.eks.eu-west-1.amazonaws.com/id/5C6F2A0D3E1B4A"


def kubernetes_token(issuer: Issuer, *, namespace: str = "billing", name: str = "deployer") -> str:
    """A projected service-account token (RS256, kubernetes.io claim, audience requested)."""
    now = int(time.time())
    claims = {
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "ip-10-0-1-23.ec2.internal", "uid": str(uuid.uuid4())},
            "pod": {"name": f"{name}-7c9d8b6f5-x2x4q", "uid": str(uuid.uuid4())},
            "serviceaccount": {"name": name, "uid": str(uuid.uuid4())},
        },
        "jti": str(uuid.uuid4()),
        "nbf": now,
    }
    return issuer.token(
        f"system:serviceaccount:{namespace}:{name}",
        aud=[SERVER_ISSUER],
        lifetime=600,
        iat=now,
        **claims,
    )


def test_kubernetes_service_account_with_inline_jwks(client, admin, secretless):
    cluster = Issuer(CLUSTER, "RS256")
    add_credential(
        client,
        admin,
        secretless,
        {
            "name": "k8s-deployer",
            "issuer": CLUSTER,
            "subject": "system:serviceaccount:billing:deployer",
            # The cluster's discovery is not public: its keys given inline
            # (`kubectl get --raw /openid/v1/jwks`).
            "jwks": cluster.jwks,
            "max_token_age": 3600,
        },
    )
    check(
        client,
        admin,
        secretless,
        kubernetes_token(cluster),
        kubernetes_token(cluster, namespace="default"),
        "subject",
    )


def test_kubernetes_any_service_account_of_a_namespace(client, admin, secretless):
    cluster = Issuer(CLUSTER, "ES256")
    add_credential(
        client,
        admin,
        secretless,
        {
            "name": "k8s-billing",
            "issuer": CLUSTER,
            "subject_pattern": "system:serviceaccount:billing:*",
            "jwks": cluster.jwks,
        },
    )
    check(
        client,
        admin,
        secretless,
        kubernetes_token(cluster, name="worker"),
        kubernetes_token(cluster, namespace="billing-staging", name="worker"),
        "subject",
    )


# --- SPIFFE JWT-SVID -------------------------------------------------------------------------

TRUST_DOMAIN_ISSUER = "https://spire.acme.example"


def svid(issuer: Issuer, path: str, *, lifetime: int = 300) -> str:
    """A JWT-SVID: sub the SPIFFE ID, aud, exp, and no iat (the SPIFFE JWT-SVID spec allows it)."""
    return issuer.token(
        f"spiffe://acme.example{path}", aud=[SERVER_ISSUER], lifetime=lifetime, iat=None
    )


def test_spiffe_jwt_svid_without_iat(client, admin, secretless):
    spire = Issuer(TRUST_DOMAIN_ISSUER, "ES256")
    add_credential(
        client,
        admin,
        secretless,
        {
            "name": "spiffe-billing",
            "issuer": TRUST_DOMAIN_ISSUER,
            "subject_pattern": "spiffe://acme.example/ns/billing/sa/*",
            "jwks": spire.jwks,
            "max_token_age": 600,
        },
    )
    check(
        client,
        admin,
        secretless,
        svid(spire, "/ns/billing/sa/deployer"),
        svid(spire, "/ns/billing/sa/deployer", lifetime=3600),  # too long-lived without iat
        "age",
    )
    refused = federated_request(client, secretless, svid(spire, "/ns/payments/sa/deployer"))
    assert refused.status_code == 401
