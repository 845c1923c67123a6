"""server settings: the pepper's fingerprint, checked by every instance at start

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    # A new table only: no existing row is touched. The first start after
    # the upgrade stores the fingerprint of the pepper it runs with.
    op.create_table(
        "server_settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_settings")),
    )


def downgrade():
    op.drop_table("server_settings")
