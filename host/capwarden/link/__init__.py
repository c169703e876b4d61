"""The host's link to boards: transports chosen by URL, and the async Board client."""

from capwarden.errors import LinkTimeout
from capwarden.link.board import Board
from capwarden.link.events import (Failsafe, GrantEnded, LinkDown, LinkUp, ManualOverride, OrphanGrant, Reset,
                                   ResourceEvent)
from capwarden.link.transport import FdTransport, SerialTransport, Transport, open_transport
from capwarden.link.types import BoardInfo, Grant, ResourceInfo


async def open_board(url, timeout=1.0, retries=2, key=None, **transport_kw):
    """Open the board at `url` (any pyserial URL, a pty path, or ble://ADDRESS) with its link
    key (default: the engine's key for `url`, linkauth.key_for). Returns Board. Raises
    StoreError when there is no key for it, LinkError."""
    missing = None
    looked_up = key is None
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
        try:
            await board.open()
        except LinkTimeout:
            # A rekey whose answer was lost: the board may hold the staged key (it says
            # which in its ANNOUNCE); then that key becomes the engine's.
            nxt = _staged_for(url, board.announced_key_id) if looked_up else None
            if nxt is None:
                raise
            from capwarden.link.linkauth import HostAuth, promote

            await board.transport.close()
            board.auth = HostAuth(nxt)
            await board.open()
            promote(url)
    except BaseException:
        await board.transport.close()
        raise
    return board


async def rekey(board, url, new_key=None):
    """Give the board at `url` (open as `board`) a new link key, the one safe way: the new key
    is staged in the store before the board is asked, and promoted once it answered (a lost
    answer is finished by the next open_board, by the key id the board announces).
    Returns (old, new) LinkKeys. Raises LinkError, StoreError."""
    from capwarden.link import linkauth

    old = board.auth.key
    new = new_key or linkauth.generate()
    linkauth.stage(url, new)
    await board.rekey(new)
    linkauth.promote(url)
    return old, new


async def opens_session(url, key, timeout=0.3):
    """Whether a host holding `key` gets an authenticated session from the board at `url`
    (after a rekey, the old key must not). Raises LinkError when the port cannot be opened."""
    board = Board(open_transport(url), timeout=timeout, retries=1, key=key)
    try:
        await board.open()
        return True
    except LinkTimeout:
        return False
    finally:
        await board.transport.close()


def _staged_for(url, key_id):
    from capwarden.link.linkauth import staged

    nxt = staged(url)
    return nxt if nxt is not None and key_id == nxt.key_id else None


__all__ = ["Board", "BoardInfo", "Grant", "ResourceInfo", "open_board", "rekey", "opens_session", "open_transport", "Transport",
           "SerialTransport", "FdTransport", "ResourceEvent", "GrantEnded", "OrphanGrant", "Failsafe", "Reset", "LinkDown", "LinkUp",
           "ManualOverride"]
