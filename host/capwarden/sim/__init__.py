"""The virtual board: real MicroPython (unix port) on a pty, joined by a fault-injecting cable."""

from capwarden.sim.board import DEFAULT_HEAP, VirtualBoard
from capwarden.sim.cable import TO_BOARD, TO_HOST, VirtualCable

__all__ = ["VirtualBoard", "VirtualCable", "TO_BOARD", "TO_HOST", "DEFAULT_HEAP"]
