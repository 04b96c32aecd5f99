"""campaigns with an image or an article: campaigns.format and campaigns.article, and
campaign_images (the picture or cover, uploaded to WeChat when sending starts)

Revision ID: 0028
Revises: 0021
"""
from alembic import op
import sqlalchemy as sa


revision = '0028'
down_revision = '0026'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('campaigns') as batch_op:
        batch_op.add_column(sa.Column('format', sa.String(length=8), server_default='text', nullable=False))
        batch_op.add_column(sa.Column('article', sa.JSON(), nullable=True))
    op.create_table('campaign_images',
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('media_id', sa.String(length=160), nullable=True),
    sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_images_campaign_id_campaigns')),
    sa.PrimaryKeyConstraint('campaign_id', name=op.f('pk_campaign_images'))
    )


def downgrade() -> None:
    op.drop_table('campaign_images')
    with op.batch_alter_table('campaigns') as batch_op:
        batch_op.drop_column('article')
        batch_op.drop_column('format')
