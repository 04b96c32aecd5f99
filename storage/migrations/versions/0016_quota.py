"""WeChat's customer-service quota: the follower's grant (kind, messages used); outbox rows kept
for a user's next message, found by openid

Revision ID: 0016
Revises: 0015
"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

KEPT = sa.text("status = 'kept'")


def upgrade() -> None:
    with op.batch_alter_table('followers') as batch_op:
        # Rows from before: last_interaction_at was the last message's time, a message's grant.
        batch_op.add_column(sa.Column('grant_kind', sa.String(length=8), server_default='message', nullable=False))
        batch_op.add_column(sa.Column('grant_used', sa.Integer(), server_default='0', nullable=False))
    op.create_index('ix_outbox_kept', 'outbox', ['openid'], sqlite_where=KEPT, postgresql_where=KEPT)


def downgrade() -> None:
    op.drop_index('ix_outbox_kept', table_name='outbox')
    with op.batch_alter_table('followers') as batch_op:
        batch_op.drop_column('grant_used')
        batch_op.drop_column('grant_kind')
