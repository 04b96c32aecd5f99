"""foundation

Revision ID: 0001
Revises: 
"""
from alembic import op
import sqlalchemy as sa



revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('access_tokens',
    sa.Column('app_id', sa.String(length=64), nullable=False),
    sa.Column('token', sa.String(length=600), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('refreshed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('app_id', name=op.f('pk_access_tokens'))
    )
    op.create_table('conversation_states',
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('openid', name=op.f('pk_conversation_states'))
    )
    op.create_table('distributors',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('code', sa.String(length=6), nullable=False),
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('inviter_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('rank', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('exited_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['inviter_id'], ['distributors.id'], name=op.f('fk_distributors_inviter_id_distributors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_distributors')),
    sa.UniqueConstraint('code', name=op.f('uq_distributors_code')),
    sa.UniqueConstraint('openid', name=op.f('uq_distributors_openid')),
    sa.UniqueConstraint('phone', name=op.f('uq_distributors_phone'))
    )
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_distributors_inviter_id'), ['inviter_id'], unique=False)

    op.create_table('followers',
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('subscribed', sa.Boolean(), nullable=False),
    sa.Column('followed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('unfollowed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('scene', sa.String(length=64), nullable=True),
    sa.Column('last_interaction_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('openid', name=op.f('pk_followers'))
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('errcode', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('key', name=op.f('uq_outbox_key'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('processed_messages',
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('reply', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_processed_messages'))
    )
    with op.batch_alter_table('processed_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_processed_messages_created_at'), ['created_at'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('processed_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_processed_messages_created_at'))

    op.drop_table('processed_messages')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_due')

    op.drop_table('outbox')
    op.drop_table('followers')
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_distributors_inviter_id'))

    op.drop_table('distributors')
    op.drop_table('conversation_states')
    op.drop_table('access_tokens')
    
