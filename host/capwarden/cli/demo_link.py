"""The demo's link steps (issue 12): the board obeys only its engine.

boot_and_rekey: the virtual board boots with a link key of its own; it is replaced over the
authenticated link as `capwarden link rekey` does, and a host still holding the old key gets no
session. stranger: frames a stranger puts on the line while the engine holds a grant are
refused before any handler and counted (STATS bad_tag); the grant stands.
"""

import asyncio
import time

from capwarden.cli.demo import say

REFUSED = ("bad_tag", "replay", "no_key")


def _refused(before, after):
    return {k: after[k] - before[k] for k in REFUSED}


async def boot_and_rekey(heapsize, progress):
    """Start the virtual board (returned, running) and rekey it. The caller stops it."""
    from capwarden.link import open_board, opens_session, rekey
    from capwarden.sim import DEFAULT_HEAP, VirtualBoard

    vb = VirtualBoard(heapsize=heapsize or DEFAULT_HEAP, progress=progress)
    try:
        vb.start()
        b = await open_board(vb.port, timeout=0.5, retries=3)
        try:
            say("the board made its link key when it was flashed: %r (only its key id is ever shown)" % b.auth.key)
            old, new = await rekey(b, vb.port)
            say("capwarden link rekey: the board took %r over the authenticated link, no re-flash" % new)
            before = await b.stats()
        finally:
            await b.close()
        if await opens_session(vb.port, old):
            raise ValueError("a host with the old link key still got a session")
        check = await open_board(vb.port, timeout=0.5, retries=3)
        try:
            refused = _refused(before, await check.stats())
        finally:
            await check.close()
        say("a host still holding the old key says HELLO: no session, %d frames refused (bad tag)"
            % refused["bad_tag"])
    except BaseException:
        vb.stop()
        raise
    return vb


async def stranger(vb, board, resource):
    """Forged frames against the grant the engine holds on `resource` (a board resource name)."""
    from capshared import codec
    from capwarden.sim import TO_BOARD

    res = board.resource_index(resource)
    held = await board.grants(res)
    if not held:
        raise ValueError("no grant on %s to attack" % resource)
    token, epoch, _modes = held[0]
    before = await board.stats()
    # Bytes put on the line itself (the virtual cable), as a stranger wired to it writes them:
    # frames without a valid tag (it has no key), naming the very grant it read off the wire.
    grant = {"res": res, "session": token, "epoch": epoch}
    vb.cable.inject_bytes(TO_BOARD, codec.encode_frame("RELEASE", 60001, grant))
    vb.cable.inject_bytes(TO_BOARD, codec.encode_frame("ACTUATE", 60002, dict(
        grant, op=1, args=(-1000).to_bytes(2, "little", signed=True))))
    say("a stranger on the line sends RELEASE and a full-reverse ACTUATE for the iFay's grant "
        "(board session %d, epoch %d), without the link key" % (token, epoch))
    deadline = time.monotonic() + 10
    while True:
        after = await board.stats()
        refused = _refused(before, after)
        if refused["bad_tag"] >= 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    if refused["bad_tag"] < 2:
        raise ValueError("the board did not count the stranger's frames")
    still = await board.grants(res)
    say("the board dropped both before any handler: bad_tag +%d, replay +%d (STATS, as capwarden ping shows)"
        % (refused["bad_tag"], refused["replay"]))
    say("the iFay's grant stands: %s" % ("; ".join("board session %d, epoch %d" % (t, e) for t, e, _m in still)
                                          or "none"))
