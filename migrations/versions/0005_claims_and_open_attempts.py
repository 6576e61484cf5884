"""claims that never repeat, and attempts opened before their send

A notification's `claim` counts the claims ever made on it and only grows (a resend resets the
attempt budget, never the claim): only the live claim may settle the row. An attempt is
written when its send is claimed, with no outcome, and closed when the reply arrives; one left
open when its lease is taken back is closed as interrupted: the gateway may have the message.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "notifications", sa.Column("claim", sa.BigInteger(), server_default="0", nullable=False)
    )
    # Rows claimed before the column existed carry their attempt count as their claim.
    op.execute("UPDATE notifications SET claim = attempts")
    op.add_column("notification_attempts", sa.Column("claim", sa.BigInteger(), nullable=True))
    op.add_column("notification_attempts", sa.Column("phone", sa.String(20), nullable=True))
    op.add_column("notification_attempts", sa.Column("outcome", sa.String(16), nullable=True))
    # Every attempt written so far had its reply (it was written only then): accepted when the
    # gateway gave it a message id, else one worth another try as far as can be told now.
    op.execute(
        "UPDATE notification_attempts SET outcome = CASE WHEN provider_message_id IS NULL "
        "THEN 'retry' ELSE 'accepted' END"
    )
    op.alter_column("notification_attempts", "duration_ms", nullable=True)
    op.create_index(
        "ix_notification_attempts_interrupted",
        "notification_attempts",
        ["notification_id"],
        postgresql_where="outcome = 'interrupted'",
    )


def downgrade():
    op.drop_index(
        "ix_notification_attempts_interrupted", table_name="notification_attempts"
    )
    op.execute("UPDATE notification_attempts SET duration_ms = 0 WHERE duration_ms IS NULL")
    op.alter_column("notification_attempts", "duration_ms", nullable=False)
    op.drop_column("notification_attempts", "outcome")
    op.drop_column("notification_attempts", "phone")
    op.drop_column("notification_attempts", "claim")
    op.drop_column("notifications", "claim")
