"""customers remember the identity provider's claims as last seen

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 00:05:00

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "customers",
        sa.Column("oidc_claims", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade():
    op.drop_column("customers", "oidc_claims")
