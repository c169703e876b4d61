"""Per terminal, the revocation-list version last served to it (capwarden trust status).

Revision ID: 0003
Revises: 0002
A revocation counts as fetched by its terminal once a list of at least its version was served
to that terminal (trust.served), not merely once the terminal was in touch.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("ra_terminals") as batch:
        batch.add_column(sa.Column("revocations_served", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade():
    with op.batch_alter_table("ra_terminals") as batch:
        batch.drop_column("revocations_served")
