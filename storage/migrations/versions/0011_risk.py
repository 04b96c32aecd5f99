"""risk: the flags the risk rules raise (one open per distributor and rule) and the suspensions
and reinstatements of distributors (CONTRACT §4.12; distributors.status gains 'suspended', a value
of the existing string column).

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('risk_flags',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('distributor_id', _ID, nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('facts', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('open_key', sa.String(length=48), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('follow_up_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['distributor_id'], ['distributors.id'],
                            name=op.f('fk_risk_flags_distributor_id_distributors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_risk_flags')),
    sa.UniqueConstraint('open_key', name=op.f('uq_risk_flags_open_key'))
    )
    with op.batch_alter_table('risk_flags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_risk_flags_distributor_id'), ['distributor_id'], unique=False)
        batch_op.create_index('ix_risk_flags_status', ['status', 'id'], unique=False)
        batch_op.create_index('ix_risk_flags_follow_up', ['rule', 'follow_up_at'], unique=False)

    op.create_table('suspensions',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('distributor_id', _ID, nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('flag_id', _ID, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['distributor_id'], ['distributors.id'],
                            name=op.f('fk_suspensions_distributor_id_distributors')),
    sa.ForeignKeyConstraint(['flag_id'], ['risk_flags.id'], name=op.f('fk_suspensions_flag_id_risk_flags')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suspensions'))
    )
    with op.batch_alter_table('suspensions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_suspensions_distributor_id'), ['distributor_id'], unique=False)


def downgrade() -> None:
    op.drop_table('suspensions')
    op.drop_table('risk_flags')
