"""Liveness: heartbeat settings per resource class, and the engine's timers.

Defaults 1 s and 5 s, as MAVLink's heartbeat. `sweep()` applies the rules: a session expires
when its heartbeat is late AND its runtime has no connection (blueprint 2.3); late with a
connection up, it is suspended until a heartbeat returns (S3). Credential expiry and
revocation end sessions too (`authorizer.still_valid`, re-asked when the store changed or the
credential's time ran out). A heartbeat may carry `busy_ms` (faults.md 18: a long but healthy
operation): until the next heartbeat the session is late only after max(timeout, busy_ms),
busy_ms bounded by the engine's maximum. `board_heartbeats()` renews every lease on each board
with one frame per interval, and compares the board's grant count with the engine's sessions.
Heartbeat timing uses the engine's monotonic clock only; credential times are wall-clock
seconds by definition.
"""

import asyncio
import logging

from capwarden.engine.registry import LIVE
from capwarden.errors import DeviceError, LinkError

log = logging.getLogger("capwarden.engine")

DEFAULT = (1000, 5000)
MAX_BUSY_MS = 60000     # default bound of a runtime's busy marker (Heartbeat busy_ms, faults.md 18)


class LivenessPolicy:
    def __init__(self, per_class=None, default=DEFAULT):
        self.default = default
        self.per_class = dict(per_class or {})
        for cls, (interval, timeout) in list(self.per_class.items()) + [("default", default)]:
            if not (50 <= interval < timeout <= 600000):
                raise ValueError("liveness for %s: need 50 <= interval < timeout <= 600000 ms" % cls)

    def for_class(self, cls):
        return self.per_class.get(cls, self.default)

    @staticmethod
    def parse(items):
        """['motor=500/2000', 'default=1000/5000'] -> LivenessPolicy. Raises ValueError."""
        per = {}
        for it in items or ():
            cls, sep, rest = it.partition("=")
            a, sep2, b = rest.partition("/")
            if not sep or not sep2 or not a.isdigit() or not b.isdigit():
                raise ValueError("--liveness takes CLASS=INTERVAL_MS/TIMEOUT_MS, e.g. motor=500/2000 (got %r)" % it)
            per[cls] = (int(a), int(b))
        default = per.pop("default", DEFAULT)
        return LivenessPolicy(per, default)


async def board_heartbeats(engine):
    # One frame per board per interval renews every lease on it (not one per session). Boards
    # are served concurrently, so a board that does not answer delays no other board's leases.
    while True:
        await asyncio.gather(*(_board_tick(engine, h) for h in engine.registry.boards.values()))
        await asyncio.sleep(engine.board_heartbeat_ms / 1000.0)


async def _board_tick(engine, h):
    # First end what the engine no longer tracks (a release the board did not answer): the
    # heartbeat below would otherwise renew it.
    for token in list(h.retired):
        try:
            await h.board.end_session(token)
            h.retired.discard(token)
        except (DeviceError, LinkError):
            return
    h.hb_seq += 1
    try:
        r = await h.board.heartbeat(h.hb_seq)
    except (DeviceError, LinkError):
        return
    # The heartbeat renews every lease on the board: a grant the engine does not know of must
    # not live on. The board's count says when the tables differ; they are compared at once.
    if isinstance(r, dict) and "grants" in r:
        engine.check_grant_count(h, r["grants"])


async def run(engine):
    while True:
        await asyncio.sleep(engine.tick_s)
        try:
            await sweep(engine)
        except Exception:  # a bug in one sweep must not stop liveness for good
            log.exception("liveness sweep failed")


async def sweep(engine):
    """Apply the rules once, at the engine's clocks' current time."""
    now = engine.clock()
    wall = int(engine.wall())
    auth = engine.authorizer
    auth.refresh(wall)
    for s in engine.registry.live():
        if s.checked_generation != auth.generation or wall >= s.credential_ref["ends_at"]:
            # Re-check only when something changed (a revocation, a key) or time ran out.
            s.checked_generation = auth.generation
            why = auth.still_valid(s.credential_ref, wall)
            if why is not None:
                await engine.terminate(s, why)
                continue
        # A busy marker (Heartbeat busy_ms, bounded by the engine) stretches the timeout once.
        late = (now - s.last_hb_mono) * 1000 > max(s.timeout_ms, s.busy_ms)
        if not late or s.state not in LIVE:
            continue
        rt = engine.registry.runtime(s.runtime_id)
        if rt is None or not rt.connected:
            await engine.terminate(s, "heartbeat_timeout")       # AND rule: both conditions
        elif not s.suspended:
            await engine.set_suspended(s, True, "heartbeat_missed")
