"""`ccserver apply` and `ccserver export` against a live server (docs/cli.md#apply).

Integration tests: the plan, idempotence, deletions only of what the file
manages, secrets never in a file, errors naming the entry.
"""

from __future__ import annotations

import json

import pytest
import yaml

from app.remote.errors import API_ERROR, USAGE
from tests.remote.test_cli import FEDERATED_ROUTE, has_route, make_client

ACME = {
    "version": 1,
    "resource_servers": [
        {
            "identifier": "https://billing.acme.example",
            "name": "Billing API",
            "scopes": [{"value": "invoices:read"}, {"value": "invoices:write"}],
        }
    ],
    "clients": [
        {
            "name": "billing-reader",
            "scopes": ["invoices:read"],
            "audiences": ["https://billing.acme.example"],
            "tags": ["billing"],
        },
        {"name": "batch-job", "description": "nightly", "create_secret": False},
    ],
}


def write(tmp_path, document, name="acme.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def clients_by_name(remote) -> dict[str, dict]:
    return {c["name"]: c for c in remote.json("clients", "list", "--all")}


def test_export_then_apply_dry_run_prints_no_changes(remote, tmp_path):
    created = make_client(remote, "exported", "--scope", "read", "--tag", "b", "--tag", "a")
    remote.ok(
        "resource-servers",
        "create",
        "--identifier",
        "https://rs.example",
        "--name",
        "RS",
        "--scope",
        "x=the x scope",
    )
    exported = remote.ok("export").stdout
    assert "ccs_" not in exported and created["client_secret"] not in exported
    assert "client_secret" not in exported and remote.client_secret not in exported
    document = yaml.safe_load(exported)
    assert document["account"] == "system"
    assert {c["name"] for c in document["clients"]} >= {"exported"}
    assert "id" not in document["clients"][0]
    path = tmp_path / "f.yaml"
    path.write_text(exported)
    result = remote.ok("apply", "-f", str(path), "--dry-run")
    assert result.stdout.strip() == "no changes"
    assert remote.ok("apply", "-f", str(path)).stdout.strip() == "no changes"


def test_apply_creates_updates_deletes_as_planned_and_is_idempotent(account_remote, tmp_path):
    remote = account_remote
    path = write(tmp_path, ACME)
    plan = remote.ok("apply", "-f", path, "--dry-run").stdout.splitlines()
    assert plan == [
        "+ create resource server https://billing.acme.example",
        "+ create client billing-reader",
        "+ create client batch-job",
        "plan: 3 to create (dry run: nothing changed)",
    ]
    assert "billing-reader" not in clients_by_name(remote)  # a dry run changes nothing

    applied = remote.ok("apply", "-f", path)
    assert applied.stdout.splitlines()[:4] == plan[:3] + ["plan: 3 to create"]
    secrets = [line for line in applied.stdout.splitlines() if "client_secret:" in line]
    assert len(secrets) == 1  # batch-job asked for none
    assert "shown this once" in applied.stderr
    made = clients_by_name(remote)
    assert made["billing-reader"]["account_id"] == "acme"
    assert made["billing-reader"]["audiences"] == ["https://billing.acme.example"]
    secret = secrets[0].split()[1]
    assert remote.json("secrets", "list", made["billing-reader"]["id"])[0]["hint"] == secret[-4:]
    assert remote.json("secrets", "list", made["batch-job"]["id"]) == []

    assert remote.ok("apply", "-f", path).stdout.strip() == "no changes"

    changed = json.loads(json.dumps(ACME))
    changed["clients"][0]["scopes"] = ["invoices:read", "invoices:write"]
    changed["clients"][0]["tags"] = ["billing"]
    changed["clients"][1] = {"name": "batch-job", "absent": True}
    changed["resource_servers"][0]["name"] = "Billing"
    path = write(tmp_path, changed)
    plan = remote.ok("apply", "-f", path).stdout.splitlines()
    assert plan[:4] == [
        "~ update resource server https://billing.acme.example (name)",
        "~ update client billing-reader (scopes)",
        "- delete client batch-job",
        "plan: 2 to update, 1 to delete",
    ]
    now = clients_by_name(remote)
    assert "batch-job" not in now
    assert now["billing-reader"]["scopes"] == ["invoices:read", "invoices:write"]
    assert remote.ok("apply", "-f", path).stdout.strip() == "no changes"
    # The exported file of the account plans nothing either.
    exported = tmp_path / "export.yaml"
    exported.write_text(remote.ok("export").stdout)
    assert remote.ok("apply", "-f", str(exported), "--dry-run").stdout.strip() == "no changes"


def test_without_prune_unnamed_objects_stay_and_with_prune_they_go(account_remote, tmp_path):
    remote = account_remote
    make_client(remote, "hand-made")
    path = write(tmp_path, {"clients": [{"name": "kept"}]})
    remote.ok("apply", "-f", path)
    assert {"hand-made", "kept"} <= set(clients_by_name(remote))
    pruned = write(tmp_path, {"prune": True, "clients": [{"name": "kept"}]}, "pruned.yaml")
    plan = remote.ok("apply", "-f", pruned, "--dry-run").stdout.splitlines()
    assert plan == ["- delete client hand-made", "plan: 1 to delete (dry run: nothing changed)"]
    remote.ok("apply", "-f", pruned)
    # The admin the CLI runs as is never pruned.
    assert set(clients_by_name(remote)) == {"kept", remote_admin_name(remote)}


def remote_admin_name(remote) -> str:
    return next(c["name"] for c in clients_by_name(remote).values() if c["id"] == remote.client_id)


def test_locked_client_changes_need_unlock_in_the_file(account_remote, tmp_path):
    remote = account_remote
    path = write(tmp_path, {"clients": [{"name": "frozen", "locked": True, "description": "a"}]})
    remote.ok("apply", "-f", path)
    assert clients_by_name(remote)["frozen"]["locked"] is True
    change = write(tmp_path, {"clients": [{"name": "frozen", "description": "b"}]}, "b.yaml")
    refused = remote.run("apply", "-f", change)
    assert refused.exit_code == API_ERROR
    assert "clients[frozen]: the client is locked" in refused.stderr
    unlock = write(
        tmp_path, {"clients": [{"name": "frozen", "locked": False, "description": "b"}]}, "c.yaml"
    )
    remote.ok("apply", "-f", unlock)
    assert clients_by_name(remote)["frozen"]["description"] == "b"


def test_secrets_in_the_file_are_refused(remote, tmp_path):
    path = write(tmp_path, {"clients": [{"name": "leaky", "client_secret": "ccs_x"}]})
    result = remote.run("apply", "-f", path, "--dry-run")
    assert result.exit_code == USAGE
    assert "clients[leaky].client_secret: secrets never go in the file" in result.stderr
    assert "ccs_x" not in result.output


def test_file_shape_errors_name_the_place(remote, tmp_path):
    cases = {
        "bad.yaml": ({"clientz": []}, "unknown top-level key 'clientz'"),
        "noname.yaml": ({"clients": [{"scopes": ["a"]}]}, "clients[0]: `name` is required"),
        "twice.yaml": ({"clients": [{"name": "a"}, {"name": "a"}]}, "clients[a]: named twice"),
        "id.yaml": ({"clients": [{"name": "a", "id": "x"}]}, "clients[a].id: is written by"),
    }
    for name, (document, message) in cases.items():
        result = remote.run("apply", "-f", write(tmp_path, document, name))
        assert result.exit_code == USAGE, result.output
        assert message in result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("clients: [\n")
    result = remote.run("apply", "-f", str(broken))
    assert result.exit_code == USAGE and "not valid YAML" in result.stderr
    missing = remote.run("apply", "-f", str(tmp_path / "absent.yaml"))
    assert missing.exit_code == USAGE and "--file: cannot read" in missing.stderr


def test_server_validation_errors_name_the_entry(remote, tmp_path):
    path = write(tmp_path, {"clients": [{"name": "short", "access_token_ttl": 5}]})
    result = remote.run("apply", "-f", path)
    assert result.exit_code == API_ERROR
    assert result.stderr.startswith("error: clients[short].access_token_ttl:")


def test_apply_manages_federated_credentials(account_remote, tmp_path, app):
    if not has_route(app, FEDERATED_ROUTE):
        pytest.skip(f"the server has no {FEDERATED_ROUTE} route yet (docs/api.md §2.8)")
    remote = account_remote
    cred = {
        "name": "github-deploy",
        "issuer": "https://token.actions.githubusercontent.com",
        "subject": "repo:acme/billing:ref:refs/heads/main",
        "audience": "https://auth.acme.example",
    }
    document = {
        "clients": [{"name": "deployer", "create_secret": False, "federated_credentials": [cred]}]
    }
    path = write(tmp_path, document)
    plan = remote.ok("apply", "-f", path).stdout.splitlines()
    assert plan[:2] == [
        "+ create client deployer",
        "+ create federated credential github-deploy of client deployer",
    ]
    assert remote.ok("apply", "-f", path).stdout.strip() == "no changes"
    cred["subject"] = "repo:acme/billing:ref:refs/heads/release"
    plan = remote.ok("apply", "-f", write(tmp_path, document)).stdout.splitlines()
    assert plan[0] == "-/+ replace federated credential github-deploy of client deployer (subject)"
    cid = clients_by_name(remote)["deployer"]["id"]
    listed = remote.json("federated-credentials", "list", cid)
    assert [c["subject"] for c in listed] == [cred["subject"]]
    exported = tmp_path / "export.yaml"
    exported.write_text(remote.ok("export").stdout)
    assert "github-deploy" in exported.read_text()
    assert remote.ok("apply", "-f", str(exported), "--dry-run").stdout.strip() == "no changes"
    cred["absent"] = True
    plan = remote.ok("apply", "-f", write(tmp_path, document)).stdout.splitlines()
    assert plan[0] == "- delete federated credential github-deploy of client deployer"
    assert remote.json("federated-credentials", "list", cid) == []


def test_federated_credentials_on_a_server_without_them_change_nothing(remote, tmp_path, app):
    if has_route(app, FEDERATED_ROUTE):
        pytest.skip("this server has the route: test_apply_manages_federated_credentials runs")
    document = {
        "clients": [
            {
                "name": "deployer",
                "federated_credentials": [{"name": "ci", "issuer": "https://i", "subject": "s"}],
            }
        ]
    }
    result = remote.run("apply", "-f", write(tmp_path, document))
    assert result.exit_code == API_ERROR
    assert "no federated credentials API" in result.stderr
    assert "deployer" not in clients_by_name(remote)


def test_apply_reads_stdin(remote):
    text = yaml.safe_dump({"clients": [{"name": "from-stdin", "create_secret": False}]})
    result = remote.ok("apply", "-f", "-", "--dry-run", input=text)
    assert result.stdout.splitlines()[0] == "+ create client from-stdin"
