"""CPU per request of each token path with no HTTP server: the app's WSGI callable, in process.

`python -m bench.inprocess SCENARIO [REQUESTS]` prepares the bench database as
`make bench` does (bench/run.py), makes its own signing key, then calls the
production app (the token fast path in front of Flask) with REQUESTS requests
of one scenario and prints the process CPU and wall time per request. It
separates what the code costs from what the server around it costs
(docs/performance.md, "Where the time goes").

Scenarios: basic, jwt (private_key_jwt, ES256), dpop (client_secret_basic
and an ES256 proof), introspect. Environment (all optional):

  INPROCESS_THREADS=1   threads sharing the requests (granian runs 4)
  INPROCESS_ROUND_TRIP  blocking | late: each request also runs `SELECT 1` on
                        its own connection, before the request and read after it
                        (`late`) or waiting for it first (`blocking`): what a
                        store round trip costs inside a request against alone
  BENCH_DATABASE_URL, BENCH_REDIS_URL as for `make bench` (REDIS_URL is set
                        only when BENCH_STORES is `redis`)

It re-creates the bench clients and the signing keys in the bench database,
so it must not run while `make bench` does.
"""

from __future__ import annotations

import io
import os
import secrets
import select
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import run as bench


def _environ(path: str, body: bytes, headers: dict[str, str]) -> dict:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(bench.PORT),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": f"127.0.0.1:{bench.PORT}",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def _requests(scenario: str, count: int, key_path: Path, call) -> list[tuple]:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    token_url = bench.ISSUER + "/oauth2/token"
    basic = {"Authorization": bench.basic_header(bench.BASIC_ID, bench.BASIC_SECRET)}
    grant = b"grant_type=client_credentials&scope=read"
    now = int(time.time())
    if scenario == "basic":
        return [("/oauth2/token", grant, basic)] * count
    if scenario == "dpop":
        key = ec.generate_private_key(ec.SECP256R1())
        header = {"typ": "dpop+jwt", "jwk": ECAlgorithm.to_jwk(key.public_key(), as_dict=True)}
        out = []
        for _ in range(count):
            claims = {"jti": secrets.token_urlsafe(16), "htm": "POST", "htu": token_url, "iat": now}
            proof = jwt.encode(claims, key, algorithm="ES256", headers=header)
            out.append(("/oauth2/token", grant, {**basic, "DPoP": proof}))
        return out
    if scenario == "jwt":
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        out = []
        for _ in range(count):
            claims = {
                "iss": bench.JWT_ID,
                "sub": bench.JWT_ID,
                "aud": token_url,
                "iat": now,
                "exp": now + 290,
                "jti": secrets.token_urlsafe(16),
            }
            assertion = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "bench-key-1"})
            body = grant + b"&client_assertion_type=" + bench.ASSERTION_TYPE.encode()
            out.append(("/oauth2/token", body + b"&client_assertion=" + assertion.encode(), {}))
        return out
    if scenario == "introspect":
        import json

        token = json.loads(call("/oauth2/token", grant, basic))["access_token"]
        return [("/oauth2/introspect", f"token={token}".encode(), basic)] * count
    raise SystemExit(f"unknown scenario {scenario!r}")


def main() -> None:
    scenario = sys.argv[1] if len(sys.argv) > 1 else "basic"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    threads = int(os.environ.get("INPROCESS_THREADS", "1"))
    round_trip = os.environ.get("INPROCESS_ROUND_TRIP", "")
    work = Path(tempfile.mkdtemp(prefix="ccserver-inprocess-"))
    try:
        key_path = bench.prepare_database(work)
        keys_dir = str(work / "keys")
        bench.reset_signing_keys("ES256", keys_dir)
        redis_url = bench.REDIS_URL if bench.STORES == ["redis"] else None
        os.environ.update(bench.server_env("ES256", keys_dir, redis_url))
        os.environ["LOG_FORMAT"] = "json"
        measure(scenario, count, threads, round_trip, key_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(scenario: str, count: int, threads: int, round_trip: str, key_path: Path) -> None:
    import psycopg
    import sqlalchemy as sa

    from wsgi import app

    # Access lines to nowhere: this measures the work of making and writing
    # them, not a terminal's. (The handlers hold file descriptor 2.)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    statuses: list[str] = []
    conninfo = sa.engine.make_url(bench.DATABASE_URL).set(drivername="postgresql")
    local = threading.local()

    def extra_round_trip() -> psycopg.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(
                conninfo.render_as_string(hide_password=False), autocommit=True
            )
        return conn

    def call(path: str, body: bytes, headers: dict[str, str]) -> bytes:
        pgconn = None
        if round_trip == "blocking":
            extra_round_trip().execute("SELECT 1").fetchall()
        elif round_trip == "late":
            pgconn = extra_round_trip().pgconn
            pgconn.send_query(b"SELECT 1")
            pgconn.flush()
        answer = b"".join(
            app.wsgi_app(_environ(path, body, headers), lambda s, h, e=None: statuses.append(s))
        )
        if pgconn is not None:
            while True:
                pgconn.consume_input()
                if not pgconn.is_busy():
                    break
                select.select([pgconn.socket], [], [])
            while pgconn.get_result() is not None:
                pass
        return answer

    requests = _requests(scenario, count + 200, key_path, call)
    for request in requests[:200]:  # warm the caches and the connections
        call(*request)
    requests = requests[200:]
    statuses.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    if threads == 1:
        for request in requests:
            call(*request)
    else:

        def share(part: list[tuple]) -> None:
            for request in part:
                call(*request)

        workers = [
            threading.Thread(target=share, args=(requests[n::threads],)) for n in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    failed = [s for s in statuses if not s.startswith("200")]
    sys.stdout.write(
        f"{scenario}{' + ' + round_trip + ' SELECT 1' if round_trip else ''}, "
        f"{threads} thread(s): {len(requests)} requests, "
        f"{1e6 * cpu / len(requests):.0f} µs CPU and {1e6 * wall / len(requests):.0f} µs wall "
        f"per request, {len(failed)} not 200{' (' + failed[0] + ')' if failed else ''}\n"
    )


if __name__ == "__main__":
    main()
