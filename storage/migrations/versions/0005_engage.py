"""rank history, adjustments, contests, tickets

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('contests',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('title', sa.String(length=64), nullable=False),
    sa.Column('metric', sa.String(length=16), nullable=False),
    sa.Column('skus', sa.JSON(), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('prizes_fen', sa.JSON(), nullable=False),
    sa.Column('audience', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=True),
    sa.Column('winners', sa.JSON(), nullable=True),
    sa.Column('campaign_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contests')),
    sa.UniqueConstraint('source', name=op.f('uq_contests_source'))
    )
    with op.batch_alter_table('contests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contests_ends_at'), ['ends_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_contests_status'), ['status'], unique=False)

    op.create_table('adjustments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('distributor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['distributor_id'], ['distributors.id'], name=op.f('fk_adjustments_distributor_id_distributors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adjustments'))
    )
    with op.batch_alter_table('adjustments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adjustments_distributor_id'), ['distributor_id'], unique=False)

    op.create_table('contest_scores',
    sa.Column('contest_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('distributor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('reached_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contest_id'], ['contests.id'], name=op.f('fk_contest_scores_contest_id_contests')),
    sa.ForeignKeyConstraint(['distributor_id'], ['distributors.id'], name=op.f('fk_contest_scores_distributor_id_distributors')),
    sa.PrimaryKeyConstraint('contest_id', 'distributor_id', name=op.f('pk_contest_scores'))
    )
    with op.batch_alter_table('contest_scores', schema=None) as batch_op:
        batch_op.create_index('ix_contest_scores_place', ['contest_id', 'value', 'reached_at'], unique=False)

    op.create_table('rank_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('distributor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('old_rank', sa.String(length=32), nullable=False),
    sa.Column('new_rank', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['distributor_id'], ['distributors.id'], name=op.f('fk_rank_changes_distributor_id_distributors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rank_changes'))
    )
    with op.batch_alter_table('rank_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rank_changes_distributor_id'), ['distributor_id'], unique=False)

    op.create_table('tickets',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('distributor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('urgent', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reminded_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['distributor_id'], ['distributors.id'], name=op.f('fk_tickets_distributor_id_distributors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tickets'))
    )
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tickets_openid'), ['openid'], unique=False)
        batch_op.create_index('ix_tickets_status_due', ['status', 'due_at'], unique=False)

    op.create_table('ticket_replies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_ticket_replies_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ticket_replies'))
    )
    with op.batch_alter_table('ticket_replies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ticket_replies_ticket_id'), ['ticket_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ticket_replies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ticket_replies_ticket_id'))

    op.drop_table('ticket_replies')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_status_due')
        batch_op.drop_index(batch_op.f('ix_tickets_openid'))

    op.drop_table('tickets')
    with op.batch_alter_table('rank_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rank_changes_distributor_id'))

    op.drop_table('rank_changes')
    with op.batch_alter_table('contest_scores', schema=None) as batch_op:
        batch_op.drop_index('ix_contest_scores_place')

    op.drop_table('contest_scores')
    with op.batch_alter_table('adjustments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adjustments_distributor_id'))

    op.drop_table('adjustments')
    with op.batch_alter_table('contests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contests_status'))
        batch_op.drop_index(batch_op.f('ix_contests_ends_at'))

    op.drop_table('contests')
