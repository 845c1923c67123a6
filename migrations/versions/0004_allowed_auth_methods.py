"""clients.allowed_auth_methods: the token endpoint methods a client may use

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-03 09:30:00.000000

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    # Nullable with no default: every existing client reads NULL, "any method
    # it has credentials for", which is what it could do before.
    with op.batch_alter_table("clients") as batch:
        batch.add_column(
            sa.Column(
                "allowed_auth_methods",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade():
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("allowed_auth_methods")
