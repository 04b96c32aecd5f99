"""inviter_changes: who moved a distributor to another inviter (actor) and the admin's reason in
their words (note); rows from before (exits) keep both empty

Revision ID: 0020
Revises: 0017
"""
from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inviter_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actor', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('note', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('inviter_changes', schema=None) as batch_op:
        batch_op.drop_column('note')
        batch_op.drop_column('actor')
