"""daily totals: the programme per China-time day for the console's 概览, kept by the order-event
batches; each distributor's first sale (the funnel). Both filled from what is stored. Indexes for
the console: distributors by (rank, status) and by name. The orders'
paid_at index goes: the 概览 was its only reader, and it made SQLite read whole contests' windows
through it, a random read per order, instead of scanning the table.

Revision ID: 0008
Revises: 0007
"""
from datetime import date

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def _day(column: str) -> str:
    """The China-time calendar day of a stored UTC time, as text 'YYYY-MM-DD' on both databases."""
    if op.get_bind().dialect.name == "postgresql":
        return f"to_char(({column} AT TIME ZONE 'Asia/Shanghai'), 'YYYY-MM-DD')"
    return f"date({column}, '+8 hours')"


def _backfill() -> None:
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE distributors SET first_sale_at = "
                         "(SELECT min(paid_at) FROM orders WHERE orders.distributor_id = distributors.id)"))
    days: dict[str, dict[str, int]] = {}

    def add(sql: str, *names: str) -> None:
        for day, *values in conn.execute(sa.text(sql)):
            row = days.setdefault(day, {"sales_fen": 0, "orders": 0, "commission_fen": 0, "first_sales": 0})
            for name, value in zip(names, values):
                row[name] += int(value or 0)
    add(f"SELECT {_day('paid_at')}, sum(amount_fen - refunded_fen), count(*) FROM orders "
        f"WHERE status != 'cancelled' GROUP BY 1", "sales_fen", "orders")
    add(f"SELECT {_day('created_at')}, sum(amount_fen) FROM ledger_entries "
        f"WHERE kind IN ('commission', 'reversal') GROUP BY 1", "commission_fen")
    add(f"SELECT {_day('first_sale_at')}, count(*) FROM distributors WHERE first_sale_at IS NOT NULL GROUP BY 1",
        "first_sales")
    if days:
        table = sa.table("daily_totals", sa.column("day", sa.Date), sa.column("sales_fen"), sa.column("orders"),
                         sa.column("commission_fen"), sa.column("first_sales"))
        op.bulk_insert(table, [{"day": date.fromisoformat(d), **v} for d, v in sorted(days.items())])


def upgrade() -> None:
    op.create_table('daily_totals',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('sales_fen', sa.BigInteger(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('commission_fen', sa.BigInteger(), nullable=False),
    sa.Column('first_sales', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', name=op.f('pk_daily_totals'))
    )
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_sale_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_distributors_rank_status', ['rank', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_distributors_name'), ['name'], unique=False)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orders_paid_at'))
    _backfill()


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orders_paid_at'), ['paid_at'], unique=False)

    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_distributors_name'))
        batch_op.drop_index('ix_distributors_rank_status')
        batch_op.drop_column('first_sale_at')

    op.drop_table('daily_totals')
