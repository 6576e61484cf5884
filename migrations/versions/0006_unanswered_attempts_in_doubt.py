"""unanswered attempts are in doubt too

An attempt whose request reached the gateway but whose reply never came in time (or was cut
off) is `unanswered`: it is tried again like any transient failure, and the gateway may have
the message, so its notification may go out twice. The index the in-doubt list reads covers
both kinds.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 03:00:00

"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_index("ix_notification_attempts_interrupted", table_name="notification_attempts")
    op.create_index(
        "ix_notification_attempts_in_doubt",
        "notification_attempts",
        ["notification_id"],
        postgresql_where="outcome IN ('interrupted', 'unanswered')",
    )


def downgrade():
    op.drop_index("ix_notification_attempts_in_doubt", table_name="notification_attempts")
    # Older code knows no such outcome: it was a transient failure to it.
    op.execute("UPDATE notification_attempts SET outcome = 'retry' WHERE outcome = 'unanswered'")
    op.create_index(
        "ix_notification_attempts_interrupted",
        "notification_attempts",
        ["notification_id"],
        postgresql_where="outcome = 'interrupted'",
    )
