"""campaigns, outbox bodies, job runs, weekly report opt-out, pack windows

Revision ID: 0004
Revises: 0002, 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = ('0002', '0003')
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_runs',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('last_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status', sa.String(length=16), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_duration_ms', sa.Integer(), nullable=True),
    sa.Column('running_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_job_runs'))
    )
    op.create_table('outbox_bodies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_bodies'))
    )
    op.create_table('campaigns',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('title', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('audience', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('send_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('body_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('cursor', sa.BigInteger(), nullable=False),
    sa.Column('audience_max_id', sa.BigInteger(), nullable=True),
    sa.Column('enqueued', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['body_id'], ['outbox_bodies.id'], name=op.f('fk_campaigns_body_id_outbox_bodies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')),
    sa.UniqueConstraint('source', name=op.f('uq_campaigns_source'))
    )
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaigns_status'), ['status'], unique=False)

    with op.batch_alter_table('content_packs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('live_from', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('live_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('announce', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('window_state', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('replaced_pack_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))

    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('weekly_report', sa.Boolean(), server_default=sa.true(), nullable=False))

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('msg_id', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('result', sa.JSON(), nullable=True))
        batch_op.create_index('ix_outbox_body', ['body_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_msg_id'), ['msg_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_outbox_body_id_outbox_bodies'), 'outbox_bodies', ['body_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_outbox_body_id_outbox_bodies'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_outbox_msg_id'))
        batch_op.drop_index('ix_outbox_body')
        batch_op.drop_column('result')
        batch_op.drop_column('msg_id')
        batch_op.drop_column('body_id')

    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.drop_column('weekly_report')

    with op.batch_alter_table('content_packs', schema=None) as batch_op:
        batch_op.drop_column('replaced_pack_id')
        batch_op.drop_column('window_state')
        batch_op.drop_column('announce')
        batch_op.drop_column('live_until')
        batch_op.drop_column('live_from')

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaigns_status'))

    op.drop_table('campaigns')
    op.drop_table('outbox_bodies')
    op.drop_table('job_runs')
