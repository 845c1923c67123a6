"""Integration: README.md's walk-through, its own ```sh blocks run in bash against a live server.

The server is the app served on a loopback port (the test database: SQLite,
or PostgreSQL from DATABASE_URL); its first admin is made as `make run`
makes it. The blocks run in order in one bash, in a scratch directory, with
only the substitutions a reader makes: the box's admin id and secret for
the placeholders, and this test's ports for 5000 and 8000.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.setup import bootstrap_admin
from tests.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MARK = "@@readme-block"


def walkthrough_blocks(text: str) -> list[str]:
    """The ```sh blocks between "## Walk-through" and the next "## " heading."""
    section = text.split("\n## Walk-through\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)


@pytest.fixture
def app_config(live_config) -> dict:
    # As `PORT=… make run`: the issuer is the address the reader's shell reaches.
    return live_config


@pytest.fixture
def server(live_url) -> str:
    return live_url


@pytest.fixture
def box_admin(app) -> tuple[str, str]:
    """The admin whose id and secret `make run`'s box prints the first time."""
    with app.app_context():
        return bootstrap_admin()


def _script(blocks: list[str], substitutions: dict[str, str]) -> str:
    # pipefail: a failed ccserver in `… | jq` fails its block too.
    lines = ["set -eo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for number, block in enumerate(blocks, 1):
        for old, new in substitutions.items():
            block = block.replace(old, new)
        lines += [f"echo '{MARK} {number}'", block]
    lines.append(f"echo '{MARK} end'")
    return "\n".join(lines) + "\n"


def _outputs(stdout: str) -> dict[str, str]:
    parts = re.split(rf"^{MARK} (\w+)\n", stdout, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """bash -c script; on a timeout, its whole process group goes (the example API too)."""
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_the_readme_walkthrough_runs_as_written(server, box_admin, tmp_path):
    for tool in ("bash", "curl", "jq"):
        if shutil.which(tool) is None:
            pytest.skip(f"the walk-through needs {tool}")
    blocks = walkthrough_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 8, "the walk-through lost a step"
    api_port = free_port()
    client_id, secret = box_admin
    script = _script(
        blocks,
        {
            "<client_id from the box>": client_id,
            "<client_secret from the box>": secret,
            "http://localhost:5000": server,
            "localhost:8000": f"127.0.0.1:{api_port}",
            "PORT=8000": f"PORT={api_port}",
        },
    )
    # The reader's clone: the venv and the examples, but files land in tmp_path.
    os.symlink(Path(sys.prefix), tmp_path / ".venv")
    os.symlink(ROOT / "examples", tmp_path / "examples")
    # Without the venv on PATH: block 1's own `export PATH=…` must put it there.
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {
        "PATH": path,
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        # Never a developer's own profile file.
        "CCSERVER_CONFIG": str(tmp_path / "no-config.yaml"),
    }
    done = _run(script, tmp_path, env)
    out = _outputs(done.stdout)
    assert done.returncode == 0 and "end" in out, (
        f"block {list(out)[-1:]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )

    # What each block's comments say it shows.
    assert out["1"].split()[:2] == ["ID", "NAME"] and "bootstrap-admin" in out["1"]
    assert f"'sub': '{client_id}'" in out["2"] and f"'iss': '{server}'" in out["2"]
    reader = json.loads(out["3"].splitlines()[-3])
    assert reader["token_type"] == "Bearer" and reader["scope"] == "read"
    assert "atm_data_reader" in out["3"].splitlines()[-1]
    rows = out["4"].splitlines()
    assert rows[0].split()[:2] == ["ID", "DESCRIPTION"] and len(rows) == 5
    assert _statuses(out["4"]) == ["200", "200"]
    assert "the client's other secrets work until" in done.stderr
    assert _statuses(out["5"]) == ["401", "200", "exit 1"]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "404 client_not_found" in errors[0], errors
    dpop = out["6"].strip().splitlines()
    assert _statuses(out["6"])[0] == "400" and "token_type: DPoP" in dpop
    assert dpop[-1].startswith('200 {"bound_by":["jkt"],"dpop":true,')
    assert "matched: credential lab-ci" in out["7"]
    federated = json.loads(out["7"].splitlines()[-1])
    assert federated["token_type"] == "Bearer" and federated["scope"] == "read"
    assert "no changes" in out["8"]
    # Block 8 tidies up: no file holding a secret or a key is left behind.
    assert {p.name for p in tmp_path.iterdir()} == {".venv", "examples"}
    # The box's secret is the reader's to keep: nothing the walk-through prints repeats it.
    assert secret not in done.stdout and secret not in done.stderr


def _statuses(text: str) -> list[str]:
    """The lines that are an HTTP status (`status`) or an exit code (`echo "exit $?"`)."""
    return [line for line in text.splitlines() if re.fullmatch(r"\d{3}|exit \d+", line)]
