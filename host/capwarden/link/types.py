"""Plain records the board link returns."""

from dataclasses import dataclass, field


@dataclass
class ResourceInfo:
    index: int
    name: str
    cls: str
    modes: list
    state: str


@dataclass
class BoardInfo:
    name: str
    agent_version: str
    boot_id: int
    protocol: int
    rx_buf: int
    uptime_ms: int
    resources: list = field(default_factory=list)


@dataclass
class Grant:
    res: int
    modes: int
    session: int
    epoch: int
    lease_ms: int


@dataclass
class AuditEntry:
    """One entry of the board's audit ring (faults.md 70)."""
    seq: int          # the entry's number on the board, from 1
    kind: str         # grant, end, handover, failsafe_delay, resumed, failsafe_safe, failsafe_hold
    res: int
    name: str         # the resource's name
    session: int      # the holder's session token (for handover: the new holder's)
    epoch: int
    reason: str       # the grant-ended reason (limits.REASONS) for end and failsafe entries, else ""
    t_ms: int         # the board's millisecond clock


@dataclass
class AuditRing:
    count: int                    # entries the board ever recorded since boot
    lost: int                     # entries asked for but already overwritten in the ring
    entries: list = field(default_factory=list)
