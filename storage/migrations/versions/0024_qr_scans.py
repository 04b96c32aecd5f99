"""qr_scans: one row per scan of a distributor's QR code (a SCAN event, or a follow through it),
for 我的推广's weekly scans and follows

Revision ID: 0024
Revises: 0021
"""
from alembic import op
import sqlalchemy as sa


revision = '0024'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('qr_scans',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('scene', sa.String(length=64), nullable=False),
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('followed', sa.Boolean(), nullable=False),
    sa.Column('scanned_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_qr_scans_scene', 'qr_scans', ['scene', 'scanned_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_qr_scans_scene', table_name='qr_scans')
    op.drop_table('qr_scans')
