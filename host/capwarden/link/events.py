"""Events a Board reports to its subscribers."""

from dataclasses import dataclass


@dataclass
class ResourceEvent:
    """A resource was unplugged, replugged or faulted (state: absent/present/fault)."""
    res: int
    name: str
    state: str
    reason: str


@dataclass
class GrantEnded:
    """The board ended a grant by itself (lease_expired, removed, fault, failsafe...)."""
    res: int
    name: str
    session: int
    epoch: int
    reason: str


@dataclass
class OrphanGrant:
    """A grant the board reports for a request no longer pending here (a late duplicate, an
    answer after the host gave up): nobody on the host owns it, so the engine releases it."""
    res: int
    name: str
    session: int
    epoch: int


@dataclass
class Failsafe:
    """The board drove resources to their safe state after the host went silent."""
    reason: str
    resources: int
    silent_ms: int


@dataclass
class Reset:
    """The board rebooted: a new boot id. Every grant it held is gone."""
    old_boot_id: int
    new_boot_id: int


@dataclass
class LinkDown:
    why: str


@dataclass
class LinkUp:
    why: str


@dataclass
class ManualOverride:
    """The board's manual override input (EV_OVERRIDE: an RC mode switch, the virtual board's
    override file): `mask` bit k set, resource k is under a human's direct control and the board
    grants it to nobody exclusively; `names` those resources; `ended` the exclusive grants the
    board ended for it (reason `override`) since its last report, None when the change was seen in
    a HEARTBEAT_R because its EV_OVERRIDE was lost (the board's audit ring says what it ended).
    Sent when the input changes and, while it is on, at the first heartbeat of every new host
    session, so an engine that was away learns it; every HEARTBEAT_R carries the mask too
    (protocol 4), so a lost event is made good within a heartbeat period."""
    mask: int
    names: list
    ended: int | None
