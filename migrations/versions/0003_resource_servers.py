"""resource servers: the table, and one per audience existing clients list

Revision ID: 0003
Revises: 0004
Create Date: 2026-12-03 09:30:00.000000

"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from flask import current_app

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "0004"
branch_labels = None
depends_on = None

SYSTEM_ACCOUNT = "system"
NAME_MAX_LENGTH = 200


def upgrade():
    table = op.create_table(
        "resource_servers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("identifier", sa.String(length=1024), nullable=False),
        sa.Column("name", sa.String(length=NAME_MAX_LENGTH), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=True),
        sa.Column(
            "scopes",
            sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("access_token_ttl", sa.Integer(), nullable=True),
        sa.Column("dpop_bound_access_tokens", sa.Boolean(), nullable=False),
        sa.Column("tls_client_certificate_bound_access_tokens", sa.Boolean(), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "access_token_ttl IS NULL OR access_token_ttl BETWEEN 60 AND 86400",
            name=op.f("ck_resource_servers_access_token_ttl"),
        ),
        sa.CheckConstraint(
            "length(identifier) >= 1", name=op.f("ck_resource_servers_identifier_not_empty")
        ),
        sa.CheckConstraint("length(name) >= 1", name=op.f("ck_resource_servers_name_not_empty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_servers")),
        sa.UniqueConstraint("identifier", name="uq_resource_servers_identifier"),
    )
    op.create_index(
        "ix_resource_servers_account_id_created_at_id",
        "resource_servers",
        ["account_id", "created_at", "id"],
    )
    op.create_index("ix_resource_servers_created_at_id", "resource_servers", ["created_at", "id"])
    _register_listed_audiences(table)


def _built_in() -> set[str]:
    config = current_app.config
    return {config.get("MANAGEMENT_AUDIENCE"), config.get("DEFAULT_AUDIENCE")} - {None}


def _register_listed_audiences(table: sa.Table) -> None:
    """Every audience a client lists becomes a resource server, so each keeps its tokens.

    No scopes (any scope) and no lifetime cap: the tokens stay exactly as
    before. An identifier that clients of more than one account list becomes
    a shared resource server of the system account, so none of them loses it.
    """
    bind = op.get_bind()
    clients = sa.table(
        "clients",
        sa.column("account_id", sa.String),
        sa.column("audiences", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    built_in = _built_in()
    accounts: dict[str, set[str]] = {}
    rows = bind.execute(
        sa.select(clients.c.account_id, clients.c.audiences).order_by(clients.c.created_at)
    )
    for account_id, audiences in rows:
        for audience in audiences or ():
            if isinstance(audience, str) and audience and audience not in built_in:
                accounts.setdefault(audience, set()).add(account_id)
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # stored as naive UTC, as the models do
    rows = []
    for identifier, owners in accounts.items():
        shared = len(owners) > 1
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "account_id": SYSTEM_ACCOUNT if shared else next(iter(owners)),
                "identifier": identifier,
                "name": identifier[:NAME_MAX_LENGTH],
                "description": "Registered by the upgrade from the clients' audiences.",
                "scopes": [],
                "access_token_ttl": None,
                "dpop_bound_access_tokens": False,
                "tls_client_certificate_bound_access_tokens": False,
                "shared": shared,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
    if rows:
        op.bulk_insert(table, rows)


def downgrade():
    op.drop_index("ix_resource_servers_created_at_id", table_name="resource_servers")
    op.drop_index("ix_resource_servers_account_id_created_at_id", table_name="resource_servers")
    op.drop_table("resource_servers")
