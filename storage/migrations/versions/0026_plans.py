"""Commission plans (CONTRACT §8): the products' own rates beside each pack's content
(content_packs.sku_rates), a buyer's orders by distributor for the repeat reward (ix_orders_buyer),
and the monthly team bonus (team_bonuses).

Revision ID: 0026
Revises: 0021
"""
from alembic import op
import sqlalchemy as sa


revision = '0026'
down_revision = '0027'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('content_packs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sku_rates', sa.JSON(), nullable=True))
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_buyer', ['buyer_openid', 'paid_at', 'distributor_id', 'status'], unique=False,
                              sqlite_where=sa.text('buyer_openid IS NOT NULL'),
                              postgresql_where=sa.text('buyer_openid IS NOT NULL'))
    op.create_table('team_bonuses',
    sa.Column('month', sa.Integer(), nullable=False),
    sa.Column('distributor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('team_sales_fen', sa.BigInteger(), nullable=False),
    sa.Column('bonus_fen', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['distributor_id'], ['distributors.id'],
                            name=op.f('fk_team_bonuses_distributor_id_distributors')),
    sa.PrimaryKeyConstraint('month', 'distributor_id', name=op.f('pk_team_bonuses'))
    )


def downgrade() -> None:
    op.drop_table('team_bonuses')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_buyer')
    with op.batch_alter_table('content_packs', schema=None) as batch_op:
        batch_op.drop_column('sku_rates')
