"""mass_reports: WeChat's MASSSENDJOBFINISH events kept by msg_id, also before the send is recorded
(they replace outbox.result, which only held a report whose send was already marked)

Revision ID: 0015
Revises: 0014
"""
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

_OUTBOX = sa.table('outbox', sa.column('msg_id', sa.BigInteger()), sa.column('result', sa.JSON()))


def upgrade() -> None:
    reports = op.create_table('mass_reports',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('msg_id', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=64), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('kept', sa.Integer(), nullable=False),
    sa.Column('sent', sa.Integer(), nullable=False),
    sa.Column('errors', sa.Integer(), nullable=False),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mass_reports')),
    sa.UniqueConstraint('msg_id', name=op.f('uq_mass_reports_msg_id'))
    )
    with op.batch_alter_table('mass_reports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mass_reports_received_at'), ['received_at'], unique=False)
    # The reports already matched to a send move over with their counts.
    now = datetime.now(UTC)
    kept = {msg_id: result for msg_id, result in op.get_bind().execute(
        sa.select(_OUTBOX.c.msg_id, _OUTBOX.c.result).where(_OUTBOX.c.msg_id.is_not(None),
                                                            _OUTBOX.c.result.is_not(None)))
            if isinstance(result, dict)}
    if kept:
        op.bulk_insert(reports, [
            {"msg_id": msg_id, "status": str(r.get("status") or "")[:64], "total": int(r.get("total", 0)),
             "kept": int(r.get("kept", 0)), "sent": int(r.get("sent", 0)), "errors": int(r.get("errors", 0)),
             "fields": r, "received_at": now} for msg_id, r in kept.items()])
    with op.batch_alter_table('outbox') as batch_op:
        batch_op.drop_column('result')


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch_op:
        batch_op.add_column(sa.Column('result', sa.JSON(), nullable=True))
    with op.batch_alter_table('mass_reports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mass_reports_received_at'))

    op.drop_table('mass_reports')
