"""an index on sends by their user message: storing an answer updates its send
by the question's id, and without it each answer read the whole table

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_conversation_sends_user_message", "conversation_sends", ["user_message_id"])


def downgrade() -> None:
    op.drop_index("ix_conversation_sends_user_message", "conversation_sends")
