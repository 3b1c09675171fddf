"""outbox: queued_at, so the sweep does not start a second retry chain for a message

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dms_outbox", sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("dms_outbox", "queued_at")
