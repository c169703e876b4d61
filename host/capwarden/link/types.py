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
