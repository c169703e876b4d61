"""A fake board with a real grant table, for engine unit tests with injected clocks.

It answers what the engine asks of `capwarden.link.Board` (acquire, release, heartbeat with the
grant count, GRANTS, END_SESSION, actuate, suspend), keeps grants by (resource, token, epoch),
and lets a test hold an acquire at a gate (a request queued with wait_ms), plant a grant the
engine does not know of, or emit a link event to the engine.
"""

import asyncio

from capwarden.errors import DeviceError
from capwarden.link.types import BoardInfo, Grant, ResourceInfo


class TableBoard:
    def __init__(self):
        self.info = BoardInfo("sim", "0.1.0", 1, 1, 256, 0, [
            ResourceInfo(0, "gps", "gps", ["read"], "present"),
            ResourceInfo(1, "motor_left", "motor", ["read", "write"], "present")])
        self.up = True
        self.table = []          # [(res, token, epoch)]
        self.epoch = 0
        self.calls = []
        self.gate = None         # a future: acquire waits for it after granting (answer in flight)
        self.wait_gate = None    # a future: acquire waits for it before granting (queued)
        self.grants_gate = None  # a future: GRANTS waits for it
        self.handover_gate = None  # a future: HANDOVER waits for it after moving the grant
        self.grants_running = 0
        self.grants_most = 0
        self._subscribers = []

    # ---- what a test does -----------------------------------------------------------------
    def plant(self, res, token):
        """A grant the engine never asked for (a late duplicate ACQUIRE, another host)."""
        self.epoch += 1
        self.table.append((res, token, self.epoch))
        return self.epoch

    def emit(self, event):
        for cb in list(self._subscribers):
            cb(event)

    def held(self, res=None):
        return [(r, t, e) for r, t, e in self.table if res is None or r == res]

    def _new_grant(self, res, session, modes, lease_ms):
        self.epoch += 1
        self.table.append((res, session, self.epoch))
        return Grant(res, modes, session, self.epoch, lease_ms)

    # ---- the Board interface ----------------------------------------------------------------
    def subscribe(self, cb):
        self._subscribers.append(cb)

    async def acquire(self, res, modes, session, lease_ms, wait_ms=0):
        self.calls.append(("acquire", session))
        if self.wait_gate is not None:
            await self.wait_gate
        grant = self._new_grant(res, session, modes, lease_ms)
        if self.gate is not None:
            await self.gate
        return grant

    async def release(self, res, session, epoch):
        self.calls.append(("release", res, session, epoch))
        if (res, session, epoch) not in self.table:
            raise DeviceError("E_DEV_STALE_EPOCH", "no such grant")
        self.table.remove((res, session, epoch))

    async def end_session(self, session):
        self.calls.append(("end_session", session))
        before = len(self.table)
        self.table = [g for g in self.table if g[1] != session]
        return before - len(self.table)

    async def heartbeat(self, seq):
        return {"hb_seq": seq, "grants": len(self.table), "failsafes": 0}

    async def grants(self, res):
        self.grants_running += 1
        self.grants_most = max(self.grants_most, self.grants_running)
        try:
            if self.grants_gate is not None:
                await self.grants_gate
            return [(t, e, 2) for r, t, e in self.table if r == res]
        finally:
            self.grants_running -= 1

    async def suspend(self, session, on):
        self.calls.append(("suspend", session, on))

    async def actuate(self, res, session, epoch, op, args=b""):
        self.calls.append(("actuate", res, session, epoch, op))
        if (res, session, epoch) not in self.table:
            raise DeviceError("E_DEV_STALE_EPOCH", "no such grant")
        return b""

    async def handover(self, res, from_session, from_epoch, to_session, modes, lease_ms):
        self.calls.append(("handover", res, from_session, to_session))
        self.table.remove((res, from_session, from_epoch))
        grant = self._new_grant(res, to_session, modes, lease_ms)
        if self.handover_gate is not None:
            await self.handover_gate
        return grant


async def settle(n=5):
    """Let tasks the engine scheduled (board events, pushes) run."""
    for _ in range(n):
        await asyncio.sleep(0)


class Clocks:
    def __init__(self):
        import time

        self.mono = 1000.0
        self.wall = float(int(time.time()))   # the World's credentials were made against real time


class Rig:
    """An Engine on a TableBoard with injected clocks, a real store (World) and a real audit
    log file; runtime rtA connected, its pushes collected."""

    def __init__(self, folder, leeway=0, **engine_kw):
        from capwarden.engine.audit import AuditLog
        from capwarden.engine.authorizer import StoreAuthorizer
        from capwarden.engine.engine import Engine
        from capwarden.engine.liveness import LivenessPolicy
        from enginerig import World
        import os

        self.w = World(folder)
        self.clocks = Clocks()
        self.board = TableBoard()
        self.audit_path = os.path.join(folder, "audit.log")
        engine_kw.setdefault("liveness", LivenessPolicy(default=(1000, 5000)))
        self.e = Engine(StoreAuthorizer(self.w.store, leeway=leeway), {"sim": self.board}, AuditLog(self.audit_path),
                        clock=lambda: self.clocks.mono, wall=lambda: self.clocks.wall, **engine_kw)
        self.pushes = []
        self.replies = []
        self.e.add_runtime("rtA")
        self.e.add_runtime("rtB")
        self.e.connected("rtA", self.send)
        self.e.connected("rtB", self.send)

    async def send(self, msg):
        self.pushes.append(msg)

    @property
    def handle(self):
        return self.e.registry.boards["sim"]

    async def request(self, rid, mtype, body):
        from capwarden.engine import protocol

        reply = await self.e.handle(rid, protocol.make(mtype, body, rid))
        self.replies.append(reply)
        return reply

    async def acquire(self, res="gps", mode="read", fay=None, cred=None, wait_ms=0, rid="rtA"):
        w = self.w
        body = {"fay_id": fay or w.A, "resource_id": w.res(res), "access_mode": mode,
                "credential": cred or w.cred(w.dA)}
        if wait_ms:
            body["wait_ms"] = wait_ms
        return await self.request(rid, "AuthRequest", body)

    async def queued(self, res="motor_left", mode="write", wait_ms=5000, **kw):
        """An AuthRequest (acquire's arguments) the board holds queued until `board.wait_gate`
        is set: the task of its reply, started and settled."""
        self.board.wait_gate = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(self.acquire(res, mode, wait_ms=wait_ms, **kw))
        await settle()
        return waiting

    async def offered(self, res="motor_left", mode="write"):
        """rtB's HandoverRequest of `res` for Fay B, started and settled (the holder is being
        asked): the task of its reply."""
        w = self.w
        task = asyncio.ensure_future(self.request("rtB", "HandoverRequest", {
            "resource_id": w.res(res), "to_fay_id": w.B, "access_mode": mode, "credential": w.cred(w.dB),
            "timeout_ms": 5000}))
        await settle()
        return task

    def session(self, reply):
        assert reply["body"]["result"] in ("granted", "completed"), reply
        return self.e.sessions[reply["body"]["session_id"]]

    def audit(self):
        from capwarden.engine import audit

        entries, problem = audit.read(self.audit_path)
        assert problem is None, problem
        return entries

    def revoke(self, did):
        """Revoke a stored descriptor in this process, as `capwarden revocations import` would."""
        from capwarden.credentials.issue import sign_revocation

        now = int(self.clocks.wall)
        self.e.authorizer.terminal.import_revocation(sign_revocation(self.w.key, did, now), now)


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 60))
    finally:
        loop.close()
