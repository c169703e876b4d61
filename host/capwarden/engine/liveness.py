"""Liveness: heartbeat settings per resource class, and the engine's timers.

Defaults 1 s and 5 s, as MAVLink's heartbeat. `sweep()` applies the rules: a session expires
when its heartbeat is late AND its runtime has no connection (blueprint 2.3); late with a
connection up, it is suspended until a heartbeat returns (S3). Credential expiry and
revocation end sessions too. `board_heartbeats()` renews every lease on each board with one
frame per interval. All timing uses the engine's monotonic clock.
"""

import asyncio
import logging
import os

from capwarden.errors import DeviceError, LinkError

DEFAULT = (1000, 5000)


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
    # One frame per board per interval renews every lease on it (not one per session).
    while True:
        for h in engine.boards.values():
            h.hb_seq += 1
            try:
                await h.board.heartbeat(h.hb_seq)
            except (DeviceError, LinkError):
                pass
        await asyncio.sleep(engine.board_heartbeat_ms / 1000.0)


async def run(engine):
    while True:
        await asyncio.sleep(engine.tick_s)
        try:
            await sweep(engine)
        except Exception:  # a bug in one sweep must not stop liveness for good
            logging.getLogger("capwarden.engine").exception("liveness sweep failed")


async def sweep(engine):
    now = engine.clock()
    wall = int(engine.wall())
    _poll_revocations(engine)
    if now >= engine._next_purge:   # converted descriptors go 24 h after they expire
        engine._next_purge = now + 60
        engine.terminal.purge(wall)
    for s in list(engine.sessions.values()):
        if s.state not in ("active", "handover_pending"):
            continue
        if wall >= s.credential_ref["not_after"]:
            await engine._terminate(s, "credential_expired")
            continue
        if engine.terminal.validator._revoked_ref(s.credential_ref):
            await engine._terminate(s, "revoked")
            continue
        late = (now - s.last_hb_mono) * 1000 > s.timeout_ms
        rt = engine.runtimes.get(s.runtime_id)
        up = bool(rt and rt.connections)
        if late and not up:
            await engine._terminate(s, "heartbeat_timeout")      # AND rule: both conditions
        elif late and up and not s.suspended:
            await engine._set_suspended(s, True, "heartbeat_missed")


def _poll_revocations(engine):
    # A revocation imported by another process (capwarden revocations import) is picked up.
    path = engine.terminal.revocations.path
    try:
        m = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return
    if m != engine._revocations_mtime:
        engine._revocations_mtime = m
        engine.terminal.revocations.reload()
