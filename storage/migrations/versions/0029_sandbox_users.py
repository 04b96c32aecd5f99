"""sandbox_users, sandbox_messages: the sandbox emulator's users and their chats, kept across a
restart (sandbox mode only)

Revision ID: 0029
Revises: 0021
"""
from alembic import op
import sqlalchemy as sa


revision = '0029'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
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
    op.drop_index('ix_sandbox_messages_user', table_name='sandbox_messages')
    op.drop_table('sandbox_messages')
    op.drop_table('sandbox_users')
