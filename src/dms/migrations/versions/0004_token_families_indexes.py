"""token families: indexes on user_id and expires_at

A password change revokes the user's families and deleting a user cascades to them: both find
them by user_id, which had no index (a scan of every family of every user). The periodic sweep
deletes expired families by expires_at (nothing did before: they piled up for ever).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 15:00:00
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_dms_token_families_user_id", "dms_token_families", ["user_id"])
    op.create_index("ix_dms_token_families_expires_at", "dms_token_families", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_dms_token_families_expires_at", table_name="dms_token_families")
    op.drop_index("ix_dms_token_families_user_id", table_name="dms_token_families")
