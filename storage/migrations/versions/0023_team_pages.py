"""团队, 团队订单 and 明细 in chat: how each distributor was bound to their inviter (bound_by:
scan, code or link; empty for those registered before), a team's members by (inviter, status,
id) a page at a time, and orders by buyer (whether a member has bought)

Revision ID: 0023
Revises: 0021
"""
from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bound_by', sa.String(length=8), nullable=True))
    op.create_index('ix_distributors_inviter_members', 'distributors', ['inviter_id', 'status', 'id'])
    op.create_index('ix_orders_buyer', 'orders', ['buyer_openid'])


def downgrade() -> None:
    op.drop_index('ix_orders_buyer', table_name='orders')
    op.drop_index('ix_distributors_inviter_members', table_name='distributors')
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.drop_column('bound_by')
