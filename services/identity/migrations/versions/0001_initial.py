"""tenants, users, sessions and refresh tokens

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from meshkit.db import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_tenants",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_tenants"),
        sa.UniqueConstraint("name", name="uq_identity_tenants_name"),
    )
    op.create_table(
        "identity_users",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["identity_tenants.id"],
            name="fk_identity_users_tenant_id_identity_tenants", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_identity_users"),
        sa.UniqueConstraint("tenant_id", "email", name="uq_identity_users_tenant_email"),
    )
    op.create_table(
        "identity_sessions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["identity_users.id"],
            name="fk_identity_sessions_user_id_identity_users", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_identity_sessions"),
    )
    op.create_index("ix_identity_sessions_user_id", "identity_sessions", ["user_id"])
    op.create_table(
        "identity_refresh_tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("spent_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"], ["identity_sessions.id"],
            name="fk_identity_refresh_tokens_session_id_identity_sessions", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_identity_refresh_tokens"),
        sa.UniqueConstraint("digest", name="uq_identity_refresh_tokens_digest"),
    )
    op.create_index(
        "ix_identity_refresh_tokens_session_id", "identity_refresh_tokens", ["session_id"]
    )


def downgrade() -> None:
    op.drop_table("identity_refresh_tokens")
    op.drop_table("identity_sessions")
    op.drop_table("identity_users")
    op.drop_table("identity_tenants")
