"""Federated credentials (workload identity, docs/api.md §1.3 and §2.8)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:50:00.000000

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade():
    op.create_table(
        "federated_credentials",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=1024), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=True),
        sa.Column("subject_pattern", sa.String(length=1024), nullable=True),
        sa.Column("claims", JSON, nullable=False),
        sa.Column("audience", sa.String(length=1024), nullable=False),
        sa.Column("jwks_uri", sa.String(length=2048), nullable=True),
        sa.Column("jwks", JSON, nullable=True),
        sa.Column("max_token_age", sa.Integer(), nullable=False),
        sa.Column("single_use", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(subject IS NULL) <> (subject_pattern IS NULL)",
            name=op.f("ck_federated_credentials_one_subject_rule"),
        ),
        sa.CheckConstraint(
            "max_token_age >= 60 AND max_token_age <= 86400",
            name=op.f("ck_federated_credentials_max_token_age_range"),
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_federated_credentials_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federated_credentials")),
        sa.UniqueConstraint("client_id", "name", name="uq_federated_credentials_client_id_name"),
    )
    with op.batch_alter_table("federated_credentials") as batch:
        batch.create_index(
            batch.f("ix_federated_credentials_client_id"), ["client_id"], unique=False
        )


def downgrade():
    with op.batch_alter_table("federated_credentials") as batch:
        batch.drop_index(batch.f("ix_federated_credentials_client_id"))
    op.drop_table("federated_credentials")
