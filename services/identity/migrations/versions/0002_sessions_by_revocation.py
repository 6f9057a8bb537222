"""an index on sessions by when they were revoked: every service asks each second which
sessions were revoked lately (ListRevokedSessions)

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_identity_sessions_revoked_at", "identity_sessions", ["revoked_at"])


def downgrade() -> None:
    op.drop_index("ix_identity_sessions_revoked_at", "identity_sessions")
