"""Token cut-off: clients.tokens_valid_after and revoked_tokens.not_before

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-03 13:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    # Both nullable with no default: existing clients have no cut-off and
    # existing deny-list rows are plain revocations, as they were.
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("tokens_valid_after", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("revoked_tokens") as batch:
        batch.add_column(sa.Column("not_before", sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table("revoked_tokens") as batch:
        batch.drop_column("not_before")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("tokens_valid_after")
