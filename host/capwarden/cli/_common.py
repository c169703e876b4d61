"""Helpers shared by the board commands (sim, ping, flash)."""

import asyncio
import contextlib
import sys


def err(text):
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def board_port(port, heapsize=None, quiet=False):
    """Yield a device address: `port` itself, or a fresh virtual board's pty when port is 'sim'."""
    if port != "sim":
        yield port
        return
    from capwarden.sim import DEFAULT_HEAP, VirtualBoard

    vb = VirtualBoard(heapsize=heapsize or DEFAULT_HEAP, progress=None if quiet else err)
    vb.start()
    try:
        yield vb.port
    finally:
        vb.stop()


def run(coro):
    return asyncio.run(coro)
