"""signed_queries: each signed query of plain mode with its body's digest (CONTRACT §7), keyed by
timestamp and signature, without a rowid on SQLite

Revision ID: 0017
Revises: 0016
"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signed_queries',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('body_digest', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_signed_queries')),
    sqlite_with_rowid=False
    )


def downgrade() -> None:
    op.drop_table('signed_queries')
