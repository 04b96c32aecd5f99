"""sandbox_users, sandbox_messages: the sandbox emulator's users and their chats, kept across a
restart (sandbox mode only); ledger_entries.counted_at: when figures count an entry (an order's
commission and reversals when the order was paid, any other entry when it was posted)

Revision ID: 0029
Revises: 0021
"""
from alembic import op
import sqlalchemy as sa


revision = '0029'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('ledger_entries', sa.Column('counted_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE ledger_entries SET counted_at = COALESCE((SELECT o.paid_at FROM orders o"
               " WHERE o.order_no = ledger_entries.order_no AND ledger_entries.kind IN ('commission', 'reversal')),"
               " created_at)")
    with op.batch_alter_table('ledger_entries') as batch:
        batch.alter_column('counted_at', existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index('ix_ledger_entries_counted', 'ledger_entries', ['counted_at', 'kind', 'distributor_id', 'amount_fen'],
                    unique=False)
    op.create_table('sandbox_users',
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('place', sa.Integer(), nullable=False),
    sa.Column('nickname', sa.String(length=64), nullable=False),
    sa.Column('subscribed', sa.Boolean(), nullable=False),
    sa.Column('last_event_time', sa.BigInteger(), nullable=False),
    sa.Column('quota', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('openid', name=op.f('pk_sandbox_users'))
    )
    op.create_table('sandbox_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('item', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sandbox_messages'))
    )
    op.create_index('ix_sandbox_messages_user', 'sandbox_messages', ['openid', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_ledger_entries_counted', table_name='ledger_entries')
    with op.batch_alter_table('ledger_entries') as batch:
        batch.drop_column('counted_at')
    op.drop_index('ix_sandbox_messages_user', table_name='sandbox_messages')
    op.drop_table('sandbox_messages')
    op.drop_table('sandbox_users')
