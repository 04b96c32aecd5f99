"""团队, 团队订单 and 明细 in chat: how each distributor was bound to their inviter (bound_by:
scan, code or link; empty for those registered before); indexes that hold what a page orders by,
so a deep page skips index entries, never rows: a team's members by (inviter, status,
registered_at, id), a receiver's commissions by (receiver, created_at, order_no), a distributor's
entries by (distributor, created_at, id) (whether a member has bought reads ix_orders_buyer, 0026)

Revision ID: 0023
Revises: 0028
"""
from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0028'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bound_by', sa.String(length=8), nullable=True))
    op.create_index('ix_distributors_inviter_members', 'distributors', ['inviter_id', 'status', 'registered_at', 'id'])
    _index('ix_commissions_receiver_created', 'commissions', ['distributor_id', 'created_at', 'order_no'])
    _index('ix_ledger_entries_distributor_created', 'ledger_entries', ['distributor_id', 'created_at', 'id'])


def _index(name: str, table: str, columns: list[str]) -> None:
    """The index `name` again, on these columns."""
    op.drop_index(name, table_name=table)
    op.create_index(name, table, columns)


def downgrade() -> None:
    _index('ix_ledger_entries_distributor_created', 'ledger_entries', ['distributor_id', 'created_at'])
    _index('ix_commissions_receiver_created', 'commissions', ['distributor_id', 'created_at'])
    op.drop_index('ix_distributors_inviter_members', table_name='distributors')
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.drop_column('bound_by')
