"""Time GET /api/v1/clients?limit=100 on page 1 and page 5,000 (or the last) and EXPLAIN it."""

# Local benchmark code: it runs flask and opens loopback URLs only.
# ruff: noqa: S603, S310

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

TARGET_PAGE = 5000
LIMIT = 100


def _get(url: str, token: str) -> tuple[dict, float]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    return body, (time.perf_counter() - started) * 1000


def _median_ms(url: str, token: str, repeat: int = 15) -> float:
    return statistics.median(_get(url, token)[1] for _ in range(repeat))


def measure_listing(work: Path, database_url, server_env, start_server, stop_process, port):
    """Walk the client list with a system admin; print page timings and EXPLAIN output."""
    import subprocess
    import sys

    flask = str(Path(sys.executable).parent / "flask")
    keys_dir = str(work / "keys-ES256")
    created = subprocess.run(
        [flask, "--app", "wsgi", "admin", "create", "--account", "system"]
        + ["--name", f"bench-admin-{uuid.uuid4().hex[:8]}", "--json"],
        cwd=Path(__file__).resolve().parent.parent,
        env=server_env("ES256", keys_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if created.returncode != 0:
        print(f"\nlisting: could not create an admin client: {created.stderr[-500:]}")
        return
    admin = json.loads(created.stdout)
    proc = start_server("granian", "ES256", keys_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        from bench.run import basic_header

        request = urllib.request.Request(
            f"{base}/oauth2/token",
            data=b"grant_type=client_credentials&scope=clients:read",
            headers={
                "Authorization": basic_header(admin["client_id"], admin["client_secret"]),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            token = json.load(response)["access_token"]
        first = f"{base}/api/v1/clients?limit={LIMIT}"
        try:
            body, _ = _get(first, token)
        except urllib.error.HTTPError as exc:
            print(f"\nlisting: GET /api/v1/clients answered {exc.code}; skipped")
            return
        page, url, walked = 1, first, time.perf_counter()
        while body.get("next_cursor") and page < TARGET_PAGE:
            url = f"{first}&cursor={body['next_cursor']}"
            body, _ = _get(url, token)
            page += 1
        walked = time.perf_counter() - walked
        page1 = _median_ms(first, token)
        last = _median_ms(url, token)
        print(
            f"\n## Listing (limit={LIMIT}), median of 15 requests each\n\n"
            f"page 1: {page1:.1f} ms; page {page:,}: {last:.1f} ms "
            f"(ratio {last / page1:.2f}; walking {page:,} pages took {walked:.1f} s)"
        )
    finally:
        stop_process(proc)
    explain(database_url, (page - 1) * LIMIT)


def explain(database_url: str, offset: int) -> None:
    """EXPLAIN ANALYZE the keyset query for page 1 and for the page after `offset` rows."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT created_at, id FROM clients ORDER BY created_at, id OFFSET :o LIMIT 1"),
            {"o": max(0, offset - 1)},
        ).first()
        queries = {
            "page 1": (
                "SELECT * FROM clients ORDER BY created_at, id LIMIT 101",
                {},
            ),
            f"after row {offset:,} (row comparison, as app/clients/service.py)": (
                "SELECT * FROM clients WHERE (created_at, id) > (:c, :i) "
                "ORDER BY created_at, id LIMIT 101",
                {"c": row.created_at, "i": row.id},
            ),
            f"after row {offset:,} (the equivalent OR form, for contrast)": (
                "SELECT * FROM clients WHERE created_at > :c OR (created_at = :c AND id > :i) "
                "ORDER BY created_at, id LIMIT 101",
                {"c": row.created_at, "i": row.id},
            ),
        }
        for label, (sql, params) in queries.items():
            plan = conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql), params)
            print(f"\nEXPLAIN {label}:\n" + "\n".join("    " + r[0] for r in plan))
    engine.dispose()
