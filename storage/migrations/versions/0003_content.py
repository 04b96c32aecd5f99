"""content packs, live versions, poster caches

Revision ID: 0003
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('content_packs',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_content_packs')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_content_packs_name'))
    )
    op.create_table('content_files',
    sa.Column('pack_id', BigId, nullable=False),
    sa.Column('path', sa.String(length=255), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['pack_id'], ['content_packs.id'], name=op.f('fk_content_files_pack_id_content_packs'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pack_id', 'path', name=op.f('pk_content_files'))
    )
    op.create_table('content_live',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('pack_id', BigId, nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pack_id'], ['content_packs.id'], name=op.f('fk_content_live_pack_id_content_packs')),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_content_live'))
    )
    op.create_table('distributor_qrcodes',
    sa.Column('distributor_id', BigId, nullable=False),
    sa.Column('ticket', sa.String(length=255), nullable=False),
    sa.Column('url', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['distributor_id'], ['distributors.id'],
                            name=op.f('fk_distributor_qrcodes_distributor_id_distributors')),
    sa.PrimaryKeyConstraint('distributor_id', name=op.f('pk_distributor_qrcodes'))
    )
    op.create_table('poster_media',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('media_id', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_poster_media'))
    )
    with op.batch_alter_table('poster_media', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_poster_media_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('poster_media', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_poster_media_expires_at'))
    op.drop_table('poster_media')
    op.drop_table('distributor_qrcodes')
    op.drop_table('content_live')
    op.drop_table('content_files')
    op.drop_table('content_packs')
