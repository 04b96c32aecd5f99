"""console sessions belong to their token (console_sessions.fingerprint); sign-in tries counted
per client in the database (sign_in_tries), so every process refuses alike (CONTRACT §7)

Sessions from before this revision have no fingerprint and end at their next request.

Revision ID: 0014
Revises: 0013
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fingerprint', sa.String(length=64), server_default='', nullable=False))

    op.create_table('sign_in_tries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sign_in_tries'))
    )
    with op.batch_alter_table('sign_in_tries', schema=None) as batch_op:
        batch_op.create_index('ix_sign_in_tries_client_at', ['client', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_sign_in_tries_at'), ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sign_in_tries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sign_in_tries_at'))
        batch_op.drop_index('ix_sign_in_tries_client_at')

    op.drop_table('sign_in_tries')
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_column('fingerprint')
