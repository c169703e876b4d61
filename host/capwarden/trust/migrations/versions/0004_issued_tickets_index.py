"""One index on issued_tickets, (authorizer_id, iat), instead of three single-column ones.

Revision ID: 0004
Revises: 0003
The issuance record is read only as "an authorizer's tickets, newest first" (GET /v1/tickets,
optionally narrowed to a Fay or a terminal), which this index serves, and by jti (the primary
key). The fay_id and terminal_id indexes were never used alone, and every ticket paid for
keeping them: a random B-tree insert each (bench trust_issuance: in-process batch issuance
went from about 0.52 to 0.6 of signing with this migration).
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    for col in ("authorizer_id", "fay_id", "terminal_id"):
        op.drop_index("ix_issued_tickets_" + col, table_name="issued_tickets")
    op.create_index("ix_issued_tickets_authorizer_iat", "issued_tickets", ["authorizer_id", "iat"])


def downgrade():
    op.drop_index("ix_issued_tickets_authorizer_iat", table_name="issued_tickets")
    for col in ("authorizer_id", "fay_id", "terminal_id"):
        op.create_index("ix_issued_tickets_" + col, "issued_tickets", [col])
