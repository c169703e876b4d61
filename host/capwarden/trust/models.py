"""Tables of the Ticket_Issuer, Descriptor_Issuer and revocation service.

What keeps two service processes on one PostgreSQL honest is in the constraints, not in the
code: credential ids are primary keys (a duplicated id cannot be recorded), a credential can be
revoked once per issuer (unique issuer_id + target_id), a renewed descriptor is superseded once
(unique superseded_by), and each per-terminal list version belongs to exactly one revocation
(unique terminal_id + list_version) and is allocated under the row lock of that terminal's
RevocationListVersion row. The schema itself is written by migrations/versions/0001_issuance.py;
these classes must agree with it (tests/trust/test_issuance.py compares them).
"""

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from capwarden.trust.db import Base

ID = sa.String(36)          # UUIDv7 text form
FAY = sa.String(40)
TERMINAL = sa.String(45)
NAME = sa.String(128)
ISSUER = sa.String(256)     # issuer_id: text of at most model.MAX_STR
TS = sa.BigInteger          # Unix seconds

ACTIVE = "active"
SUSPENDED = "suspended"


class Authorizer(Base):
    """Someone allowed to ask for credentials, within `policy` (issuance.Policy as JSON)."""
    __tablename__ = "authorizers"
    authorizer_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME, unique=True)
    token_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary(32), unique=True)
    policy: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[int] = mapped_column(TS)


class IssuedTicket(Base):
    """The issuance record of §4.2.2 step 8: every ticket signed, before it is handed out."""
    __tablename__ = "issued_tickets"
    # Read as "an authorizer's tickets, newest first" (tickets_issued) and by jti: one index
    # (migration 0004); each index more is paid for by every ticket issued.
    __table_args__ = (sa.Index("ix_issued_tickets_authorizer_iat", "authorizer_id", "iat"),)
    jti: Mapped[str] = mapped_column(ID, primary_key=True)
    issuer_id: Mapped[str] = mapped_column(ISSUER)
    authorizer_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("authorizers.authorizer_id"))
    fay_id: Mapped[str] = mapped_column(FAY)
    terminal_id: Mapped[str] = mapped_column(TERMINAL)
    iat: Mapped[int] = mapped_column(TS)
    nbf: Mapped[int] = mapped_column(TS)
    exp: Mapped[int] = mapped_column(TS)
    grants: Mapped[str] = mapped_column(sa.Text)
    ticket: Mapped[str] = mapped_column(sa.Text)


class IssuedDescriptor(Base):
    """Every Authorization_Descriptor signed; superseded_by names its renewal."""
    __tablename__ = "issued_descriptors"
    descriptor_id: Mapped[str] = mapped_column(ID, primary_key=True)
    issuer_id: Mapped[str] = mapped_column(ISSUER)
    authorizer_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("authorizers.authorizer_id"), index=True)
    fay_id: Mapped[str] = mapped_column(FAY, index=True)
    terminal_id: Mapped[str] = mapped_column(TERMINAL, index=True)
    issued_at: Mapped[int] = mapped_column(TS)
    not_before: Mapped[int] = mapped_column(TS)
    not_after: Mapped[int] = mapped_column(TS)
    grants: Mapped[str] = mapped_column(sa.Text)
    descriptor: Mapped[bytes] = mapped_column(sa.LargeBinary)
    superseded_by: Mapped[str | None] = mapped_column(ID, sa.ForeignKey("issued_descriptors.descriptor_id"),
                                                      unique=True, nullable=True)


class Revocation(Base):
    """A signed RevocationStatement, the terminal it concerns and its place in that terminal's list."""
    __tablename__ = "revocations"
    __table_args__ = (sa.UniqueConstraint("issuer_id", "target_id", name="uq_revocations_target"),
                      sa.UniqueConstraint("terminal_id", "list_version", name="uq_revocations_list_version"))
    revocation_id: Mapped[str] = mapped_column(ID, primary_key=True)
    issuer_id: Mapped[str] = mapped_column(ISSUER)
    target_id: Mapped[str] = mapped_column(ID)
    target_kind: Mapped[str] = mapped_column(sa.String(16))        # "ticket" or "descriptor"
    authorizer_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("authorizers.authorizer_id"))
    terminal_id: Mapped[str] = mapped_column(TERMINAL)
    reason: Mapped[str] = mapped_column(sa.String(32))
    revoked_at: Mapped[int] = mapped_column(TS)
    target_expires_at: Mapped[int] = mapped_column(TS)   # after this the entry leaves full lists
    list_version: Mapped[int] = mapped_column(sa.BigInteger)
    statement: Mapped[bytes] = mapped_column(sa.LargeBinary)


class RevocationListVersion(Base):
    """A terminal's revocation list version: the last list_version handed to one of its revocations."""
    __tablename__ = "revocation_list_versions"
    terminal_id: Mapped[str] = mapped_column(TERMINAL, primary_key=True)
    version: Mapped[int] = mapped_column(sa.BigInteger)
