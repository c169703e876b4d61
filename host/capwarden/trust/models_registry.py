"""Tables of the Registration_Authority (docs/trust-api.md "Registration_Authority").

What keeps several service processes honest is again in the constraints: a Terminal_ID is a
primary key (registered once), an enrollment secret is spent by a conditional UPDATE (used_at
IS NULL) that only one transaction can win, a key-set version is a primary key (published
once), and an acknowledgement is one row per terminal and version. Secrets and tokens are
stored as SHA-256 only (they are 32 random bytes). The schema is written by
migrations/versions/0002_registry.py; these classes must agree with it
(tests/trust/test_registry.py compares them).
"""

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from capwarden.trust.db import Base

TERMINAL = sa.String(45)
ID = sa.String(36)
GROUP = sa.String(128)
DIGEST = sa.String(43)      # b64u of a SHA-256
TS = sa.BigInteger          # Unix seconds

REGISTERED = "registered"
SUSPENDED = "suspended"
DEREGISTERED = "deregistered"
STATUSES = (REGISTERED, SUSPENDED, DEREGISTERED)


class RegisteredTerminal(Base):
    """A terminal that registered with its device key; key_set_acked is the highest key-set
    version it acknowledged (0: none yet), revocations_served the highest revocation-list
    version handed to it."""
    __tablename__ = "ra_terminals"
    terminal_id: Mapped[str] = mapped_column(TERMINAL, primary_key=True)
    device_algorithm: Mapped[str] = mapped_column(sa.String(32))
    device_key: Mapped[bytes] = mapped_column(sa.LargeBinary(65))
    token_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary(32), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    group_name: Mapped[str | None] = mapped_column(GROUP, nullable=True, index=True)
    registered_at: Mapped[int] = mapped_column(TS)
    status_at: Mapped[int] = mapped_column(TS)
    last_sync_at: Mapped[int | None] = mapped_column(TS, nullable=True)
    key_set_acked: Mapped[int] = mapped_column(sa.BigInteger)
    # The highest revocation-list version served to it (trust.served; migration 0003).
    revocations_served: Mapped[int] = mapped_column(sa.BigInteger, server_default="0")


class Enrollment(Base):
    """A one-time enrollment secret the operator handed out, for a named Terminal_ID or for one
    the RA assigns (terminal_id NULL). Spent once: used_at and used_by are set then."""
    __tablename__ = "ra_enrollments"
    enrollment_id: Mapped[str] = mapped_column(ID, primary_key=True)
    secret_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary(32), unique=True)
    terminal_id: Mapped[str | None] = mapped_column(TERMINAL, nullable=True)
    group_name: Mapped[str | None] = mapped_column(GROUP, nullable=True)
    key_set_version: Mapped[int] = mapped_column(sa.BigInteger)   # the version the anchor handed out signs
    created_at: Mapped[int] = mapped_column(TS)
    expires_at: Mapped[int] = mapped_column(TS)
    used_at: Mapped[int | None] = mapped_column(TS, nullable=True)
    used_by: Mapped[str | None] = mapped_column(TERMINAL, nullable=True)


class KeySetVersion(Base):
    """A published key set: the signed document exactly as handed out, its payload's digest."""
    __tablename__ = "ra_key_sets"
    version: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(sa.Text)
    digest: Mapped[str] = mapped_column(DIGEST)
    effective_at: Mapped[int] = mapped_column(TS)
    created_at: Mapped[int] = mapped_column(TS)


class KeySetAck(Base):
    """A terminal's signed acknowledgement that it stored one key-set version."""
    __tablename__ = "ra_key_set_acks"
    terminal_id: Mapped[str] = mapped_column(TERMINAL, sa.ForeignKey("ra_terminals.terminal_id"), primary_key=True)
    version: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("ra_key_sets.version"), primary_key=True,
                                         autoincrement=False, index=True)
    digest: Mapped[str] = mapped_column(DIGEST)
    ack: Mapped[str] = mapped_column(sa.Text)
    acked_at: Mapped[int] = mapped_column(TS)
