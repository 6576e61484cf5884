"""an index for the sweep's look at delivery reports that arrived before SENT was recorded

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 01:30:00

"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        "ix_delivery_reports_unmatched",
        "delivery_reports",
        ["received_at"],
        postgresql_where="notification_id IS NULL",
    )


def downgrade():
    op.drop_index("ix_delivery_reports_unmatched", table_name="delivery_reports")
