"""The engine's side of its boards: their events, link loss, orphan grants, reconciliation.

Every grant on a board is owned by a live engine session within one board heartbeat: the
engine's one heartbeat renews every lease on the board, so a grant nobody here owns would
otherwise live on. Three ways keep the tables equal: board events (a grant ended, a resource
gone, a reboot, an OrphanGrant answered for a request no longer pending), the grant count in
every HEARTBEAT_R (`check_grant_count`), and `reconcile`, which reads the board's table. A
board that stops answering ends its sessions (`link_down`); when it answers again it is
reconciled. Functions take the Engine, as liveness.py and handover.py do.
"""

import asyncio
import logging

from capshared.limits import MODES_EXCLUSIVE
from capshared.names import mode_bits
from capwarden.engine import boardconfig
from capwarden.engine.registry import LIVE
from capwarden.errors import DeviceError, LinkError
from capwarden.link import Failsafe, GrantEnded, LinkDown, LinkUp, ManualOverride, OrphanGrant, Reset, ResourceEvent

log = logging.getLogger("capwarden.engine")


async def on_event(engine, h, ev):
    if isinstance(ev, GrantEnded):
        for s in engine.registry.on_board(h, ev.res):
            if s.token == ev.session and s.epoch == ev.epoch:
                reason = {"removed": "resource_removed", "fault": "resource_fault",
                          "override": "manual_override"}.get(ev.reason, ev.reason)
                await engine.terminate(s, reason)
    elif isinstance(ev, ResourceEvent) and ev.state != "present":
        for s in engine.registry.on_board(h, ev.res):
            await engine.terminate(s, "resource_removed" if ev.state == "absent" else "resource_fault")
    elif isinstance(ev, Reset):
        h.ring_next = 1                        # the ring is in the board's RAM: a reboot empties it
        for s in engine.registry.on_board(h):
            if s.state == "creating":
                await engine.cancel(s)
            else:
                await engine.terminate(s, "board_reset")
        await boardconfig.reapply(engine, h)
    elif isinstance(ev, OrphanGrant):
        await orphan(engine, h, ev)
    elif isinstance(ev, LinkDown):
        await link_down(engine, h, ev.why)
    elif isinstance(ev, LinkUp):
        if h.down:
            log.warning("board %s answers again (%s): comparing its grants with the engine's sessions",
                        h.name, ev.why)
            engine.audit.record("board", "up", "link_up", board=h.name, detail=ev.why[:200])
        h.down = None
        await reconcile(engine, h)
    elif isinstance(ev, Failsafe):
        await reconcile(engine, h)
        await read_ring(engine, h)
    elif isinstance(ev, ManualOverride):
        await manual_override(engine, h, ev)


async def manual_override(engine, h, ev):
    """The board's manual override (EV_OVERRIDE, or a HEARTBEAT_R's mask when that event was
    lost: ev.ended None): it took every exclusive grant of those resources itself (each reported
    by EV_GRANT_ENDED, reason override). Audited; an exclusive session still live on one of them
    (its event lost) ends with the same reason."""
    engine.audit.record("board", "override_on" if ev.mask else "override_off", "manual_override", board=h.name,
                        resources=ev.names, ended=ev.ended,
                        detail=None if ev.ended is not None else "seen in a heartbeat answer: EV_OVERRIDE was lost")
    for s in engine.registry.on_board(h):
        if s.state in LIVE and ev.mask >> s.res & 1 and mode_bits([s.access_mode]) & MODES_EXCLUSIVE:
            await engine.terminate(s, "manual_override")
    if ev.ended != 0:
        await read_ring(engine, h)     # what the board did, in its own record (unknown: read it)


async def read_ring(engine, h):
    """After a failsafe, the board's own record of what it did while the host was away (its
    audit ring, faults.md 70) goes into the engine's audit log, entry by entry, from where the
    last read stopped. Entries the ring overwrote before they were read are counted."""
    try:
        ring = await h.board.audit_ring(h.ring_next)
    except (DeviceError, LinkError) as exc:
        log.warning("board %s: its audit ring could not be read after a failsafe: %s", h.name, exc)
        return
    if ring.lost:
        engine.audit.record("board_ring", "lost", "ring_overwritten", board=h.name, entries=ring.lost)
    tokens = {s.token: s.session_id for s in engine.registry.on_board(h)}
    for e in ring.entries:
        engine.audit.record("board_ring", e.kind, e.reason, board=h.name, boot_id=h.board.info.boot_id,
                            board_seq=e.seq, resource=e.name, session=tokens.get(e.session), epoch=e.epoch,
                            board_ms=e.t_ms)
        h.ring_next = e.seq + 1


async def link_down(engine, h, why):
    """The board stopped answering (its requests ran out of retries, or its port closed).

    Its sessions end with board_unreachable: by the time the link's retries are spent the
    board has heard nothing for about its lease, and its own failsafe drives the resources
    safe; a session kept "active" would promise control the runtime no longer has. Their
    tokens are retired, so a board that only lost its way back is told to end them before
    any heartbeat could renew them. New requests are refused at once (E_DEVICE_UNREACHABLE)
    until the board answers again; then its grants are reconciled."""
    if h.down:
        return
    h.down = why or "the link is down"
    ended = [s for s in engine.registry.on_board(h) if s.state in LIVE]
    log.warning("board %s unreachable (%s): ending its %d session(s) with board_unreachable; the board's "
                "lease failsafe makes its resources safe", h.name, why, len(ended))
    engine.audit.record("board", "down", "board_unreachable", board=h.name, sessions=len(ended), detail=why[:200])
    for s in ended:
        await engine.terminate(s, "board_unreachable")


async def orphan(engine, h, ev):
    """A grant the board made for a request the host no longer waits for (a late duplicate of
    an ACQUIRE or HANDOVER). Kept only if a live session owns exactly that token and epoch."""
    owner = next((s for s in engine.registry.on_board(h, ev.res) if s.token == ev.session), None)
    while owner is not None and owner.state == "creating":
        await asyncio.sleep(engine.tick_s)   # its own answer is being settled (a handover read back)
    if owner is not None and owner.state in LIVE and owner.epoch == ev.epoch:
        return
    log.warning("board %s: grant on %s for board token %d epoch %d has no session here: releasing it",
                h.name, ev.name, ev.session, ev.epoch)
    engine.audit.record("orphan", "released", "orphan_grant", board=h.name, res=ev.res, epoch=ev.epoch)
    if owner is not None and owner.state in LIVE:
        # The token is a live session's (another epoch): release that grant only, never END_SESSION.
        try:
            await h.board.release(ev.res, ev.session, ev.epoch)
        except (DeviceError, LinkError):
            pass
    else:
        await engine.release_on_board(h, ev.res, ev.session, ev.epoch)


def check_grant_count(engine, h, board_count):
    """After a board heartbeat: the board's grant count against the grants the engine believes
    it holds. Outside what in-flight requests explain, that board is reconciled at once."""
    live = unsure = 0
    for s in engine.registry.on_board(h):
        if s.state in LIVE:
            live += 1
        elif s.state in ("creating", "terminating"):
            unsure += 1                         # an acquire or a release under way
    if live <= board_count <= live + unsure + len(h.retired):
        return False
    if not h.reconcile_lock.locked():          # one already running is checked by the next beat
        log.info("board %s holds %d grant(s), the engine's sessions %d: reconciling", h.name, board_count, live)
        asyncio.ensure_future(reconcile(engine, h))
    return True


async def reconcile(engine, h):
    """Compare the engine's sessions with the board's grant table (at start, when the link
    returns, after a failsafe, and when a heartbeat's grant count disagrees): sessions whose
    grant the board no longer holds end (lease_expired), grants the board holds for no session
    are released (faults.md 16, 30). Never runs twice at once on one board."""
    async with h.reconcile_lock:
        await _reconcile(engine, h)


async def _reconcile(engine, h):
    for r in list(h.board.info.resources):
        # Only sessions active before the table is read, still active with the same epoch
        # after, can be missing from it: one granted meanwhile is not judged by an older table.
        before = {s: s.epoch for s in engine.registry.on_board(h, r.index)
                  if s.state == "active" and s.handover is None}
        try:
            held = await h.board.grants(r.index)
        except LinkError:
            return
        except DeviceError:
            continue
        pairs = {(t, e) for t, e, _m in held}
        for s, epoch in before.items():
            if s.state == "active" and s.handover is None and s.epoch == epoch and (s.token, epoch) not in pairs:
                await engine.terminate(s, "lease_expired")
        # Every session still registered counts as an owner, `creating` ones included: their
        # grant may be on the board with the answer still on its way.
        known = {s.token for s in engine.registry.on_board(h, r.index)}
        for token, epoch, _m in held:
            if token not in known:
                log.warning("board %s: grant on %s for board token %d has no session here: releasing it",
                            h.name, r.name, token)
                await engine.release_on_board(h, r.index, token, epoch)
