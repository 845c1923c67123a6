"""`make bench`: load the production server's token endpoint on loopback and print figures.

Starts the server as `make serve-prod` does (granian, or gunicorn for a
comparison) on PostgreSQL with a seeded database, loads it with wrk (Debian
package, installed when missing and we are root), then runs the same load
against panva's oidc-provider from the peer harness in BENCH_PEERS_DIR and prints the ratio from
the same run. Every load is bounded in time; only loopback is targeted.

Environment (all optional):
  BENCH_DATABASE_URL  PostgreSQL URL; its database name must contain "bench"
                      (default postgresql+psycopg://postgres@127.0.0.1:5432/ccserver_bench,
                      created when missing; the schema is rebuilt when needed)
  BENCH_DURATION=10   seconds per measured scenario (1..120)
  BENCH_CONNECTIONS=32  wrk connections (the performance issue's p99 target is at 32)
  BENCH_CLIENTS=1000  seeded clients in the database (e.g. 1000000)
  BENCH_ALGS="ES256 RS256"
  BENCH_SCENARIOS="basic jwt dpop introspect many"
                      (the shared harness's scenarios basic, pkjwt (here `jwt`), dpop
                      and introspect, which the peer runs too; `many`: ours only.
                      dpop: client_secret_basic plus a fresh ES256 DPoP proof per
                      request; introspect: the peer introspects an opaque token
                      held in memory, we a JWT checked against the deny-list)
                      federated: a client with no secret, authenticated by an ES256
                      token of a local issuer (a loopback HTTP server in this process
                      serving its JWKS, so the server runs with FEDERATION_ALLOW_INSECURE=1)
                      matched by a federated credential; ours only, listed with
                      BENCH_SCENARIOS="... federated"
  BENCH_ROUNDS=3      rounds per scenario: ours and the peer alternate, both up,
                      and the table gives each figure's median
  BENCH_MANY_CLIENTS=20000  clients "many" cycles through (at most BENCH_CLIENTS)
  BENCH_SERVERS=granian  any of: granian gunicorn-sync gunicorn-gthread, and for the
                      experiment of 2026-12-03 (docs/performance.md) bjoern (pip install
                      bjoern-binary) and rsgi (bench/rsgi_exp.py); several are all up at
                      once and take turns in each round, as the stores do
  BENCH_WORKERS=1     server worker processes
  BENCH_THREADS=4     request threads per worker (granian blocking threads, gthread threads)
  BENCH_SERVER_CPUS=0   taskset list for the server ("" = unpinned)
  BENCH_LOADGEN_CPUS=1  taskset list for wrk ("" = unpinned)
  BENCH_PEER=1        also run the oidc-provider peer (BENCH_PEERS_DIR) (0 to skip)
  BENCH_PEERS_DIR     where the peer harness lives
  BENCH_STORES="postgres redis"  where our shared state lives, one server each, both up
                      and alternated with the peer: `postgres` (PostgreSQL only) and
                      `redis` (PostgreSQL + REDIS_URL=BENCH_REDIS_URL); a Redis that
                      does not answer is left out with a note
  BENCH_REDIS_URL=redis://127.0.0.1:6379/15  the `redis` server's REDIS_URL. The CPU
                      of the bench database's PostgreSQL processes (its backends and
                      the shared writer processes) and, for the `redis` server, of
                      redis-server is counted as the server side's: "per CPU-s"
                      divides by both
  BENCH_PROFILE=0     1: instead of the table, py-spy the worker during a basic run (a dpop
                      run when dpop is the first of BENCH_SCENARIOS); print top frames
  BENCH_LISTING=1     time GET /api/v1/clients page 1 and page 5,000 (or the last)
  BENCH_PORT=8790
  BENCH_SOAK_TOKENS=0   e.g. 1000000: instead of the table, issue that many ES256
                      basic tokens in 15 s wrk rounds and print each worker's RSS
                      after every round, and its growth from 100,000 tokens on
  BENCH_SOAK_MAX_SECONDS=1500  stop the soak after this long whatever the count
"""

# A local benchmark driver: it runs our own tools (wrk, flask, granian, the peer
# scripts) and opens loopback URLs only, which these rules cannot tell apart.
# ruff: noqa: S603, S607, S310

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WRK_DIR = Path(__file__).resolve().parent / "wrk"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

PEPPER = "bench-pepper-not-for-production-0123456789"
BENCH_ACCOUNT = "bench"
BASIC_ID = "bench-client"
BASIC_SECRET = "bench-secret-0123456789abcdef"  # the peers' client, same credentials
JWT_ID = "bench-jwt-client"
FED_ID = "bench-fed-client"
FED_SUBJECT = "system:serviceaccount:bench:token-client"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None else value


DURATION = max(1, min(120, int(env("BENCH_DURATION", "10"))))
CONNECTIONS = int(env("BENCH_CONNECTIONS", "32"))
CLIENTS = int(env("BENCH_CLIENTS", "1000"))
ALGS = env("BENCH_ALGS", "ES256 RS256").split()
SCENARIOS = env("BENCH_SCENARIOS", "basic jwt dpop introspect many").split()
ROUNDS = max(1, int(env("BENCH_ROUNDS", "3")))
# The scenarios the peer runs too (the shared harness's four).
PEER_SCENARIOS = ("basic", "jwt", "dpop", "introspect")
SERVERS = env("BENCH_SERVERS", "granian").split()
WORKERS = int(env("BENCH_WORKERS", "1"))
THREADS = int(env("BENCH_THREADS", "4"))
SERVER_CPUS = env("BENCH_SERVER_CPUS", "0")
LOADGEN_CPUS = env("BENCH_LOADGEN_CPUS", "1")
PORT = int(env("BENCH_PORT", "8790"))
STORES = env("BENCH_STORES", "postgres redis").split()
REDIS_URL = env("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
#: Both of our servers (one per store) name this issuer, as instances behind
#: one load balancer do: assertions and DPoP proofs are made for its URLs.
ISSUER = f"http://127.0.0.1:{PORT}"
PEERS_DIR = Path(env("BENCH_PEERS_DIR", str(ROOT.parent / "shared" / "peers")))
DATABASE_URL = env(
    "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/ccserver_bench"
)
WARMUP = 2
# "many" cycles through this many seeded clients (fewer if fewer are seeded).
# At ~3,000 tokens/s each of 20,000 comes back every ~7 s, past the 2 s client
# cache: nearly every request reads its client from the database.
MANY_CLIENTS = int(env("BENCH_MANY_CLIENTS", "20000"))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after "pid (comm) ": [0] state, [1] ppid, [11] utime, [12] stime, [13] cutime ...
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """The root pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """CPU time of the tree: live processes plus children the root already reaped."""
    ticks = 0
    for pid in process_tree(root):
        fields = _stat(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
            if pid == root:
                ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def rss_mib(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_seconds() -> float:
    with open("/proc/stat") as handle:
        parts = handle.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, parts[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _own_cpu(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0


class StoreMeter:
    """CPU of the shared store during a run: what the server side costs beyond its own processes.

    PostgreSQL: the backends connected to the bench database and the
    cluster's own processes (WAL writer, checkpointer, background writer,
    autovacuum), never another database's backends. Redis: redis-server.
    A backend that exits during the run takes its CPU with it; the server
    keeps its pools' connections, so none does.
    """

    def __init__(self, database: str, redis: bool) -> None:
        self.database = database
        self.redis = redis
        self.before: dict[int, float] = {}

    def pids(self) -> list[int]:
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            cmd = _cmdline(int(entry))
            if cmd.startswith("postgres: "):
                # Client backends name their database and peer: "db 127.0.0.1(port)".
                backend = "(" in cmd or "[local]" in cmd
                if not backend or f" {self.database} " in cmd:
                    out.append(int(entry))
            elif self.redis and cmd.startswith("redis-server"):
                out.append(int(entry))
        return out

    def start(self) -> None:
        self.before = {pid: _own_cpu(pid) for pid in self.pids()}

    def stop(self) -> float:
        spent = {pid: _own_cpu(pid) - self.before.get(pid, 0.0) for pid in self.pids()}
        if os.environ.get("BENCH_DEBUG"):
            for pid, seconds in sorted(spent.items(), key=lambda item: -item[1])[:8]:
                log(f"store CPU {seconds:.2f} s: {_cmdline(pid)[:90]}")
        return sum(spent.values())


class RssSampler(threading.Thread):
    """Peak RSS per process of a tree, sampled every 0.5 s."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for pid in process_tree(self.root):
                self.peak[pid] = max(self.peak.get(pid, 0.0), rss_mib(pid))
            self._halt.wait(0.5)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def worker_peak(self) -> float:
        """Largest peak among the workers (the root too when it serves alone)."""
        workers = [v for p, v in self.peak.items() if p != self.root] or list(self.peak.values())
        return max(workers, default=0.0)


def pinned(cpus: str, argv: list[str]) -> list[str]:
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *argv]
    return argv


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the server we started, then SIGKILL its process group after 15 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# --- database and data -----------------------------------------------------------


def server_env(alg: str, keys_dir: str, redis_url: str | None = None) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        DATABASE_URL=DATABASE_URL,
        KEYS_DIR=keys_dir,
        SIGNING_ALG=alg,
        ISSUER=ISSUER,
        SECRET_PEPPER=PEPPER,
        LOG_LEVEL="warning",
        # The federated scenario's issuer is a loopback HTTP server (bench/run.py).
        FEDERATION_ALLOW_INSECURE="1",
    )
    out.pop("REDIS_URL", None)
    if redis_url:
        out["REDIS_URL"] = redis_url
    return out


def flask_cmd(args: list[str], alg: str, keys_dir: str) -> str:
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env=server_env(alg, keys_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"flask {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


class LocalIssuer:
    """A workload-identity issuer on loopback: its JWKS at /jwks, its tokens signed with ES256.

    Stands in for a Kubernetes cluster's service-account issuer: the server
    fetches the JWKS once (it says max-age one day) and keeps it, so the
    scenario measures a federated token with the issuer's keys cached.
    """

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography.hazmat.primitives.asymmetric import ec

        from app.signing.keys import public_jwk

        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = "bench-issuer-1"
        body = json.dumps({"keys": [public_jwk(self.key.public_key(), "ES256", self.kid)]})
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path != "/jwks":
                    self.send_error(404)
                    return
                issuer.fetches += 1
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=86400")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def credential(self, now, audience: str = "") -> dict:
        """The federated credential (docs/api.md §2.8) a platform team would write for it."""
        return {
            "id": str(uuid.uuid4()),
            "client_id": FED_ID,
            "name": "bench-cluster",
            "issuer": self.url,
            "subject": FED_SUBJECT,
            "subject_pattern": None,
            "claims": {},
            "audience": audience or ISSUER,
            "jwks_uri": self.url + "/jwks",
            "jwks": None,
            "max_token_age": 3600,
            "single_use": False,
            "created_at": now,
        }

    def tokens(self, count: int, path: Path, audience: str = "") -> None:
        """Service-account-shaped tokens, each its own jti, good for the whole run."""
        import secrets

        import jwt

        now = int(time.time())
        with path.open("w") as out:
            for _ in range(count):
                claims = {
                    "iss": self.url,
                    "sub": FED_SUBJECT,
                    "aud": [audience or ISSUER],
                    "iat": now,
                    "nbf": now,
                    "exp": now + 3000,
                    "jti": secrets.token_urlsafe(16),
                    "kubernetes.io": {"namespace": "bench"},
                }
                token = jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})
                out.write(token + "\n")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


LOCAL_ISSUER: LocalIssuer | None = None


def prepare_database(work: Path) -> Path:
    """Create the bench database if needed, migrate it, seed clients; return the JWT key path."""
    import psycopg
    import sqlalchemy as sa

    url = sa.engine.make_url(DATABASE_URL)
    if not url.drivername.startswith("postgresql") or "bench" not in (url.database or ""):
        raise SystemExit("BENCH_DATABASE_URL must be PostgreSQL with 'bench' in its database name")
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [url.database])
        if exists.fetchone() is None:
            conn.execute(f'CREATE DATABASE "{url.database}"')
            log(f"created database {url.database}")
    os.environ.setdefault("SECRET_PEPPER", PEPPER)
    os.environ["DATABASE_URL"] = DATABASE_URL
    flask_cmd(["db", "upgrade"], "ES256", str(work / "keys-migrate"))

    from bench.seed import delete_seeded, seed_clients, seeded_count, seeded_with

    engine = sa.create_engine(DATABASE_URL)
    have = seeded_count(engine)
    if have != CLIENTS or not seeded_with(engine, PEPPER.encode()):
        log(f"seeding {CLIENTS:,} clients (had {have:,})")
        delete_seeded(engine)
        started = time.perf_counter()
        seed_clients(engine, CLIENTS, PEPPER.encode())
        with engine.connect() as conn:
            conn.execute(sa.text("COMMIT"))
            conn.execute(sa.text("ANALYZE clients"))
            conn.execute(sa.text("ANALYZE client_secrets"))
        log(f"seeded {CLIENTS:,} clients in {time.perf_counter() - started:.1f} s")
    key_path = _bench_clients(engine, work)
    engine.dispose()
    return key_path


def _bench_clients(engine, work: Path) -> Path:
    """(Re)create the named bench clients; return the JWT client's private key PEM."""
    import sqlalchemy as sa
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from app.clients.hashing import hash_secret
    from app.models import Client, ClientKey, ClientSecret, FederatedCredential
    from app.signing.keys import public_jwk
    from app.timeutil import utcnow

    private = ec.generate_private_key(ec.SECP256R1())
    kid = "bench-key-1"
    jwk = public_jwk(private.public_key(), "ES256", kid)
    key_path = work / "jwt-client.pem"
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    now = utcnow()
    base = {
        "account_id": BENCH_ACCOUNT,
        "friendly_name": "Bench",
        "description": None,
        "tags": [],
        "client_type": "standard",
        "owner": None,
        "scopes": ["read", "write"],
        "audiences": [],
        "access_token_ttl": 3600,
        "locked": False,
        "disabled": False,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    with engine.begin() as conn:
        for cid in (BASIC_ID, JWT_ID, FED_ID):
            conn.execute(sa.delete(ClientSecret).where(ClientSecret.client_id == cid))
            conn.execute(sa.delete(ClientKey).where(ClientKey.client_id == cid))
            conn.execute(sa.delete(FederatedCredential).where(FederatedCredential.client_id == cid))
            conn.execute(sa.delete(Client).where(Client.id == cid))
        conn.execute(sa.insert(Client), [{**base, "id": BASIC_ID, "name": "bench-basic"}])
        conn.execute(sa.insert(Client), [{**base, "id": JWT_ID, "name": "bench-jwt"}])
        # No secret and no key: it authenticates with its platform's token only.
        conn.execute(sa.insert(Client), [{**base, "id": FED_ID, "name": "bench-federated"}])
        if LOCAL_ISSUER is not None:
            conn.execute(sa.insert(FederatedCredential), [LOCAL_ISSUER.credential(now)])
        conn.execute(
            sa.insert(ClientSecret),
            [
                {
                    "id": str(uuid.uuid4()),
                    "client_id": BASIC_ID,
                    "secret_hash": hash_secret(BASIC_SECRET, PEPPER.encode()),
                    "hint": BASIC_SECRET[-4:],
                    "created_at": now,
                }
            ],
        )
        conn.execute(
            sa.insert(ClientKey),
            [
                {
                    "client_id": JWT_ID,
                    "kid": kid,
                    "alg": "ES256",
                    "public_jwk": jwk,
                    "created_at": now,
                }
            ],
        )
    return key_path


def reset_signing_keys(alg: str, keys_dir: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(DATABASE_URL)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM signing_keys"))
    engine.dispose()
    flask_cmd(["keys", "init"], alg, keys_dir)


def make_assertions(
    key_path: Path, count: int, audience: str, path: Path, kid: str | None = "bench-key-1"
) -> None:
    """Pre-sign `count` private_key_jwt assertions, each with its own jti (RFC 7523 §3)."""
    import secrets

    import jwt
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    now = int(time.time())
    header = {"typ": "JWT"} | ({"kid": kid} if kid else {})
    with path.open("w") as out:
        for _ in range(count):
            claims = {
                "iss": JWT_ID,
                "sub": JWT_ID,
                "aud": audience,
                "iat": now,
                "exp": now + 290,  # docs/api.md §1 allows at most 5 minutes ahead
                "jti": secrets.token_urlsafe(16),
            }
            out.write(jwt.encode(claims, key, algorithm="ES256", headers=header))
            out.write("\n")


# A proof is accepted while its iat is within 60 s of the server's clock
# (docs/api.md §1.1): proofs made before a run name a moment this far ahead,
# so they stay good from 10 s before it to 110 s after.
DPOP_IAT_AHEAD = 50


def make_dpop_proofs(count: int, htu: str, path: Path) -> None:
    """Pre-sign `count` DPoP proofs (RFC 9449 §4.2) by one ES256 key, each with its own jti."""
    import secrets

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    header = {"typ": "dpop+jwt", "jwk": jwk}
    iat = int(time.time()) + min(DPOP_IAT_AHEAD, 110 - DURATION - WARMUP)
    with path.open("w") as out:
        for _ in range(count):
            claims = {"jti": secrets.token_urlsafe(16), "htm": "POST", "htu": htu, "iat": iat}
            out.write(jwt.encode(claims, key, algorithm="ES256", headers=header))
            out.write("\n")


def measure_dpop(
    pid: int,
    token_url: str,
    basic_file: Path,
    work: Path,
    store: StoreMeter | None = None,
    htu: str | None = None,
) -> dict:
    """The dpop scenario against one server: proofs for `htu`, made just before the run."""
    warm, main = work / "dpop-warm.txt", work / "dpop-main.txt"
    make_dpop_proofs(WARMUP * 2000, htu or token_url, warm)
    make_dpop_proofs(max(20_000, DURATION * 5000), htu or token_url, main)
    return measure(
        pid,
        token_url,
        "token_dpop.lua",
        [str(basic_file), str(main), "1"],
        [str(basic_file), str(warm), "1"],
        store,
    )


# --- servers ---------------------------------------------------------------------


def start_server(
    kind: str, alg: str, keys_dir: str, port: int = PORT, redis_url: str | None = None
) -> subprocess.Popen:
    e = server_env(alg, keys_dir, redis_url)
    e.update(HOST="127.0.0.1", PORT=str(port), WORKERS=str(WORKERS), THREADS=str(THREADS))
    if kind == "granian":
        # Exactly what `make serve-prod` runs.
        argv = [sys.executable, "serve.py"]
    elif kind == "rsgi":
        argv = [
            str(BIN / "granian"),
            "--interface",
            "rsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-ws",
            "bench.rsgi_exp:app",
        ]
    elif kind == "bjoern":
        argv = [
            sys.executable,
            "-c",
            f"import bjoern, wsgi; bjoern.run(wsgi.app, '127.0.0.1', {port})",
        ]
    elif kind.startswith("gunicorn-"):
        e["WORKER_CLASS"] = kind.removeprefix("gunicorn-")
        argv = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
    else:
        raise SystemExit(f"unknown server {kind!r}")
    proc = subprocess.Popen(
        pinned(SERVER_CPUS, argv),
        cwd=ROOT,
        env=e,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(Path(keys_dir).parent / f"server-{kind}-{alg}-{port}.log", "w"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 120  # a busy machine starts it slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} exited with {proc.returncode}; see its log in the work dir")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    stop_process(proc)
    raise SystemExit(f"{kind} did not become ready within 120 s")


# --- load ------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    alg: str
    scenario: str
    figures: dict = field(default_factory=dict)


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing wrk (apt-get)")
        for cmd in (["apt-get", "install", "-y", "-qq", "wrk"], ["apt-get", "update", "-qq"]):
            subprocess.run(cmd, capture_output=True, timeout=300, check=False)
            if shutil.which("wrk"):
                return
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            capture_output=True,
            timeout=300,
            check=False,
        )
    if not shutil.which("wrk"):
        raise SystemExit("wrk is required: apt-get install wrk")


def run_wrk(url: str, script: str, args: list[str], seconds: int, conns: int) -> dict:
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise SystemExit(f"loopback targets only: {url}")
    argv = pinned(
        LOADGEN_CPUS,
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(WRK_DIR / script),
            url,
            "--",
            *args,
        ],
    )
    before = os.times()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    after = os.times()
    figures = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("wrk_"):
            figures[key[4:]] = float(value)
    if "good" not in figures or os.environ.get("BENCH_DEBUG"):
        log(out.stdout[-1500:] + out.stderr[-1500:])
    if "good" not in figures:
        raise SystemExit(f"could not parse wrk output:\n{out.stdout}\n{out.stderr}")
    figures["loadgen_cpu_s"] = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return figures


def measure(
    server_pid: int,
    url: str,
    script: str,
    args: list[str],
    warm_args=None,
    store: StoreMeter | None = None,
) -> dict:
    """Warm up briefly (unmeasured), then one measured wrk run with CPU and RSS sampling.

    `per_cpu_s` divides the good responses by the server's CPU plus the
    store's (`store`: PostgreSQL and Redis, for our server; the peer keeps
    its state in its own process).
    """
    run_wrk(url, script, warm_args or args, WARMUP, 2)
    time.sleep(0.5)
    sampler = RssSampler(server_pid)
    sampler.start()
    if store:
        store.start()
    cpu0, busy0, t0 = cpu_seconds(server_pid), machine_busy_seconds(), time.monotonic()
    figures = run_wrk(url, script, args, DURATION, CONNECTIONS)
    cpu1, busy1, t1 = cpu_seconds(server_pid), machine_busy_seconds(), time.monotonic()
    store_cpu = store.stop() if store else 0.0
    sampler.stop()
    wall = t1 - t0
    server_cpu = cpu1 - cpu0
    side_cpu = server_cpu + store_cpu
    figures.update(
        server_cpu_s=server_cpu,
        server_cores=server_cpu / wall,
        store_cores=store_cpu / wall,
        per_server_cpu_s=figures["good"] / server_cpu if server_cpu else 0.0,
        per_cpu_s=figures["good"] / side_cpu if side_cpu else 0.0,
        foreign_cores=max(0.0, (busy1 - busy0 - side_cpu - figures["loadgen_cpu_s"]) / wall),
        worker_rss_peak_mib=sampler.worker_peak(),
        rss_by_pid={p: round(v, 1) for p, v in sampler.peak.items()},
    )
    return figures


def basic_header(client_id: str, secret: str) -> str:
    quote = urllib.parse.quote
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def get_token(token_url: str, body: str = "grant_type=client_credentials&scope=read") -> str:
    request = urllib.request.Request(
        token_url,
        data=body.encode(),
        headers={
            "Authorization": basic_header(BASIC_ID, BASIC_SECRET),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


@dataclass
class Target:
    """A server up for the whole of one algorithm's rounds: ours or the peer."""

    name: str
    pid: int
    base: str
    token_path: str
    introspect_path: str
    store: StoreMeter | None
    # private_key_jwt: the client's private key and the kid its assertions name.
    jwt_key: Path
    jwt_kid: str | None
    # What `introspect` asks about: the peer can only introspect an opaque token.
    introspect_token_body: str
    # The issuer's token endpoint, which assertions and proofs name (ours: ISSUER's).
    audience_url: str = ""

    @property
    def token_url(self) -> str:
        return self.base + self.token_path

    @property
    def issuer_token_url(self) -> str:
        return self.audience_url or self.token_url


def run_scenario(target: Target, scenario: str, work: Path) -> dict:
    basic_file = work / "basic.txt"
    basic_file.write_text(basic_header(BASIC_ID, BASIC_SECRET) + "\n")
    pid, url, store = target.pid, target.token_url, target.store
    if scenario == "basic":
        return measure(pid, url, "token_basic.lua", [str(basic_file)], store=store)
    if scenario == "many":
        from bench.seed import seed_client_id, seed_secret

        many = work / "many.txt"
        count = min(CLIENTS, MANY_CLIENTS)
        step = max(1, CLIENTS // count)
        many.write_text(
            "".join(
                basic_header(seed_client_id(i), seed_secret(i)) + "\n"
                for i in range(0, count * step, step)
            )
        )
        return measure(pid, url, "token_basic.lua", [str(many)], store=store)
    if scenario == "jwt":
        warm, main = work / "assert-warm.txt", work / "assert-main.txt"
        aud = target.issuer_token_url
        make_assertions(target.jwt_key, WARMUP * 2000, aud, warm, target.jwt_kid)
        make_assertions(target.jwt_key, max(20_000, DURATION * 5000), aud, main, target.jwt_kid)
        return measure(pid, url, "token_jwt.lua", [str(main), "1"], [str(warm), "1"], store)
    if scenario == "dpop":
        return measure_dpop(pid, url, basic_file, work, store, target.issuer_token_url)
    if scenario == "federated":
        assert LOCAL_ISSUER is not None
        warm, main = work / "fed-warm.txt", work / "fed-main.txt"
        LOCAL_ISSUER.tokens(WARMUP * 2000, warm)
        LOCAL_ISSUER.tokens(max(20_000, DURATION * 5000), main)
        named = f"client_id={FED_ID}"
        return measure(
            pid, url, "token_jwt.lua", [str(main), "1", named], [str(warm), "1", named], store
        )
    if scenario == "introspect":
        token = get_token(target.token_url, target.introspect_token_body)
        return measure(
            pid,
            target.base + target.introspect_path,
            "introspect.lua",
            [str(basic_file), token],
            store=store,
        )
    raise SystemExit(f"unknown scenario {scenario!r}")


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.flushdb()  # the bench's own database number: stale replay keys would only grow
        client.close()
    except redis.RedisError as exc:
        log(f"Redis at {url} does not answer ({type(exc).__name__}): no `redis` server this run")
        return False
    return True


def start_ours(
    kind: str, alg: str, work: Path, key_path: Path, store: str, port: int
) -> tuple[Target, subprocess.Popen]:
    """Our server on `port`, its shared state in PostgreSQL (`postgres`) or Redis (`redis`).

    Every server of one algorithm shares the signing keys `bench_alg` made.
    """
    keys_dir = str(work / f"keys-{alg}")
    redis_url = REDIS_URL if store == "redis" else None
    proc = start_server(kind, alg, keys_dir, port, redis_url)
    name = f"{kind} w{WORKERS}" + ("" if kind == "gunicorn-sync" else f"t{THREADS}")
    name += " +Redis" if redis_url else " PG"
    database = DATABASE_URL.rsplit("/", 1)[-1].split("?")[0]
    target = Target(
        name=name,
        pid=proc.pid,
        base=f"http://127.0.0.1:{port}",
        token_path="/oauth2/token",
        introspect_path="/oauth2/introspect",
        store=StoreMeter(database, bool(redis_url)),
        jwt_key=key_path,
        jwt_kid="bench-key-1",
        introspect_token_body="grant_type=client_credentials&scope=read",
        audience_url=ISSUER + "/oauth2/token",
    )
    return target, proc


def start_peer(alg: str) -> tuple[Target, Path] | None:
    start = PEERS_DIR / "oidc-provider" / "start.sh"
    if not start.exists():
        log(f"peer harness not found at {PEERS_DIR}; skipping the peer")
        return None
    peer_env = dict(os.environ, ALG=alg, CPUS=SERVER_CPUS)
    started = subprocess.run(
        [str(start)], env=peer_env, capture_output=True, text=True, timeout=600, check=False
    )
    if started.returncode != 0:
        log(f"peer did not start:\n{started.stderr[-1500:]}")
        return None
    pidfile = Path(started.stdout.strip().splitlines()[-1])
    run_dir = pidfile.parent  # PEERS_RUN: the peer's private_key_jwt key pair lives there
    jwk = json.loads((run_dir / "bench-jwt-client.jwk").read_text())
    target = Target(
        name="oidc-provider",
        pid=int(pidfile.read_text().strip()),
        base="http://127.0.0.1:9400",
        token_path="/token",
        introspect_path="/token/introspection",
        store=None,
        jwt_key=run_dir / "bench-jwt-client.pem",
        jwt_kid=jwk.get("kid"),
        # oidc-provider introspects opaque tokens only (peers/README.md).
        introspect_token_body="grant_type=client_credentials&scope=read&resource=urn:bench:opaque",
    )
    return target, pidfile


def stop_peer(pidfile: Path) -> None:
    subprocess.run(
        [str(PEERS_DIR / "stop.sh"), str(pidfile)], capture_output=True, timeout=60, check=False
    )


def median_figures(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds; error counts summed."""
    out: dict = {"rounds": len(rounds)}
    for key, value in rounds[0].items():
        if not isinstance(value, int | float):
            continue
        values = [r[key] for r in rounds if isinstance(r.get(key), int | float)]
        summed = key in ("non2xx", "socket_errors")
        out[key] = sum(values) if summed else statistics.median(values)
    return out


def bench_alg(alg: str, work: Path, key_path: Path) -> list[Result]:
    """Every scenario for one algorithm: ours and the peer alternate, ROUNDS times each."""
    results: list[Result] = []
    peer = start_peer(alg) if env("BENCH_PEER", "1") == "1" else None
    stores = [s for s in STORES if s != "redis" or redis_answers(REDIS_URL)]
    try:
        reset_signing_keys(alg, str(work / f"keys-{alg}"))
        # Every server configuration and store up at once, taking turns with the peer.
        setups = [(kind, store) for kind in SERVERS for store in stores]
        started = [
            start_ours(kind, alg, work, key_path, store, PORT + n)
            for n, (kind, store) in enumerate(setups)
        ]
        procs = [proc for _, proc in started]
        try:
            for scenario in SCENARIOS:
                targets = [target for target, _ in started]
                if peer and scenario in PEER_SCENARIOS:
                    targets.append(peer[0])
                rounds: dict[str, list[dict]] = {t.name: [] for t in targets}
                for index in range(ROUNDS):
                    for target in targets:
                        figures = run_scenario(target, scenario, work)
                        rounds[target.name].append(figures)
                        log(
                            f"round {index + 1}/{ROUNDS} "
                            + line_for(Result(target.name, alg, scenario, figures))
                        )
                for target in targets:
                    results.append(
                        Result(target.name, alg, scenario, median_figures(rounds[target.name]))
                    )
        finally:
            for proc in procs:
                stop_process(proc)
    finally:
        if peer:
            stop_peer(peer[1])
    return results


SOAK_ROUND = 15


def worker_rss(root: int) -> dict[int, float]:
    """Current RSS (MiB) of each worker; the root itself when it serves alone."""
    tree = process_tree(root)
    workers = [pid for pid in tree if pid != root] or [root]
    return {pid: rss_mib(pid) for pid in workers}


def soak(kind: str, alg: str, work: Path, tokens: int) -> None:
    """Issue `tokens` tokens in bounded rounds; print worker RSS as the count grows."""
    keys_dir = str(work / f"keys-{alg}")
    reset_signing_keys(alg, keys_dir)
    proc = start_server(kind, alg, keys_dir)
    basic_file = work / "basic.txt"
    basic_file.write_text(basic_header(BASIC_ID, BASIC_SECRET) + "\n")
    deadline = time.monotonic() + int(env("BENCH_SOAK_MAX_SECONDS", "1500"))
    issued, errors, rows = 0, 0, []
    cpu0 = cpu_seconds(proc.pid)
    try:
        while issued < tokens and time.monotonic() < deadline:
            figures = run_wrk(
                f"http://127.0.0.1:{PORT}/oauth2/token",
                "token_basic.lua",
                [str(basic_file)],
                SOAK_ROUND,
                CONNECTIONS,
            )
            issued += int(figures["good"])
            errors += int(figures["non2xx"]) + int(figures["socket_errors"])
            rss = worker_rss(proc.pid)
            rows.append((issued, max(rss.values()), figures["p99_ms"]))
            log(f"soak: {issued:,} tokens, worker RSS {max(rss.values()):.1f} MiB")
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        stop_process(proc)
    print(f"\n## Soak: {kind} w{WORKERS}t{THREADS}, {alg} basic, {CONNECTIONS} connections\n")
    print("| tokens issued | largest worker RSS MiB | round p99 ms |\n| ---: | ---: | ---: |")
    for count, rss, p99 in rows:
        print(f"| {count:,} | {rss:.1f} | {p99:.1f} |")
    base = next((r for r in rows if r[0] >= 100_000), None)
    if base is not None and rows:
        print(
            f"\nRSS at {base[0]:,} tokens {base[1]:.1f} MiB, at {rows[-1][0]:,} tokens "
            f"{rows[-1][1]:.1f} MiB: growth {rows[-1][1] - base[1]:+.1f} MiB; "
            f"{errors} errors; {issued / cpu:,.0f} tokens per server CPU-second overall"
        )


# --- profile and listing -----------------------------------------------------------------


def profile(kind: str, alg: str, work: Path) -> None:
    """py-spy the whole server tree during a basic run (dpop if it is the first scenario)."""
    pyspy = BIN / "py-spy"
    if not pyspy.exists():
        log("py-spy is not installed in the venv; pip install py-spy to profile")
        return
    keys_dir = str(work / f"keys-{alg}")
    reset_signing_keys(alg, keys_dir)
    proc = start_server(kind, alg, keys_dir)
    raw = work / "profile.txt"
    basic_file = work / "basic.txt"
    basic_file.write_text(basic_header(BASIC_ID, BASIC_SECRET) + "\n")
    script, args = "token_basic.lua", [str(basic_file)]
    if SCENARIOS[0] == "dpop":
        proofs = work / "dpop-profile.txt"
        make_dpop_proofs(max(20_000, DURATION * 5000), ISSUER + "/oauth2/token", proofs)
        script, args = "token_dpop.lua", [str(basic_file), str(proofs), "1"]
    try:
        spy = subprocess.Popen(
            [
                str(pyspy),
                "record",
                "--pid",
                str(proc.pid),
                "--subprocesses",
                "--duration",
                str(DURATION),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
                # Only the threads that hold the GIL, unless BENCH_PROFILE_GIL=0
                # (then every running thread: also C code that released it).
                *(["--gil"] if env("BENCH_PROFILE_GIL", "1") == "1" else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        run_wrk(f"http://127.0.0.1:{PORT}/oauth2/token", script, args, DURATION, CONNECTIONS)
        spy.wait(DURATION + 30)
    finally:
        stop_process(proc)
    print_profile(raw)


def print_profile(raw: Path, top: int = int(env("BENCH_PROFILE_TOP", "25"))) -> None:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
            for f in stack.split(";")
            if "(" in f
        ]
        # Idle workers wait in the server's own code; count only request work
        # (Flask's wsgi_app, or the token fast path in front of it).
        if not any("wsgi_app" in f or "TokenFastPath" in f for f in frames):
            continue
        total += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"\n## Profile: {total} samples inside the app (TokenFastPath or Flask.wsgi_app)\n")
    print("| own % | frame |\n| ---: | --- |")
    for frame, n in own.most_common(top):
        print(f"| {100 * n / total:.1f} | `{frame}` |")
    print("\n| inclusive % | frame |\n| ---: | --- |")
    for frame, n in inclusive.most_common(top + 15):
        print(f"| {100 * n / total:.1f} | `{frame}` |")


def line_for(r: Result) -> str:
    f = r.figures
    return (
        f"| {r.target} | {r.alg} | {r.scenario} | {f['good_per_s']:,.0f} | "
        f"{f['per_cpu_s']:,.0f} | {f['per_server_cpu_s']:,.0f} | {f['server_cores']:.2f} | "
        f"{f['store_cores']:.2f} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} | {int(f['non2xx'])} | "
        f"{int(f['socket_errors'])} | {f['worker_rss_peak_mib']:.0f} | {f['foreign_cores']:.2f} |"
    )


HEADER = (
    "| server | alg | scenario | ok/s | ok per CPU-s (server + store) | ok per server CPU-s "
    "| server cores | store cores | p50 ms | p99 ms | non-2xx | sock err "
    "| peak RSS/worker MiB | foreign cores |\n"
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: | ---: |"
)

NAMES = {
    "basic": "client_secret_basic",
    "jwt": "private_key_jwt",
    "dpop": "DPoP-bound (client_secret_basic + proof)",
    "introspect": "introspection (ours: a JWT; the peer: an opaque token in memory)",
    "federated": "federated (a local issuer's token, its keys cached)",
}


def print_ratios(results: list[Result]) -> None:
    peers = {(r.alg, r.scenario): r for r in results if r.target == "oidc-provider"}
    for r in results:
        if r.target == "oidc-provider" or r.scenario not in NAMES:
            continue
        peer = peers.get((r.alg, r.scenario))
        if peer and peer.figures["per_cpu_s"]:
            ratio = r.figures["per_cpu_s"] / peer.figures["per_cpu_s"]
            print(
                f"ratio {r.alg} {NAMES[r.scenario]}, tokens per CPU-second of the server side, "
                f"{r.target} / oidc-provider: {ratio:.2f}"
            )
        bearer = next(
            (b for b in results if (b.target, b.alg, b.scenario) == (r.target, r.alg, "basic")),
            None,
        )
        if r.scenario != "basic" and bearer and bearer.figures["per_cpu_s"]:
            share = r.figures["per_cpu_s"] / bearer.figures["per_cpu_s"]
            print(f"ratio {r.alg} {r.target}: {r.scenario} / our own basic: {share:.2f}")
        pkjwt = next(
            (b for b in results if (b.target, b.alg, b.scenario) == (r.target, r.alg, "jwt")),
            None,
        )
        if r.scenario == "federated" and pkjwt and pkjwt.figures["per_cpu_s"]:
            share = r.figures["per_cpu_s"] / pkjwt.figures["per_cpu_s"]
            print(f"ratio {r.alg} {r.target}: federated / our own private_key_jwt: {share:.2f}")


def main() -> None:
    ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="ccserver-bench-"))
    log(f"work dir {work}; {DURATION} s per scenario, {CONNECTIONS} connections")
    try:
        run_all(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(work: Path) -> None:
    global LOCAL_ISSUER
    if "federated" in SCENARIOS:
        LOCAL_ISSUER = LocalIssuer()
    key_path = prepare_database(work)
    if env("BENCH_PROFILE", "0") == "1":
        profile(SERVERS[0], ALGS[0], work)
        return
    if int(env("BENCH_SOAK_TOKENS", "0")) > 0:
        soak(SERVERS[0], ALGS[0], work, int(env("BENCH_SOAK_TOKENS", "0")))
        return
    results: list[Result] = []
    for alg in ALGS:
        results += bench_alg(alg, work, key_path)
    store = "PostgreSQL" + (" and PostgreSQL + Redis" if "redis" in STORES else "")
    print(
        f"\n## make bench: {DURATION} s per scenario, medians of {ROUNDS} alternating rounds, "
        f"{CONNECTIONS} connections, {CLIENTS:,} clients, {store}, server CPUs "
        f"{SERVER_CPUS or 'any'}, wrk CPUs {LOADGEN_CPUS or 'any'}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    print(HEADER)
    for r in results:
        print(line_for(r))
    print()
    print_ratios(results)
    if env("BENCH_LISTING", "1") == "1":
        from bench.listing import measure_listing

        # The last algorithm's run left its own signing keys in the database.
        reset_signing_keys("ES256", str(work / "keys-ES256"))
        measure_listing(work, DATABASE_URL, server_env, start_server, stop_process, PORT)


if __name__ == "__main__":
    main()
