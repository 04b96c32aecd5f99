"""The back office's records: orders by the time they were paid and ledger entries by the time
they were posted, each index holding what the console's lists, totals and rankings read, so a
period's grouped query is a range of one index (no row fetched per order or entry)

Revision ID: 0022
Revises: 0017
"""
from alembic import op


revision = '0022'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_orders_paid', 'orders', ['paid_at', 'distributor_id', 'status', 'amount_fen', 'refunded_fen'])
    op.create_index('ix_ledger_entries_posted', 'ledger_entries', ['created_at', 'kind', 'distributor_id', 'amount_fen'])


def downgrade() -> None:
    op.drop_index('ix_ledger_entries_posted', table_name='ledger_entries')
    op.drop_index('ix_orders_paid', table_name='orders')
