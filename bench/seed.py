"""Seed many clients fast: COPY on PostgreSQL, a Core bulk insert elsewhere.

Seeded client `i` has a deterministic id (`seed_client_id(i)`) and secret
(`seed_secret(i)`), so a load generator can authenticate as any of them
without reading the database. The rows are ordinary clients and secrets:
the server finds and verifies them exactly as it would real ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.clients.hashing import hash_secret
from app.clients.service import CLIENT_DEFAULTS
from app.models import Client, ClientSecret

SEED_ACCOUNT = "bench-seed"
# created_at of client 0; each next client is 1 ms later, so the keyset order is known.
SEED_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
CHUNK = 20_000
# From this many rows on, PostgreSQL indexes are dropped and rebuilt around the COPY.
BULK_THRESHOLD = 50_000


def seed_client_id(index: int) -> str:
    """A UUID-shaped id, spread like uuid4 ids across the primary key index."""
    digest = hashlib.sha256(f"bench-seed-client-{index}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def seed_secret(index: int) -> str:
    """The plaintext secret of seeded client `index` (bench data only)."""
    return f"ccs_bench-seed-secret-{index:08d}"


def _rows(start: int, stop: int, pepper: bytes) -> Iterator[tuple[dict, dict]]:
    scopes = ["read", "write"]
    for i in range(start, stop):
        cid = seed_client_id(i)
        at = SEED_EPOCH + timedelta(milliseconds=i)
        secret = seed_secret(i)
        yield (
            {
                "id": cid,
                "account_id": SEED_ACCOUNT,
                "name": f"seed-{i:08d}",
                "friendly_name": f"Seed client {i}",
                **CLIENT_DEFAULTS,
                "tags": ["bench"],
                "scopes": scopes,
                "tokens_valid_after": None,
                "version": 1,
                "created_at": at,
                "updated_at": at,
            },
            {
                "id": f"s-{cid}",
                "client_id": cid,
                "secret_hash": hash_secret(secret, pepper),
                "hint": secret[-4:],
                "description": None,
                "created_at": at,
                "expires_at": None,
                "last_used_at": None,
            },
        )


CLIENT_COLUMNS = [c.name for c in Client.__table__.columns]
SECRET_COLUMNS = [c.name for c in ClientSecret.__table__.columns]


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        value = json.dumps(value)
    # COPY text format: backslash, tab and newline must be escaped.
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _copy_chunk(cursor, table: str, columns: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(_copy_value(row[c]) for c in columns))
        buf.write("\n")
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(buf.getvalue())


def seed_clients(engine: sa.Engine, count: int, pepper: bytes, start: int = 0) -> int:
    """Insert seeded clients start..start+count-1, each with one secret; return how many.

    PostgreSQL gets COPY through psycopg (about 1 s per 100,000 clients on 2
    cores); other databases a Core executemany.
    """
    done = start
    stop = start + count
    with engine.begin() as conn:
        rebuild: list[str] = []
        if conn.dialect.name == "postgresql":
            cursor = conn.connection.driver_connection.cursor()
            if count >= BULK_THRESHOLD:
                rebuild = _drop_secondary_indexes(conn)
        while done < stop:
            upper = min(stop, done + CHUNK)
            pairs = list(_rows(done, upper, pepper))
            clients = [c for c, _ in pairs]
            secrets = [s for _, s in pairs]
            if conn.dialect.name == "postgresql":
                _copy_chunk(cursor, "clients", CLIENT_COLUMNS, clients)
                _copy_chunk(cursor, "client_secrets", SECRET_COLUMNS, secrets)
            else:
                conn.execute(sa.insert(Client.__table__), clients)
                conn.execute(sa.insert(ClientSecret.__table__), secrets)
            done = upper
        # Building each index once at the end is several times faster than
        # updating it row by row; the definitions come back exactly as they were.
        for definition in rebuild:
            conn.exec_driver_sql(definition)
    return done - start


def _drop_secondary_indexes(conn) -> list[str]:
    """Drop the plain indexes on the seeded tables; return their CREATE statements."""
    rows = conn.execute(
        sa.text(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "JOIN pg_class c ON c.relname = i.indexname "
            "JOIN pg_index x ON x.indexrelid = c.oid "
            "WHERE i.schemaname = current_schema() "
            "AND i.tablename IN ('clients', 'client_secrets') "
            "AND NOT x.indisprimary AND NOT x.indisunique"
        )
    ).all()
    for row in rows:
        conn.exec_driver_sql(f'DROP INDEX "{row.indexname}"')
    return [row.indexdef for row in rows]


def seeded_count(engine: sa.Engine) -> int:
    """How many seeded clients the database holds."""
    with engine.connect() as conn:
        return conn.scalar(
            sa.select(sa.func.count()).select_from(Client).where(Client.account_id == SEED_ACCOUNT)
        )


def seeded_with(engine: sa.Engine, pepper: bytes) -> bool:
    """True when seeded client 0's secret was hashed with this pepper (a bench
    database seeded under an older pepper must be seeded again)."""
    with engine.connect() as conn:
        stored = conn.scalar(
            sa.select(ClientSecret.secret_hash).where(ClientSecret.client_id == seed_client_id(0))
        )
    return stored == hash_secret(seed_secret(0), pepper)


def delete_seeded(engine: sa.Engine) -> None:
    """Remove every seeded client (their secrets go by ON DELETE CASCADE)."""
    with engine.begin() as conn:
        conn.execute(
            sa.delete(ClientSecret).where(
                ClientSecret.client_id.in_(
                    sa.select(Client.id).where(Client.account_id == SEED_ACCOUNT)
                )
            )
        )
        conn.execute(sa.delete(Client).where(Client.account_id == SEED_ACCOUNT))
