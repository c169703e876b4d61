"""The host's link to boards: transports chosen by URL, and the async Board client."""

from capwarden.link.board import Board
from capwarden.link.events import Failsafe, GrantEnded, LinkDown, LinkUp, OrphanGrant, Reset, ResourceEvent
from capwarden.link.transport import FdTransport, SerialTransport, Transport, open_transport
from capwarden.link.types import BoardInfo, Grant, ResourceInfo


async def open_board(url, timeout=1.0, retries=2, key=None, **transport_kw):
    """Open the board at `url` (any pyserial URL, a pty path, or ble://ADDRESS) with its link
    key (default: the engine's key for `url`, linkauth.key_for). Returns Board. Raises
    StoreError when there is no key for it, LinkError."""
    missing = None
    if key is None:
        from capwarden.errors import StoreError
        from capwarden.link.linkauth import key_for

        try:
            key = key_for(url)
        except StoreError as exc:
            missing = exc
    board = Board(open_transport(url, **transport_kw), timeout=timeout, retries=retries, key=key)
    if missing is not None:
        # A port that cannot be opened is the first thing to say; then that it has no key.
        try:
            await board.transport.open()
        finally:
            await board.transport.close()
        raise missing
    try:
        await board.open()
    except BaseException:
        await board.transport.close()
        raise
    return board


__all__ = ["Board", "BoardInfo", "Grant", "ResourceInfo", "open_board", "open_transport", "Transport",
           "SerialTransport", "FdTransport", "ResourceEvent", "GrantEnded", "OrphanGrant", "Failsafe", "Reset", "LinkDown", "LinkUp"]
