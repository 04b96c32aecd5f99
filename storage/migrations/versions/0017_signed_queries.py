"""processed_messages also remember each signed query of plain mode with its body's digest (CONTRACT §7)

Revision ID: 0017
Revises: 0016
"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('processed_messages') as batch_op:
        batch_op.add_column(sa.Column('body_digest', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('processed_messages') as batch_op:
        batch_op.drop_column('body_digest')
