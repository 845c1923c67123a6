"""Unit: federated-credential presets (app/clients/federation_presets.py) and the rule in words.

Each preset's body is also put through the API's schema and the service's
rules, and checked against a token shaped as the platform makes it (the
helpers of tests/oauth/test_federated_presets.py) with the verification the
token endpoint runs, so a preset can only make credentials that work.
"""

from __future__ import annotations

import json
import time

import pytest

from app.api import schemas
from app.clients import federation
from app.clients.federation_presets import (
    GITHUB_ISSUER,
    GITLAB_ISSUER,
    PRESETS,
    build_credential,
    duration_in_words,
    keys_in_words,
    rule_in_words,
    suggested_name,
)
from app.clients.records import federated_record
from app.errors import ValidationError
from app.federation.verify import verify
from tests.oauth.federation import SERVER_ISSUER, Issuer
from tests.oauth.test_federated_presets import (
    CLUSTER,
    github_token,
    gitlab_token,
    kubernetes_token,
    svid,
)


def fields_of(error: pytest.ExceptionInfo) -> list[str]:
    return [e["field"] for e in error.value.errors]


def accepted(app, body: dict, token: str) -> str | None:
    """Which check the credential fails for the token (None: it matches), as the token path runs."""
    with app.app_context():
        values = federation.credential_values(
            schemas.validate(schemas.FederatedCredentialCreate, body)
        )
    record = federated_record(
        "id",
        values["name"],
        values["issuer"],
        values["subject"],
        values["subject_pattern"],
        values["claims"],
        values["audience"],
        values["jwks_uri"],
        values["jwks"],
        values["max_token_age"],
        values["single_use"],
    )
    result = verify([record], token, now=time.time(), use_once=None)
    return result.results[0].failed


# --- GitHub Actions --------------------------------------------------------------------------


def test_github_branch():
    body = build_credential("github", {"org": "acme", "repo": "billing", "branch": "main"})
    assert body == {
        "name": "github-billing-main",
        "issuer": GITHUB_ISSUER,
        "subject": "repo:acme/billing:ref:refs/heads/main",
        "claims": {"repository_owner": "acme"},
        "max_token_age": 3600,
    }


def test_github_environment_and_full_ref_and_wildcard():
    body = build_credential(
        "github", {"org": "acme", "repo": "billing", "environment": "production"}
    )
    assert body["subject"] == "repo:acme/billing:environment:production"
    body = build_credential(
        "github", {"org": "acme", "repo": "billing", "branch": "refs/heads/main"}
    )
    assert body["subject"] == "repo:acme/billing:ref:refs/heads/main"
    body = build_credential("github", {"org": "acme", "repo": "billing", "branch": "release/*"})
    assert body["subject_pattern"] == "repo:acme/billing:ref:refs/heads/release/*"
    assert "subject" not in body


@pytest.mark.parametrize(
    "values, fields",
    [
        ({}, ["org", "repo", "branch"]),
        ({"org": "acme", "repo": "billing"}, ["branch"]),
        ({"org": "acme", "repo": "billing", "branch": "main", "environment": "prod"}, ["branch"]),
        ({"org": "ac me", "repo": "billing", "branch": "main"}, ["org"]),
        ({"org": "acme", "repo": "acme/billing", "branch": "main"}, ["repo"]),
        ({"org": "acme", "repo": "billing", "branch": "refs/tags/v1"}, ["branch"]),
        ({"org": "acme", "repo": "billing", "branch": "a b"}, ["branch"]),
        ({"org": "acme", "repo": "billing", "environment": "a:b"}, ["environment"]),
    ],
)
def test_github_refusals_name_the_field(values, fields):
    with pytest.raises(ValidationError) as error:
        build_credential("github", values)
    assert fields_of(error) == fields


def test_github_preset_accepts_the_platforms_token_and_not_another_branch(app):
    github = Issuer(GITHUB_ISSUER, "RS256")
    body = build_credential("github", {"org": "acme", "repo": "billing", "branch": "main"})
    body["jwks"] = github.jwks
    assert accepted(app, body, github_token(github)) is None
    assert accepted(app, body, github_token(github, ref="refs/heads/dev")) == "subject"
    assert accepted(app, body, github_token(github, owner="evil")) == "claim"


def test_github_environment_preset_accepts_the_environment_token(app):
    github = Issuer(GITHUB_ISSUER, "RS256")
    body = build_credential("github", {"org": "acme", "repo": "billing", "environment": "prod"})
    body["jwks"] = github.jwks
    assert accepted(app, body, github_token(github, environment="prod")) is None
    assert accepted(app, body, github_token(github, environment="staging")) == "subject"


# --- GitLab CI -------------------------------------------------------------------------------


def test_gitlab_protected_branch():
    body = build_credential(
        "gitlab", {"project_path": "acme/billing", "ref": "main", "protected_only": "on"}
    )
    assert body == {
        "name": "gitlab-billing-main",
        "issuer": GITLAB_ISSUER,
        "subject": "project_path:acme/billing:ref_type:branch:ref:main",
        "claims": {"project_path": "acme/billing", "ref_protected": "true"},
        "max_token_age": 3600,
    }


def test_gitlab_any_ref_on_a_self_managed_instance():
    body = build_credential(
        "gitlab", {"issuer": "https://gitlab.acme.example", "project_path": "group/sub/billing"}
    )
    assert body["issuer"] == "https://gitlab.acme.example"
    assert body["subject_pattern"] == "project_path:group/sub/billing:ref_type:*"
    assert body["claims"] == {"project_path": "group/sub/billing"}


@pytest.mark.parametrize(
    "values, fields",
    [
        ({}, ["project_path"]),
        ({"project_path": "billing"}, ["project_path"]),
        ({"project_path": "acme/billing", "ref": "a~b"}, ["ref"]),
    ],
)
def test_gitlab_refusals(values, fields):
    with pytest.raises(ValidationError) as error:
        build_credential("gitlab", values)
    assert fields_of(error) == fields


def test_gitlab_preset_refuses_an_unprotected_ref(app):
    gitlab = Issuer(GITLAB_ISSUER, "RS256")
    body = build_credential(
        "gitlab", {"project_path": "acme/billing", "ref": "main", "protected_only": "on"}
    )
    body["jwks"] = gitlab.jwks
    assert accepted(app, body, gitlab_token(gitlab)) is None
    assert accepted(app, body, gitlab_token(gitlab, protected="false")) == "claim"
    assert accepted(app, body, gitlab_token(gitlab, ref="dev")) == "subject"


# --- Kubernetes ------------------------------------------------------------------------------


def test_kubernetes_with_inline_jwks(app):
    cluster = Issuer(CLUSTER, "RS256")
    values = {
        "issuer": CLUSTER,
        "namespace": "billing",
        "service_account": "deployer",
        "jwks": json.dumps(cluster.jwks),
    }
    body = build_credential("kubernetes", values, audience=SERVER_ISSUER)
    assert body["subject"] == "system:serviceaccount:billing:deployer"
    assert body["jwks"] == cluster.jwks
    assert "claims" not in body and "jwks_uri" not in body
    assert accepted(app, body, kubernetes_token(cluster)) is None
    assert accepted(app, body, kubernetes_token(cluster, name="other")) == "subject"


def test_kubernetes_any_account_of_a_namespace_and_discovery():
    body = build_credential("kubernetes", {"issuer": CLUSTER, "namespace": "billing"})
    assert body["subject_pattern"] == "system:serviceaccount:billing:*"
    assert body["name"] == "k8s-billing-any"
    assert "jwks" not in body  # keys by discovery


@pytest.mark.parametrize(
    "values, fields",
    [
        ({}, ["issuer", "namespace"]),
        ({"issuer": CLUSTER, "namespace": "Billing"}, ["namespace"]),
        (
            {"issuer": CLUSTER, "namespace": "billing", "service_account": "a:b"},
            ["service_account"],
        ),
        ({"issuer": CLUSTER, "namespace": "billing", "jwks": "{not json"}, ["jwks"]),
    ],
)
def test_kubernetes_refusals(values, fields):
    with pytest.raises(ValidationError) as error:
        build_credential("kubernetes", values)
    assert fields_of(error) == fields


# --- SPIFFE ----------------------------------------------------------------------------------


def test_spiffe_bundle_endpoint_as_jwks_uri():
    values = {
        "trust_domain": "acme.example",
        "path": "/ns/billing/sa/*",
        "issuer": "https://spire.acme.example",
        "bundle_endpoint": "https://spire.acme.example/bundle",
    }
    assert build_credential("spiffe", values) == {
        "name": "spiffe-acme",
        "issuer": "https://spire.acme.example",
        "subject_pattern": "spiffe://acme.example/ns/billing/sa/*",
        "jwks_uri": "https://spire.acme.example/bundle",
        "max_token_age": 600,
    }


def test_spiffe_preset_accepts_a_jwt_svid(app):
    spire = Issuer("https://spire.acme.example", "ES256")
    values = {
        "trust_domain": "acme.example",
        "path": "/ns/billing/sa/deployer",
        "issuer": spire.url,
        "bundle_endpoint": "https://spire.acme.example/bundle",
    }
    body = build_credential("spiffe", values)
    # The bundle endpoint is not fetched here: the same keys inline stand in for it.
    del body["jwks_uri"]
    body["jwks"] = spire.jwks
    assert accepted(app, body, svid(spire, "/ns/billing/sa/deployer")) is None
    assert accepted(app, body, svid(spire, "/ns/billing/sa/other")) == "subject"


@pytest.mark.parametrize(
    "values, fields",
    [
        ({}, ["trust_domain", "path", "issuer", "bundle_endpoint"]),
        (
            {"trust_domain": "Acme", "path": "ns", "issuer": "x", "bundle_endpoint": "y"},
            ["trust_domain", "path"],
        ),
    ],
)
def test_spiffe_refusals(values, fields):
    with pytest.raises(ValidationError) as error:
        build_credential("spiffe", values)
    assert fields_of(error) == fields


# --- Common ----------------------------------------------------------------------------------


def test_name_audience_and_age_override_the_presets():
    body = build_credential(
        "github",
        {"org": "acme", "repo": "billing", "branch": "main"},
        name=" deploy ",
        audience="https://auth.acme.example",
        max_token_age=600,
    )
    assert (body["name"], body["audience"], body["max_token_age"]) == (
        "deploy",
        "https://auth.acme.example",
        600,
    )


def test_unknown_preset():
    with pytest.raises(ValidationError) as error:
        build_credential("jenkins", {})
    assert fields_of(error) == ["preset"]


@pytest.mark.parametrize(
    "parts, name",
    [
        (("github", "Billing.API", "release/*"), "github-billing-api-release"),
        (("k8s", "", "x"), "k8s-x"),
        (("!!",), "federated"),
        (("a" * 100,), "a" * 63),
    ],
)
def test_suggested_names_fit_the_name_rule(parts, name):
    assert suggested_name(*parts) == name


def test_every_preset_field_is_built_from(app):
    """The forms offer exactly what the builders read: every preset lists its guide too."""
    for preset in PRESETS.values():
        assert preset.fields and preset.guide and preset.title
        assert len({f.name for f in preset.fields}) == len(preset.fields)


# --- The rule in plain words -----------------------------------------------------------------


def test_rule_in_words_exact_subject():
    words = rule_in_words(
        {
            "issuer": GITHUB_ISSUER,
            "audience": "https://auth.acme.example",
            "subject": "repo:acme/billing:ref:refs/heads/main",
            "claims": {"repository_owner": "acme"},
            "max_token_age": 3600,
        }
    )
    assert words == (
        "Tokens from https://token.actions.githubusercontent.com for audience "
        "https://auth.acme.example, whose subject is exactly "
        "repo:acme/billing:ref:refs/heads/main, with repository_owner = acme, at most 1 hour old."
    )


def test_rule_in_words_pattern_lists_and_single_use():
    words = rule_in_words(
        {
            "issuer": "https://gitlab.com",
            "subject_pattern": "project_path:acme/*",
            "claims": {"ref_protected": "true", "environment": ["prod", "staging"], "x": ["y"]},
            "max_token_age": 600,
            "single_use": True,
        }
    )
    assert words == (
        "Tokens from https://gitlab.com for the default audience (this server), whose subject "
        "matches project_path:acme/* (* is any run of characters, ? one), with environment one "
        "of prod, staging, ref_protected = true, x = y, at most 10 minutes old, each accepted once."
    )


def test_rule_in_words_reads_a_record(app):
    with app.app_context():
        values = federation.credential_values(
            {"name": "k", "issuer": CLUSTER, "subject_pattern": "system:serviceaccount:b:*"}
        )
    record = federated_record(
        "id",
        *(
            values[k]
            for k in (
                "name",
                "issuer",
                "subject",
                "subject_pattern",
                "claims",
                "audience",
                "jwks_uri",
                "jwks",
                "max_token_age",
                "single_use",
            )
        ),
    )
    assert "whose subject matches system:serviceaccount:b:* " in rule_in_words(record)
    assert f"for audience {SERVER_ISSUER}," in rule_in_words(record)


@pytest.mark.parametrize(
    "seconds, words",
    [
        (60, "1 minute"),
        (90, "90 seconds"),
        (600, "10 minutes"),
        (3600, "1 hour"),
        (7200, "2 hours"),
        (5400, "90 minutes"),
        (86400, "1 day"),
        (1, "1 second"),
    ],
)
def test_durations(seconds, words):
    assert duration_in_words(seconds) == words


def test_keys_in_words():
    assert keys_in_words({"jwks": {"keys": [{}, {}]}}) == "Keys given inline (2 keys)."
    assert keys_in_words({"jwks_uri": "https://x/b"}) == "Keys fetched from https://x/b."
    assert keys_in_words({"issuer": "https://gitlab.com/"}) == (
        "Keys discovered from https://gitlab.com/.well-known/openid-configuration."
    )
