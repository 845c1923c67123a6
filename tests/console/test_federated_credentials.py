"""Integration: federated credentials in the console (docs/api.md §2.8, docs/federation.md),
through Flask's test client with a real database and real signatures.

The console adds credentials from its own form or a platform preset, shows each rule in
plain words, and deletes one only after a confirmation page; the API's rules (tenancy,
privilege, lock, CSRF) hold on every form. A credential added here is then used at the
token endpoint with a token shaped as the platform makes it.
"""

from __future__ import annotations

import html
import json
import re

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import FederatedCredential
from tests.api.test_privilege import WEAK
from tests.console.test_console import Console
from tests.oauth.federation import SERVER_ISSUER, Issuer, federated_request
from tests.oauth.test_federated_presets import (
    CLUSTER,
    GITHUB,
    GITLAB,
    github_token,
    gitlab_token,
    kubernetes_token,
)

API = "/api/v1/clients"


def page_text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def stored(app, client_id: str) -> list[FederatedCredential]:
    with app.app_context():
        rows = list(
            db.session.scalars(
                sa.select(FederatedCredential).where(FederatedCredential.client_id == client_id)
            )
        )
        db.session.expunge_all()
        db.session.remove()
    return rows


@pytest.fixture
def console(client) -> Console:
    return Console(client)


@pytest.fixture
def acme(factory, console) -> Console:
    """Signed in as an acme admin with clients:read and clients:write."""
    assert console.signin(*factory.admin("acme")).status_code == 303
    return console


@pytest.fixture
def workload(client, factory) -> str:
    """An acme client with no secret at all."""
    response = client.post(
        API,
        json={"name": "workload", "scopes": ["deploy"], "create_secret": False},
        headers=factory.admin_headers("acme"),
    )
    assert response.status_code == 201
    return response.get_json()["id"]


def base(client_id: str) -> str:
    return f"/console/clients/{client_id}/federated-credentials"


def add(console: Console, client_id: str, data: dict):
    console.get(f"{base(client_id)}/new")
    return console.post(f"{base(client_id)}/new", {"action": "create", **data})


# --- List, the client page, and the generic form ----------------------------------------------


def test_client_page_links_the_federated_credentials(acme, workload):
    page = page_text(acme.get(f"/console/clients/{workload}"))
    assert "Federated credentials" in page and "None: the client authenticates" in page
    assert f'href="{base(workload)}"' in page
    listing = acme.get(base(workload))
    assert listing.status_code == 200
    text = page_text(listing)
    assert "No federated credentials." in text
    for title in ("GitHub Actions", "GitLab CI", "Kubernetes service account", "SPIFFE"):
        assert title in text


def test_add_with_the_form_lists_the_rule_in_plain_words_and_the_token_works(
    app, client, acme, workload
):
    github = Issuer(GITHUB, "RS256")
    response = add(
        acme,
        workload,
        {
            "name": "github-deploy",
            "issuer": GITHUB,
            "subject_kind": "exact",
            "subject": "repo:acme/billing:ref:refs/heads/main",
            "claims": "repository_owner = acme\n\njob_workflow_ref = "
            "acme/billing/.github/workflows/deploy.yml@refs/heads/main",
            "audience": "",
            "key_source": "jwks",
            "jwks": json.dumps(github.jwks),
            "jwks_uri": "https://ignored.example/jwks",
            "max_token_age": "3600",
        },
    )
    assert response.status_code == 303, page_text(response)
    assert response.headers["Location"].endswith(base(workload))
    listing = page_text(acme.get(base(workload)))
    assert (
        f"Tokens from {GITHUB} for audience {SERVER_ISSUER}, whose subject is exactly "
        "repo:acme/billing:ref:refs/heads/main, with job_workflow_ref = "
        "acme/billing/.github/workflows/deploy.yml@refs/heads/main, repository_owner = acme, "
        "at most 1 hour old." in listing
    )
    assert "Keys given inline (1 key)." in listing
    assert "github-deploy" in listing and "added" in listing
    [row] = stored(app, workload)
    assert row.jwks_uri is None and row.single_use is False and row.last_used_at is None
    app.extensions["ccserver"].usage.resolution = 0  # last_used_at written at once
    assert federated_request(client, workload, github_token(github)).status_code == 200
    refused = federated_request(client, workload, github_token(github, owner="evil"))
    assert refused.status_code == 401
    used = stored(app, workload)[0].last_used_at
    assert used is not None
    row = page_text(acme.get(base(workload))).split("github-deploy", 1)[1].split("</tr>")[0]
    assert used.strftime("%Y-%m-%d %H:%M:%S UTC") in row


def test_the_form_makes_a_pattern_a_claim_list_and_single_use(app, acme, workload):
    response = add(
        acme,
        workload,
        {
            "name": "gitlab-any",
            "issuer": GITLAB,
            "subject_kind": "pattern",
            "subject": "project_path:acme/billing:ref_type:branch:ref:*",
            "claims": "environment = production\nenvironment = staging",
            "audience": "https://auth.acme.example",
            "key_source": "jwks_uri",
            "jwks_uri": "https://gitlab.com/oauth/discovery/keys",
            "single_use": "on",
            "max_token_age": "600",
        },
    )
    assert response.status_code == 303, page_text(response)
    [row] = stored(app, workload)
    assert (row.subject, row.subject_pattern) == (
        None,
        "project_path:acme/billing:ref_type:branch:ref:*",
    )
    assert row.claims == {"environment": ["production", "staging"]}
    assert (row.jwks, row.jwks_uri) == (None, "https://gitlab.com/oauth/discovery/keys")
    assert (row.single_use, row.max_token_age, row.audience) == (
        True,
        600,
        "https://auth.acme.example",
    )
    listing = page_text(acme.get(base(workload)))
    assert "whose subject matches project_path:acme/billing:ref_type:branch:ref:* " in listing
    assert (
        "with environment one of production, staging, at most 10 minutes old, each accepted once."
        in listing
    )
    assert "Keys fetched from https://gitlab.com/oauth/discovery/keys." in listing


@pytest.mark.parametrize(
    "data, named",
    [
        ({"issuer": "http://insecure.example", "subject": "x"}, "issuer: must be an https URL"),
        ({"issuer": GITHUB, "subject": ""}, "subject: give exactly one of subject"),
        ({"issuer": GITHUB, "subject": "x", "claims": "no equals sign"}, "claims: line 1"),
        (
            {"issuer": GITHUB, "subject": "x", "claims": "sub = x"},
            "claims.sub: is checked by its own",
        ),
        (
            {"issuer": GITHUB, "subject": "x", "key_source": "jwks", "jwks": "{"},
            "jwks: must be a JSON",
        ),
        (
            {
                "issuer": GITHUB,
                "subject": "x",
                "key_source": "jwks",
                "jwks": '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
            },
            "private members are refused",
        ),
        ({"issuer": GITHUB, "subject": "x", "max_token_age": "ten"}, "max_token_age"),
        ({"issuer": GITHUB, "subject": "x", "max_token_age": "30"}, "max_token_age"),
        (
            {"issuer": GITHUB, "subject_kind": "pattern", "subject": "**"},
            "subject_pattern: must hold",
        ),
        ({"name": "Bad Name", "issuer": GITHUB, "subject": "x"}, "name"),
        ({"issuer": GITHUB, "subject": "x", "key_source": "jwks_uri"}, "jwks_uri: give the"),
        ({"issuer": GITHUB, "subject": "x", "key_source": "jku"}, "key_source: choose one"),
    ],
)
def test_form_errors_name_the_field_and_keep_the_input(app, acme, workload, data, named):
    response = add(acme, workload, {"name": "cred", **data})
    assert response.status_code == 400
    text = page_text(response)
    assert "The credential was not added" in text and named in text
    assert f'value="{data["issuer"]}"' in text
    assert stored(app, workload) == []


def test_a_duplicate_name_is_409_and_the_limit_of_fifty(app, acme, workload):
    data = {"name": "one", "issuer": GITHUB, "subject": "repo:acme/x:ref:refs/heads/main"}
    assert add(acme, workload, data).status_code == 303
    again = add(acme, workload, data)
    assert again.status_code == 409 and "already has a federated credential named" in page_text(
        again
    )
    for n in range(49):
        assert add(acme, workload, {**data, "name": f"c{n}"}).status_code == 303
    listing = page_text(acme.get(base(workload)))
    assert "Add a credential" not in listing and "Add from a preset" not in listing
    over = add(acme, workload, {**data, "name": "c50"})
    assert over.status_code == 409 and "at most 50" in page_text(over)


# --- Presets ---------------------------------------------------------------------------------


def test_github_preset_preview_then_create_and_the_token_works(app, client, acme, workload):
    form = acme.get(f"{base(workload)}/new?preset=github")
    assert form.status_code == 200
    text = page_text(form)
    assert "New credential: GitHub Actions" in text and GITHUB in text
    for field in ('name="org"', 'name="repo"', 'name="branch"', 'name="environment"'):
        assert field in text
    assert 'name="issuer"' not in text  # GitHub's issuer is fixed: nothing to type
    terms = {"preset": "github", "org": "acme", "repo": "billing", "branch": "main"}
    preview = acme.post(f"{base(workload)}/new", {**terms, "action": "preview"})
    assert preview.status_code == 200
    text = page_text(preview)
    assert (
        f"Tokens from {GITHUB} for audience {SERVER_ISSUER}, whose subject is exactly "
        "repo:acme/billing:ref:refs/heads/main, with repository_owner = acme, at most 1 hour old."
        in text
    )
    shown = json.loads(re.search(r'<pre id="preview-json">(.*?)</pre>', text, re.S).group(1))
    assert shown["subject"] == "repo:acme/billing:ref:refs/heads/main"
    assert 'value="billing"' in text  # the terms are kept for the real thing
    assert stored(app, workload) == []  # a preview stores nothing

    # Discovery would need GitHub; this test's issuer keys are set through the API afterwards.
    created = acme.post(f"{base(workload)}/new", {**terms, "action": "create"})
    assert created.status_code == 303, page_text(created)
    [row] = stored(app, workload)
    assert (row.name, row.issuer, row.subject, row.claims, row.jwks, row.jwks_uri) == (
        "github-billing-main",
        GITHUB,
        "repo:acme/billing:ref:refs/heads/main",
        {"repository_owner": "acme"},
        None,
        None,
    )
    assert (
        "Keys discovered from https://token.actions.githubusercontent.com/.well-known/openid-configuration."
        in page_text(acme.get(base(workload)))
    )


def test_gitlab_preset_protected_only_by_default(app, acme, workload):
    text = page_text(acme.get(f"{base(workload)}/new?preset=gitlab"))
    assert f'value="{GITLAB}"' in text
    assert re.search(r'name="protected_only" checked', text)
    response = acme.post(
        f"{base(workload)}/new",
        {
            "preset": "gitlab",
            "issuer": GITLAB,
            "project_path": "acme/billing",
            "ref": "main",
            "protected_only": "on",
            "name": "gl",
            "audience": "https://auth.acme.example",
        },
    )
    assert response.status_code == 303, page_text(response)
    [row] = stored(app, workload)
    assert row.claims == {"project_path": "acme/billing", "ref_protected": "true"}
    assert row.subject == "project_path:acme/billing:ref_type:branch:ref:main"
    assert (row.name, row.audience) == ("gl", "https://auth.acme.example")


def test_kubernetes_preset_with_inline_jwks_gets_a_token(app, client, acme, workload):
    cluster = Issuer(CLUSTER, "RS256")
    response = acme.post(
        f"{base(workload)}/new",
        {
            "preset": "kubernetes",
            "issuer": CLUSTER,
            "namespace": "billing",
            "service_account": "deployer",
            "jwks": json.dumps(cluster.jwks),
            "max_token_age": "3600",
        },
    )
    assert response.status_code == 303, page_text(response)
    assert federated_request(client, workload, kubernetes_token(cluster)).status_code == 200
    other = kubernetes_token(cluster, namespace="default")
    assert federated_request(client, workload, other).status_code == 401


def test_spiffe_preset_uses_the_bundle_endpoint(app, acme, workload):
    response = acme.post(
        f"{base(workload)}/new",
        {
            "preset": "spiffe",
            "trust_domain": "acme.example",
            "path": "/ns/billing/sa/*",
            "issuer": "https://spire.acme.example",
            "bundle_endpoint": "https://spire.acme.example/bundle",
        },
    )
    assert response.status_code == 303, page_text(response)
    [row] = stored(app, workload)
    assert (row.subject_pattern, row.jwks_uri, row.max_token_age) == (
        "spiffe://acme.example/ns/billing/sa/*",
        "https://spire.acme.example/bundle",
        600,
    )


def test_preset_errors_name_the_platform_terms(app, acme, workload):
    acme.get(f"{base(workload)}/new?preset=github")
    response = acme.post(
        f"{base(workload)}/new", {"preset": "github", "org": "acme", "repo": "", "branch": "main"}
    )
    assert response.status_code == 400
    assert "repo: is required" in page_text(response)
    response = acme.post(
        f"{base(workload)}/new",
        {"preset": "gitlab", "issuer": "http://gitlab.internal", "project_path": "acme/billing"},
    )
    assert response.status_code == 400 and "issuer: must be an https URL" in page_text(response)
    assert stored(app, workload) == []


def test_unknown_preset_is_404(acme, workload):
    assert acme.get(f"{base(workload)}/new?preset=jenkins").status_code == 404
    response = acme.post(f"{base(workload)}/new", {"preset": "jenkins", "x": "y"})
    assert response.status_code == 404


# --- Delete, with its confirmation step -------------------------------------------------------


def test_delete_asks_first_then_the_token_stops_working(app, client, acme, workload):
    cluster = Issuer(CLUSTER, "ES256")
    add(
        acme,
        workload,
        {
            "name": "k8s",
            "issuer": CLUSTER,
            "subject": "system:serviceaccount:billing:deployer",
            "key_source": "jwks",
            "jwks": json.dumps(cluster.jwks),
        },
    )
    [row] = stored(app, workload)
    assert federated_request(client, workload, kubernetes_token(cluster)).status_code == 200
    listing = page_text(acme.get(base(workload)))
    confirm_url = f"{base(workload)}/{row.id}/delete"
    assert f'href="{confirm_url}"' in listing
    confirm = acme.get(confirm_url)
    assert confirm.status_code == 200
    text = page_text(confirm)
    assert "Delete the federated credential k8s?" in text
    assert "whose subject is exactly system:serviceaccount:billing:deployer" in text

    for typed in ({}, {"confirm_name": "K8S"}, {"confirm_name": "other"}):
        refused = acme.post(confirm_url, typed)
        assert refused.status_code == 400
        assert "Type the credential's name to confirm" in page_text(refused)
    assert len(stored(app, workload)) == 1

    done = acme.post(confirm_url, {"confirm_name": "k8s"})
    assert done.status_code == 303 and done.headers["Location"].endswith(base(workload))
    assert stored(app, workload) == []
    assert "Federated credential k8s deleted." in page_text(acme.get(base(workload)))
    assert federated_request(client, workload, kubernetes_token(cluster)).status_code == 401
    assert acme.get(confirm_url).status_code == 404
    assert acme.post(confirm_url, {"confirm_name": "k8s"}).status_code == 404


def test_changes_are_audited(client, factory, acme, workload):
    add(acme, workload, {"name": "a", "issuer": GITHUB, "subject": "x"})
    [row] = stored(client.application, workload)
    acme.post(f"{base(workload)}/{row.id}/delete", {"confirm_name": "a"})
    events = client.get("/api/v1/audit-events?limit=100", headers=factory.admin_headers("system"))
    actions = [(e["action"], e["target"]) for e in events.get_json()["data"]]
    assert ("federated_credential.created", f"{workload}/{row.id}") in actions
    assert ("federated_credential.deleted", f"{workload}/{row.id}") in actions


def test_a_locked_client_refuses_add_and_delete(app, acme, workload):
    add(acme, workload, {"name": "a", "issuer": GITHUB, "subject": "x"})
    [row] = stored(app, workload)
    acme.get(f"/console/clients/{workload}")
    assert acme.post(f"/console/clients/{workload}/state", {"action": "lock"}).status_code == 303
    assert "The client is locked" in page_text(acme.get(base(workload)))
    refused = add(acme, workload, {"name": "b", "issuer": GITHUB, "subject": "y"})
    assert refused.status_code == 409 and "locked" in page_text(refused)
    refused = acme.post(f"{base(workload)}/{row.id}/delete", {"confirm_name": "a"})
    assert refused.status_code == 409
    assert [r.name for r in stored(app, workload)] == ["a"]


# --- CSRF, privilege, tenancy ------------------------------------------------------------------


def test_posts_without_the_csrf_token_are_refused(app, acme, workload):
    acme.get(f"{base(workload)}/new")
    data = {"action": "create", "name": "a", "issuer": GITHUB, "subject": "x"}
    assert acme.post(f"{base(workload)}/new", data, csrf=False).status_code == 403
    assert (
        acme.post(f"{base(workload)}/new", {**data, "csrf_token": "forged"}, csrf=False).status_code
        == 403
    )
    assert stored(app, workload) == []
    assert add(acme, workload, {"name": "a", "issuer": GITHUB, "subject": "x"}).status_code == 303
    [row] = stored(app, workload)
    response = acme.post(f"{base(workload)}/{row.id}/delete", {"confirm_name": "a"}, csrf=False)
    assert response.status_code == 403
    assert len(stored(app, workload)) == 1


def test_an_admin_without_clients_write_can_read_but_not_change(
    app, factory, console, acme, workload
):
    add(acme, workload, {"name": "a", "issuer": GITHUB, "subject": "x"})
    [row] = stored(app, workload)
    reader = Console(console.http.application.test_client())
    assert reader.signin(*factory.admin("acme", scopes=["clients:read"])).status_code == 303
    listing = reader.get(base(workload))
    assert listing.status_code == 200
    text = page_text(listing)
    assert "whose subject is exactly x" in text
    assert (
        "Add a credential" not in text and "Delete…" not in text and "Add from a preset" not in text
    )
    assert "Show federated credentials" in page_text(reader.get(f"/console/clients/{workload}"))
    assert reader.get(f"{base(workload)}/new").status_code == 403
    assert reader.get(f"{base(workload)}/new?preset=github").status_code == 403
    assert reader.get(f"{base(workload)}/{row.id}/delete").status_code == 403
    data = {"action": "create", "name": "b", "issuer": GITHUB, "subject": "y"}
    assert reader.post(f"{base(workload)}/new", data).status_code == 403
    assert (
        reader.post(f"{base(workload)}/{row.id}/delete", {"confirm_name": "a"}).status_code == 403
    )
    assert [r.name for r in stored(app, workload)] == ["a"]


def test_the_privilege_rule_protects_a_stronger_admin(app, client, factory, console):
    strong, _ = factory.admin("system")
    headers = factory.admin_headers("system")
    added = client.post(
        f"{API}/{strong}/federated-credentials",
        json={"name": "a", "issuer": GITHUB, "subject": "x"},
        headers=headers,
    )
    assert added.status_code == 201
    fid = added.get_json()["id"]
    assert console.signin(*factory.admin("system", scopes=WEAK)).status_code == 303
    listing = page_text(console.get(base(strong)))
    assert "Delete…" not in listing and "Add a credential" not in listing
    assert console.get(f"{base(strong)}/new").status_code == 403
    assert console.get(f"{base(strong)}/{fid}/delete").status_code == 403
    for action in ("create", "preview"):
        refused = console.post(
            f"{base(strong)}/new", {"action": action, "name": "b", "issuer": GITHUB, "subject": "y"}
        )
        assert refused.status_code == 403
        assert "which the caller does not hold" in page_text(refused)
    refused = console.post(f"{base(strong)}/{fid}/delete", {"confirm_name": "a"})
    assert refused.status_code == 403
    assert [r.name for r in stored(app, strong)] == ["a"]


def test_another_accounts_client_is_404_everywhere(app, client, factory, acme):
    other = client.post(
        API,
        json={"name": "theirs", "create_secret": False},
        headers=factory.admin_headers("globex"),
    ).get_json()["id"]
    added = client.post(
        f"{API}/{other}/federated-credentials",
        json={"name": "a", "issuer": GITHUB, "subject": "x"},
        headers=factory.admin_headers("globex"),
    )
    fid = added.get_json()["id"]
    data = {"action": "create", "name": "b", "issuer": GITHUB, "subject": "y"}
    assert acme.get(base(other)).status_code == 404
    assert acme.get(f"{base(other)}/new").status_code == 404
    assert acme.get(f"{base(other)}/new?preset=gitlab").status_code == 404
    assert acme.post(f"{base(other)}/new", data).status_code == 404
    assert acme.post(f"{base(other)}/new", {**data, "action": "preview"}).status_code == 404
    assert acme.post(f"{base(other)}/new", {**data, "issuer": "bad"}).status_code == 404
    assert acme.get(f"{base(other)}/{fid}/delete").status_code == 404
    assert acme.post(f"{base(other)}/{fid}/delete", {"confirm_name": "a"}).status_code == 404
    assert [r.name for r in stored(app, other)] == ["a"]


def test_a_credential_of_another_client_is_404(app, client, factory, acme, workload):
    sibling = client.post(
        API, json={"name": "sibling", "create_secret": False}, headers=factory.admin_headers("acme")
    ).get_json()["id"]
    add(acme, sibling, {"name": "a", "issuer": GITHUB, "subject": "x"})
    [row] = stored(app, sibling)
    assert acme.get(f"{base(workload)}/{row.id}/delete").status_code == 404
    assert acme.post(f"{base(workload)}/{row.id}/delete", {"confirm_name": "a"}).status_code == 404
    assert len(stored(app, sibling)) == 1


def test_gitlab_token_through_a_console_made_credential(client, acme, workload):
    gitlab = Issuer(GITLAB, "RS256")
    response = add(
        acme,
        workload,
        {
            "name": "gl",
            "issuer": GITLAB,
            "subject_kind": "pattern",
            "subject": "project_path:acme/billing:ref_type:branch:ref:*",
            "claims": "project_path = acme/billing\nref_protected = true",
            "key_source": "jwks",
            "jwks": json.dumps(gitlab.jwks),
        },
    )
    assert response.status_code == 303
    assert (
        federated_request(client, workload, gitlab_token(gitlab, ref="release")).status_code == 200
    )
    unprotected = gitlab_token(gitlab, ref="feature", protected="false")
    assert federated_request(client, workload, unprotected).status_code == 401
