"""distributor_totals: each distributor's credited sales and commission per China-time month and
for all time (month 0), kept by the order-event batches, backfilled from what is stored; indexes
for the console's 分销员 list sorted by a figure: totals by month and figure, balances by
available and pending, distributors by (inviter, status) for the team sizes.

Revision ID: 0021
Revises: 0017
"""
from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0022'
branch_labels = None
depends_on = None


def _month(column: str) -> str:
    """The China-time month of a stored UTC time as an integer YYYYMM, on both databases."""
    if op.get_bind().dialect.name == "postgresql":
        return f"CAST(to_char(({column} AT TIME ZONE 'Asia/Shanghai'), 'YYYYMM') AS INTEGER)"
    return f"CAST(strftime('%Y%m', {column}, '+8 hours') AS INTEGER)"


def _backfill() -> None:
    """Sales by the month each order was paid, commission (less reversals) by the month each
    entry was posted; then month 0 as the sum of the months."""
    op.execute(f"""
        INSERT INTO distributor_totals (distributor_id, month, sales_fen, orders, commission_fen)
        SELECT distributor_id, month, sum(sales_fen), sum(orders), sum(commission_fen) FROM (
            SELECT distributor_id, {_month('paid_at')} AS month, amount_fen - refunded_fen AS sales_fen,
                   1 AS orders, 0 AS commission_fen
            FROM orders WHERE status != 'cancelled'
            UNION ALL
            SELECT distributor_id, {_month('created_at')}, 0, 0, amount_fen
            FROM ledger_entries WHERE kind IN ('commission', 'reversal')
        ) AS figures GROUP BY distributor_id, month""")
    op.execute("""
        INSERT INTO distributor_totals (distributor_id, month, sales_fen, orders, commission_fen)
        SELECT distributor_id, 0, sum(sales_fen), sum(orders), sum(commission_fen)
        FROM distributor_totals GROUP BY distributor_id""")


def upgrade() -> None:
    op.create_table('distributor_totals',
    sa.Column('distributor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('month', sa.Integer(), nullable=False),
    sa.Column('sales_fen', sa.BigInteger(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('commission_fen', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['distributor_id'], ['distributors.id'],
                            name=op.f('fk_distributor_totals_distributor_id_distributors')),
    sa.PrimaryKeyConstraint('distributor_id', 'month', name=op.f('pk_distributor_totals'))
    )
    with op.batch_alter_table('distributor_totals', schema=None) as batch_op:
        batch_op.create_index('ix_distributor_totals_sales', ['month', 'sales_fen', 'distributor_id'], unique=False)
        batch_op.create_index('ix_distributor_totals_commission', ['month', 'commission_fen', 'distributor_id'],
                              unique=False)
    with op.batch_alter_table('balances', schema=None) as batch_op:
        batch_op.create_index('ix_balances_available', ['available_fen', 'distributor_id'], unique=False)
        batch_op.create_index('ix_balances_pending', ['pending_fen', 'distributor_id'], unique=False)
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.create_index('ix_distributors_inviter_status', ['inviter_id', 'status'], unique=False)
    _backfill()


def downgrade() -> None:
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.drop_index('ix_distributors_inviter_status')
    with op.batch_alter_table('balances', schema=None) as batch_op:
        batch_op.drop_index('ix_balances_pending')
        batch_op.drop_index('ix_balances_available')
    op.drop_table('distributor_totals')
