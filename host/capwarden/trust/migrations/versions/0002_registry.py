"""Registration_Authority: registered terminals, enrollment secrets, key-set versions, acks.

Revision ID: 0002
Revises: 0001
Written by hand, as 0001: the constraints that make a secret single-use and a version
published once are here on purpose (capwarden/trust/models_registry.py).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TERMINAL = sa.String(45)
GROUP = sa.String(128)
DIGEST = sa.String(43)
TS = sa.BigInteger()


def upgrade():
    op.create_table(
        "ra_terminals",
        sa.Column("terminal_id", TERMINAL, primary_key=True),
        sa.Column("device_algorithm", sa.String(32), nullable=False),
        sa.Column("device_key", sa.LargeBinary(65), nullable=False),
        sa.Column("token_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("group_name", GROUP, nullable=True),
        sa.Column("registered_at", TS, nullable=False),
        sa.Column("status_at", TS, nullable=False),
        sa.Column("last_sync_at", TS, nullable=True),
        sa.Column("key_set_acked", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("token_sha256", name="uq_ra_terminals_token_sha256"),
    )
    op.create_index("ix_ra_terminals_group_name", "ra_terminals", ["group_name"])
    op.create_table(
        "ra_enrollments",
        sa.Column("enrollment_id", sa.String(36), primary_key=True),
        sa.Column("secret_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("terminal_id", TERMINAL, nullable=True),
        sa.Column("group_name", GROUP, nullable=True),
        sa.Column("key_set_version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("used_by", TERMINAL, nullable=True),
        sa.UniqueConstraint("secret_sha256", name="uq_ra_enrollments_secret_sha256"),
    )
    op.create_table(
        "ra_key_sets",
        sa.Column("version", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("effective_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "ra_key_set_acks",
        sa.Column("terminal_id", TERMINAL,
                  sa.ForeignKey("ra_terminals.terminal_id", name="fk_ra_key_set_acks_terminal"), primary_key=True),
        sa.Column("version", sa.BigInteger(),
                  sa.ForeignKey("ra_key_sets.version", name="fk_ra_key_set_acks_version"), primary_key=True,
                  autoincrement=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("ack", sa.Text(), nullable=False),
        sa.Column("acked_at", TS, nullable=False),
    )
    op.create_index("ix_ra_key_set_acks_version", "ra_key_set_acks", ["version"])


def downgrade():
    for name in ("ra_key_set_acks", "ra_key_sets", "ra_enrollments", "ra_terminals"):
        op.drop_table(name)
