"""Clients: sender-constrained token flags, tls_client_auth fields, security_profile

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 13:30:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TLS_FIELDS = (
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
)


def upgrade():
    # Existing clients keep issuing bearer tokens with the methods they had:
    # both flags false, no certificate rule, no profile.
    with op.batch_alter_table("clients") as batch:
        batch.add_column(
            sa.Column(
                "dpop_bound_access_tokens", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch.add_column(
            sa.Column(
                "tls_client_certificate_bound_access_tokens",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
        for field in TLS_FIELDS:
            batch.add_column(sa.Column(field, sa.String(1024), nullable=True))
        batch.add_column(sa.Column("security_profile", sa.String(16), nullable=True))
        batch.create_check_constraint(
            op.f("ck_clients_one_tls_client_auth_field"),
            " + ".join(f"(CASE WHEN {f} IS NULL THEN 0 ELSE 1 END)" for f in TLS_FIELDS) + " <= 1",
        )
        batch.create_check_constraint(
            op.f("ck_clients_security_profile"),
            "security_profile IS NULL OR security_profile IN ('fapi2')",
        )


def downgrade():
    with op.batch_alter_table("clients") as batch:
        batch.drop_constraint(op.f("ck_clients_security_profile"), type_="check")
        batch.drop_constraint(op.f("ck_clients_one_tls_client_auth_field"), type_="check")
        batch.drop_column("security_profile")
        for field in reversed(TLS_FIELDS):
            batch.drop_column(field)
        batch.drop_column("tls_client_certificate_bound_access_tokens")
        batch.drop_column("dpop_bound_access_tokens")
