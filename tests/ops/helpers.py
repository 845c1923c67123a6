"""Running the real commands as an operator would: `flask --app wsgi …`, serve.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from app.settings import ENVIRONMENT_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
TEST_PEPPER = "test-pepper-not-for-production-0123456789"


def operator_env(database_url: str, keys_dir: Path, **extra: str) -> dict[str, str]:
    """The shell's environment without any setting, then these."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(DATABASE_URL=database_url, KEYS_DIR=str(keys_dir), **extra)
    return env


def flask(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`flask --app wsgi ARGS` in the repository."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def serve_py(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """serve.py run to its end (for the paths where it refuses to start)."""
    return subprocess.run(
        [sys.executable, "serve.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A long-running command, its stdout and stderr merged into one text pipe."""
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(process: subprocess.Popen, marker: str, timeout: float = 60) -> list[str]:
    """The lines a process prints until one holds `marker` (or it exits)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never printed:\n" + "\n".join(lines))


def stop(process: subprocess.Popen) -> list[str]:
    """Stop the process (SIGTERM, then SIGKILL) and return the rest of its output."""
    process.terminate()
    try:
        rest, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        rest, _ = process.communicate()
    return (rest or "").splitlines()


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    """The `error: …` lines of a command that stopped."""
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def assert_one_line_failure(done: subprocess.CompletedProcess, *named: str) -> str:
    """A non-zero exit, no traceback, exactly one error line naming each of `named`."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = error_lines(done)
    assert len(lines) == 1, done.stderr
    for word in named:
        assert word in lines[0], lines[0]
    return lines[0]
