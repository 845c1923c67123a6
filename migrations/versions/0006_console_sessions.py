"""console_sessions: console sign-ins kept in the database

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 15:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    # Sessions signed in before this revision lived only in their cookies;
    # those cookies carry no session token, so they lead back to sign-in.
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_console_sessions_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["secret_id"],
            ["client_secrets.id"],
            name=op.f("fk_console_sessions_secret_id_client_secrets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
    )
    op.create_index("ix_console_sessions_client_id", "console_sessions", ["client_id"])
    op.create_index("ix_console_sessions_secret_id", "console_sessions", ["secret_id"])
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])


def downgrade():
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_index("ix_console_sessions_secret_id", table_name="console_sessions")
    op.drop_index("ix_console_sessions_client_id", table_name="console_sessions")
    op.drop_table("console_sessions")
