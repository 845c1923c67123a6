"""The `ccserver` remote CLI against a live server: every verb, formats, errors, exit codes.

Integration tests: a real server on a loopback port, a real admin client,
real HTTP (tests/remote/conftest.py).
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from app.remote.errors import API_ERROR, AUTH_FAILURE, UNREACHABLE, USAGE
from tests.conftest import free_port
from tests.remote.conftest import write_private

FEDERATED_ROUTE = "/api/v1/clients/<client_id>/federated-credentials"
FEDERATED_TEST_ROUTE = FEDERATED_ROUTE + "/test"


def has_route(app, rule: str) -> bool:
    return any(r.rule == rule for r in app.url_map.iter_rules())


def make_client(remote, name: str, *extra: str) -> dict:
    result = remote.ok("clients", "create", "--name", name, "-o", "json", *extra)
    return json.loads(result.stdout)


# --- clients -----------------------------------------------------------------------------------


def test_clients_create_prints_the_secret_once_and_get_never(remote):
    result = remote.ok("clients", "create", "--name", "billing", "--scope", "read")
    assert result.stdout.splitlines()[0].split() == ["FIELD", "VALUE"]
    secret_lines = [line for line in result.stdout.splitlines() if line.startswith("client_secret")]
    assert len(secret_lines) == 1
    secret = secret_lines[0].split()[-1]
    assert secret.startswith("ccs_")
    assert "shown this once" in result.stderr
    client_id = next(
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("id ")
    )
    for fmt in ("table", "json", "yaml"):
        shown = remote.ok("clients", "get", client_id, "--format", fmt).stdout
        assert "billing" in shown
        assert secret not in shown
        assert "client_secret" not in shown


def test_clients_list_formats_and_header(remote):
    make_client(remote, "alpha", "--tag", "team-a")
    make_client(remote, "beta")
    table = remote.ok("clients", "list").stdout.splitlines()
    assert table[0].split()[:5] == ["ID", "NAME", "ACCOUNT", "TYPE", "STATUS"]
    assert any(" alpha " in f" {line} " for line in table[1:])
    as_json = json.loads(remote.ok("clients", "list", "--format", "json").stdout)
    assert {"alpha", "beta"} <= {c["name"] for c in as_json}
    # --format before the command works as well, and -o after it.
    as_yaml = yaml.safe_load(remote.ok("--format", "yaml", "clients", "list").stdout)
    assert {c["name"] for c in as_yaml} == {c["name"] for c in as_json}
    tagged = remote.json("clients", "list", "--tag", "team-a")
    assert [c["name"] for c in tagged] == ["alpha"]
    empty = remote.ok("clients", "list", "--name-prefix", "zzz").stdout.splitlines()
    assert len(empty) == 1 and empty[0].startswith("ID")


def test_clients_list_pages(remote):
    for name in ("page-a", "page-b", "page-c"):
        make_client(remote, name)
    first = remote.ok("clients", "list", "--limit", "2", "-o", "json")
    assert len(json.loads(first.stdout)) == 2
    assert "more: --cursor " in first.stderr
    cursor = first.stderr.split("more: --cursor ")[1].split()[0]
    rest = json.loads(remote.ok("clients", "list", "--cursor", cursor, "-o", "json").stdout)
    everything = json.loads(
        remote.ok("clients", "list", "--all", "--limit", "1", "-o", "json").stdout
    )
    names = [c["name"] for c in json.loads(first.stdout) + rest]
    assert names == [c["name"] for c in everything]
    assert len(everything) == 4  # three and the admin


def test_clients_update_lock_disable_revoke_delete(remote):
    client = make_client(remote, "svc", "--scope", "read", "--description", "first")
    cid = client["id"]
    changed = remote.json(
        "clients",
        "update",
        cid,
        "--scope",
        "read",
        "--scope",
        "write",
        "--description",
        "",
        "--access-token-ttl",
        "600",
    )
    assert changed["scopes"] == ["read", "write"]
    assert changed["description"] is None
    assert changed["access_token_ttl"] == 600
    assert remote.json("clients", "lock", cid)["locked"] is True
    refused = remote.run("clients", "update", cid, "--description", "x")
    assert refused.exit_code == API_ERROR
    assert "409 client_locked" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert remote.json("clients", "unlock", cid)["locked"] is False
    assert remote.json("clients", "disable", cid)["disabled"] is True
    assert remote.json("clients", "enable", cid)["disabled"] is False
    revoked = remote.ok("clients", "revoke-tokens", cid)
    assert "revoked" in revoked.stderr
    nothing = remote.run("clients", "update", cid)
    assert nothing.exit_code == USAGE and "nothing to change" in nothing.stderr
    remote.ok("clients", "delete", cid)
    gone = remote.run("clients", "get", cid)
    assert gone.exit_code == API_ERROR
    assert gone.stderr.strip() == "error: 404 client_not_found: No such client."


def test_409_name_taken(remote):
    make_client(remote, "twice")
    again = remote.run("clients", "create", "--name", "twice")
    assert again.exit_code == API_ERROR
    assert "409 name_taken" in again.stderr


def test_validation_errors_name_the_option_never_a_regex(remote):
    bad = remote.run("clients", "create", "--name", "Not OK!")
    assert bad.exit_code == USAGE
    assert bad.stderr.startswith("error: --name: must be 1 to 63 characters")
    ttl = remote.run("clients", "create", "--name", "ok", "--access-token-ttl", "5")
    assert ttl.exit_code == USAGE
    assert "--access-token-ttl: must be a whole number from 60 to 86400" in ttl.stderr
    limit = remote.run("clients", "list", "--limit", "0")
    assert limit.exit_code == USAGE and "--limit: must be" in limit.stderr
    # Errors the server finds name the option too, in words.
    audience = remote.run(
        "clients", "create", "--name", "ok", "--audience", "https://nowhere.example"
    )
    assert audience.exit_code == API_ERROR
    assert audience.stderr.startswith("error: --audience")
    scope = remote.run("clients", "create", "--name", "ok", "--scope", "read", "--scope", 'a"b')
    assert scope.exit_code == API_ERROR
    assert scope.stderr.startswith("error: --scope #2: must be scope tokens")
    for result in (bad, ttl, limit, audience, scope):
        assert "^" not in result.stderr and "\\x" not in result.stderr
    fmt = remote.run("clients", "list", "--format", "xml")
    assert fmt.exit_code == USAGE and "--format" in fmt.output


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_list_add_rotate_delete(remote):
    client = make_client(remote, "rotating")
    cid, first = client["id"], client["client_secret"]
    listed = remote.ok("secrets", "list", cid)
    assert listed.stdout.splitlines()[0].split()[:3] == ["ID", "DESCRIPTION", "HINT"]
    assert first not in listed.stdout and first[-4:] in listed.stdout
    added = remote.json("secrets", "add", cid, "--description", "ci", "--expires-in", "3600")
    assert added["secret"].startswith("ccs_") and added["expires_at"]
    rotated = remote.ok("secrets", "rotate", cid, "--grace-period", "3600")
    assert "secret:" in rotated.stdout and "work until" in rotated.stderr
    rows = remote.json("secrets", "list", cid)
    assert len(rows) == 3
    assert all(r["expires_at"] for r in rows if r["hint"] != rotated.stdout.split()[-1][-4:])
    remote.ok("secrets", "delete", cid, added["id"])
    assert len(remote.json("secrets", "list", cid)) == 2
    for row in rows:
        assert "secret" not in row


# --- client keys -------------------------------------------------------------------------------


def test_keys_from_pem_and_jwk_files_generate_and_delete(remote, tmp_path):
    cid = make_client(remote, "signer", "--no-secret")["id"]
    private = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "key.pub.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    from_pem = remote.json("keys", "add", cid, "--file", str(pem))
    assert from_pem["public_jwk"]["crv"] == "P-256"
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = ed.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    import base64

    jwk = {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
    jwk_file = tmp_path / "key.jwk"
    jwk_file.write_text(json.dumps(jwk))
    from_jwk = remote.json("keys", "add", cid, "--file", str(jwk_file))
    assert from_jwk["public_jwk"]["x"] == jwk["x"]
    # A private key never leaves the machine.
    private_pem = tmp_path / "key.pem"
    private_pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    refused = remote.run("keys", "add", cid, "--file", str(private_pem))
    assert refused.exit_code == USAGE and "--file" in refused.stderr and "private" in refused.stderr
    shown = remote.ok("keys", "add", cid, "--generate")
    assert shown.stdout.count("PRIVATE KEY-----") == 2  # one PEM: its BEGIN and END lines
    assert "private_jwk" not in shown.stdout and "shown this once" in shown.stderr
    as_json = remote.json("keys", "add", cid, "--generate")
    assert as_json["private_jwk"]["d"] and "PRIVATE KEY" in as_json["private_key_pem"]
    remote.ok("keys", "delete", cid, as_json["kid"])
    kid = next(line.split()[1] for line in shown.stdout.splitlines() if line.startswith("kid "))
    remote.ok("keys", "delete", cid, kid)
    out = tmp_path / "generated.pem"
    generated = remote.ok("keys", "add", cid, "--generate", "--private-key-out", str(out))
    assert "PRIVATE KEY" not in generated.stdout
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert "PRIVATE KEY" in out.read_text()
    listed = remote.ok("keys", "list", cid)
    assert listed.stdout.splitlines()[0].split()[:2] == ["KID", "ALG"]
    assert len(listed.stdout.splitlines()) == 4
    remote.ok("keys", "delete", cid, from_pem["kid"])
    assert len(remote.json("keys", "list", cid)) == 2
    neither = remote.run("keys", "add", cid)
    assert neither.exit_code == USAGE and "--file / --generate" in neither.stderr


# --- resource servers --------------------------------------------------------------------------


def test_resource_servers_create_list_get_update_delete(remote):
    made = remote.json(
        "resource-servers",
        "create",
        "--identifier",
        "https://billing.example",
        "--name",
        "Billing",
        "--scope",
        "invoices:read=Read invoices",
        "--scope",
        "invoices:write",
        "--access-token-ttl",
        "900",
    )
    assert made["scopes"][0] == {"value": "invoices:read", "description": "Read invoices"}
    table = remote.ok("resource-servers", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "IDENTIFIER", "NAME"]
    assert "https://billing.example" in table[1]
    got = remote.json("resource-servers", "get", made["id"])
    assert got["access_token_ttl"] == 900
    changed = remote.json(
        "resource-servers",
        "update",
        made["id"],
        "--name",
        "Billing API",
        "--access-token-ttl",
        "none",
    )
    assert changed["name"] == "Billing API" and changed["access_token_ttl"] is None
    taken = remote.run(
        "resource-servers", "create", "--identifier", "https://billing.example", "--name", "Again"
    )
    assert taken.exit_code == API_ERROR and "409 identifier_taken" in taken.stderr
    remote.ok("resource-servers", "delete", made["id"])
    assert remote.json("resource-servers", "list") == []


# --- federated credentials ---------------------------------------------------------------------


def test_federated_credentials_list_add_delete(remote, app):
    if not has_route(app, FEDERATED_ROUTE):
        pytest.skip(f"the server has no {FEDERATED_ROUTE} route yet (docs/api.md §2.8)")
    cid = make_client(remote, "workload", "--no-secret")["id"]
    made = remote.json(
        "federated-credentials",
        "add",
        cid,
        "--name",
        "github-deploy",
        "--issuer",
        "https://token.actions.githubusercontent.com",
        "--subject-pattern",
        "repo:acme/billing:*",
        "--claim",
        "repository_owner=acme",
        "--audience",
        "https://auth.example",
    )
    assert made["claims"] == {"repository_owner": "acme"}
    table = remote.ok("federated-credentials", "list", cid).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "ISSUER"] and "github-deploy" in table[1]
    remote.ok("federated-credentials", "delete", cid, made["id"])
    assert remote.json("federated-credentials", "list", cid) == []


def test_federated_credentials_test_dry_run(remote, app, tmp_path):
    if not has_route(app, FEDERATED_TEST_ROUTE):
        pytest.skip(f"the server has no {FEDERATED_TEST_ROUTE} route yet (docs/api.md §2.8)")
    cid = make_client(remote, "workload", "--no-secret")["id"]
    remote.ok(
        "federated-credentials",
        "add",
        cid,
        "--name",
        "k8s",
        "--issuer",
        "https://issuer.example",
        "--subject",
        "system:serviceaccount:ns:sa",
    )
    token = tmp_path / "token"
    token.write_text("not-a-jwt")
    answer = remote.json("federated-credentials", "test", cid, "--assertion-file", str(token))
    assert answer["matched"] is False
    table = remote.ok("federated-credentials", "test", cid, "--assertion-file", str(token))
    assert table.stdout.startswith("not matched")


def test_federated_credentials_options_checked_before_sending(remote):
    both = remote.run(
        "federated-credentials",
        "add",
        "some-client",
        "--name",
        "x",
        "--issuer",
        "https://i",
        "--subject",
        "a",
        "--subject-pattern",
        "b*",
    )
    assert both.exit_code == USAGE and "--subject / --subject-pattern" in both.stderr
    claim = remote.run(
        "federated-credentials",
        "add",
        "some-client",
        "--name",
        "x",
        "--issuer",
        "https://i",
        "--subject",
        "a",
        "--claim",
        "novalue",
    )
    assert claim.exit_code == USAGE and "--claim: must be NAME=VALUE" in claim.stderr


# --- signing keys and audit --------------------------------------------------------------------


def test_signing_keys_list_and_rotate(remote):
    before = remote.json("signing-keys", "list")
    assert {k["status"] for k in before} == {"current", "next"}
    table = remote.ok("signing-keys", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["KID", "ALG", "STATUS"]
    after = remote.json("signing-keys", "rotate")
    current = next(k for k in after if k["status"] == "current")
    assert current["kid"] == next(k for k in before if k["status"] == "next")["kid"]


def test_audit_list(remote):
    make_client(remote, "audited")
    events = remote.json("audit", "list", "--limit", "5")
    assert events[0]["action"] == "client.created"
    assert events[0]["actor"] == remote.client_id
    table = remote.ok("audit", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "AT", "ACTION", "ACTOR", "TARGET", "ACCOUNT"]
    mine = remote.json("audit", "list", "--all", "--account", "system")
    assert any(e["action"] == "client.created" for e in mine)


# --- authentication, reachability, profiles ----------------------------------------------------


def test_wrong_secret_exits_3_without_printing_it(remote):
    wrong = "ccs_" + "x" * 43
    result = remote.run("clients", "list", env={"CCSERVER_CLIENT_SECRET": wrong})
    assert result.exit_code == AUTH_FAILURE
    assert "authentication failed" in result.stderr and "invalid_client" in result.stderr
    assert wrong not in result.output


def test_a_standard_client_is_refused_by_the_api_exit_3(remote, factory):
    cid, secret = factory.client("acme", scopes=["read"])
    result = remote.run(
        "clients", "list", env={"CCSERVER_CLIENT_ID": cid, "CCSERVER_CLIENT_SECRET": secret}
    )
    assert result.exit_code == AUTH_FAILURE
    assert "management API refused" in result.stderr


def test_unreachable_server_exits_4(remote):
    url = f"http://127.0.0.1:{free_port()}"
    result = remote.run("clients", "list", env={"CCSERVER_URL": url})
    assert result.exit_code == UNREACHABLE
    assert result.stderr.startswith(f"error: cannot reach {url}")


def test_missing_settings_exit_2(remote):
    result = remote.run("clients", "list", env={"CCSERVER_CLIENT_SECRET": None})
    assert result.exit_code == USAGE
    assert "CCSERVER_CLIENT_SECRET" in result.stderr
    bad_url = remote.run("clients", "list", env={"CCSERVER_URL": "ftp://x"})
    assert bad_url.exit_code == USAGE and "CCSERVER_URL" in bad_url.stderr


def test_profile_file_must_be_private(remote, tmp_path):
    config = tmp_path / "config.yaml"
    profile = {
        "url": remote.url,
        "client_id": remote.client_id,
        "client_secret": remote.client_secret,
    }
    write_private(config, yaml.safe_dump({"profiles": {"prod": profile}}))
    none = {
        "CCSERVER_URL": None,
        "CCSERVER_CLIENT_ID": None,
        "CCSERVER_CLIENT_SECRET": None,
        "CCSERVER_CONFIG": str(config),
    }
    good = remote.ok("--profile", "prod", "clients", "list", env=none)
    assert good.stdout.startswith("ID")
    assert remote.client_secret not in good.output
    os.chmod(config, 0o644)
    loose = remote.run("--profile", "prod", "clients", "list", env=none)
    assert loose.exit_code == USAGE
    assert "mode 0644" in loose.stderr and "chmod 600" in loose.stderr
    assert remote.client_secret not in loose.output
    os.chmod(config, 0o600)
    unknown = remote.run("--profile", "staging", "clients", "list", env=none)
    assert unknown.exit_code == USAGE and "--profile: no profile 'staging'" in unknown.stderr


def test_default_profile_fills_in_for_the_environment(remote, tmp_path):
    config = tmp_path / "config.yaml"
    profile = {
        "url": remote.url,
        "client_id": remote.client_id,
        "client_secret": remote.client_secret,
    }
    write_private(config, yaml.safe_dump({"profiles": {"default": profile}}))
    env = {
        "CCSERVER_URL": None,
        "CCSERVER_CLIENT_ID": None,
        "CCSERVER_CLIENT_SECRET": None,
        "CCSERVER_CONFIG": str(config),
    }
    assert remote.ok("clients", "list", env=env).stdout.startswith("ID")


def test_the_admin_secret_never_appears_in_any_output(remote, tmp_path):
    outputs = [remote.ok("clients", "list", "-o", fmt).output for fmt in ("table", "json", "yaml")]
    outputs.append(remote.ok("export").output)
    outputs.append(remote.run("clients", "get", "nope").output)
    for text in outputs:
        assert remote.client_secret not in text


# --- a server that fails -----------------------------------------------------------------------


def _failing(httpserver, status: int, **headers: str):
    httpserver.expect_request("/oauth2/token").respond_with_json(
        {"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 60}
    )
    httpserver.expect_request("/api/v1/clients").respond_with_json(
        {
            "type": "about:blank",
            "title": "Unavailable",
            "status": status,
            "detail": "down",
            "code": "unavailable",
        },
        status=status,
        headers=headers,
    )
    return httpserver.url_for("/").rstrip("/")


def test_5xx_exits_4(remote, httpserver):
    result = remote.run("clients", "list", env={"CCSERVER_URL": _failing(httpserver, 503)})
    assert result.exit_code == UNREACHABLE
    assert result.stderr.strip() == "error: the server failed: 503 unavailable: down"


def test_token_endpoint_5xx_exits_4(remote, httpserver):
    httpserver.expect_request("/oauth2/token").respond_with_data("oops", status=502)
    url = httpserver.url_for("/").rstrip("/")
    result = remote.run("clients", "list", env={"CCSERVER_URL": url})
    assert result.exit_code == UNREACHABLE and "HTTP 502" in result.stderr


def test_a_redirect_is_not_followed(remote, httpserver):
    httpserver.expect_request("/oauth2/token").respond_with_data(
        "", status=302, headers={"Location": "https://elsewhere.example/login"}
    )
    url = httpserver.url_for("/").rstrip("/")
    result = remote.run("clients", "list", env={"CCSERVER_URL": url})
    assert result.exit_code == UNREACHABLE
    assert "redirects to https://elsewhere.example/login" in result.stderr
    assert remote.client_secret not in result.output


def test_the_console_script_runs_as_a_process(remote):
    """The installed entry point (pyproject [project.scripts]) and its real exit codes."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = shutil.which("ccserver", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "app.remote"]
    env = {k: v for k, v in remote.env().items() if v is not None}
    env["PATH"] = os.environ.get("PATH", "")
    done = subprocess.run(
        [*command, "clients", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ID")
    env["CCSERVER_URL"] = f"http://127.0.0.1:{free_port()}"
    down = subprocess.run(
        [*command, "audit", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert down.returncode == UNREACHABLE and down.stderr.startswith("error: cannot reach")


def test_ccserver_audience_asks_for_that_resource(remote, app):
    audience = app.config["MANAGEMENT_AUDIENCE"]
    good = remote.run("clients", "list", env={"CCSERVER_AUDIENCE": audience})
    assert good.exit_code == 0 and good.stdout.startswith("ID")
    wrong = remote.run("clients", "list", env={"CCSERVER_AUDIENCE": "https://other.example"})
    assert wrong.exit_code == AUTH_FAILURE
    assert "invalid_target" in wrong.stderr
