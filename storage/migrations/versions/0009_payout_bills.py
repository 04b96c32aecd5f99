"""payout bills: one row per attempt to pay a withdrawal through WeChat Pay 商家转账; withdrawals.pay_transfer

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('withdrawals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pay_transfer', sa.Boolean(), server_default=sa.false(), nullable=False))

    op.create_table('payout_bills',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('withdrawal_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('out_bill_no', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('fail_reason', sa.String(length=64), nullable=True),
    sa.Column('transfer_bill_no', sa.String(length=64), nullable=True),
    sa.Column('package_info', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['withdrawal_id'], ['withdrawals.id'], name=op.f('fk_payout_bills_withdrawal_id_withdrawals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payout_bills')),
    sa.UniqueConstraint('out_bill_no', name=op.f('uq_payout_bills_out_bill_no')),
    sa.UniqueConstraint('withdrawal_id', 'attempt', name='uq_payout_bills_attempt')
    )
    with op.batch_alter_table('payout_bills', schema=None) as batch_op:
        batch_op.create_index('ix_payout_bills_state', ['state', 'updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('payout_bills', schema=None) as batch_op:
        batch_op.drop_index('ix_payout_bills_state')

    op.drop_table('payout_bills')
    with op.batch_alter_table('withdrawals', schema=None) as batch_op:
        batch_op.drop_column('pay_transfer')
