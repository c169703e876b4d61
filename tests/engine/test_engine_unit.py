"""The engine with injected clocks and a fake board: timing edges without waiting.

faults.md 13 (the exact timeout boundary, both orders of the AND rule), 19 (jitter near the
timeout), 25 (the wall clock stepping backward and forward).
"""

import asyncio

import pytest

from capwarden.engine import protocol
from capwarden.engine.audit import AuditLog
from capwarden.engine.engine import Engine
from capwarden.engine.liveness import LivenessPolicy
from capwarden.link.types import BoardInfo, Grant, ResourceInfo
from conftest import World


class FakeBoard:
    def __init__(self):
        self.info = BoardInfo("sim", "0.1.0", 1, 1, 256, 0, [ResourceInfo(0, "gps", "gps", ["read"], "present")])
        self.calls = []
        self.epoch = 0

    def subscribe(self, cb):
        pass

    async def acquire(self, res, modes, session, lease_ms, wait_ms=0):
        self.epoch += 1
        self.calls.append(("acquire", session))
        return Grant(res, modes, session, self.epoch, lease_ms)

    async def release(self, res, session, epoch):
        self.calls.append(("release", session))

    async def suspend(self, session, on):
        self.calls.append(("suspend", session, on))

    async def heartbeat(self, seq):
        pass


class Clocks:
    def __init__(self):
        self.mono = 1000.0
        import time

        self.wall = float(int(time.time()))  # credentials in the World were made against real time


@pytest.fixture
def rig(tmp_path):
    w = World(str(tmp_path))
    clocks = Clocks()
    board = FakeBoard()
    e = Engine(w.t, {"sim": board}, AuditLog(None), liveness=LivenessPolicy(default=(1000, 5000)),
               clock=lambda: clocks.mono, wall=lambda: clocks.wall)
    pushes = []

    async def send(msg):
        pushes.append(msg)

    e.add_runtime("rtA")
    e.connected("rtA", send)
    w.now = int(clocks.wall)
    return w, e, clocks, board, send, pushes


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def acquire(w, e):
    did = w.descriptor(w.A, [w.grant("gps", "read")], seconds=10 ** 6)
    msg = protocol.make("AuthRequest", {"fay_id": w.A, "resource_id": w.res("gps"), "access_mode": "read",
                                        "credential": w.cred(did)}, "rtA")
    r = await e.handle("rtA", msg)
    assert r["body"]["result"] == "granted", r
    return e.sessions[r["body"]["session_id"]]


async def heartbeat(e, s):
    await e.handle("rtA", protocol.make("Heartbeat", {"session_ids": [s.session_id]}, "rtA"))


def test_fault_13_boundary_and_both_orders_of_the_and_rule(rig):
    w, e, c, board, send, pushes = rig

    async def scenario():
        s = await acquire(w, e)
        e.disconnected("rtA", send)           # connection down first
        c.mono += 5.0                         # exactly the timeout: not yet late
        await e.sweep()
        assert s.state == "active"
        c.mono += 0.001                       # one millisecond past: expired
        await e.sweep()
        assert s.state == "terminated"
        e.connected("rtA", send)
        s2 = await acquire(w, e)
        c.mono += 5.001                       # the other order: heartbeat late first...
        await e.sweep()
        assert s2.state == "active" and s2.suspended
        e.disconnected("rtA", send)           # ...then the connection drops: expired
        await e.sweep()
        assert s2.state == "terminated"

    run(scenario())


def test_fault_19_jitter_near_the_timeout_does_not_flap(rig):
    w, e, c, board, send, pushes = rig

    async def scenario():
        s = await acquire(w, e)
        for _ in range(20):
            c.mono += 4.99                    # every beat just inside the timeout
            await e.sweep()
            await heartbeat(e, s)
        assert not any(call[0] == "suspend" for call in board.calls)
        assert s.state == "active" and not s.suspended

    run(scenario())


def test_fault_25_wall_clock_steps_do_not_move_liveness(rig):
    w, e, c, board, send, pushes = rig

    async def scenario():
        s = await acquire(w, e)
        c.wall -= 3600                        # NTP steps the clock back an hour
        c.mono += 1.0
        await e.sweep()
        assert s.state == "active" and not s.suspended
        c.wall += 7200                        # ...and forward two
        c.mono += 1.0
        await e.sweep()
        assert not s.suspended                # still only 2 s of monotonic time since the grant
        c.mono += 3.5
        await e.sweep()
        assert s.suspended                    # 5.5 s monotonic: late

    run(scenario())


def test_suspension_is_told_to_the_board_and_lifted_by_a_heartbeat(rig):
    w, e, c, board, send, pushes = rig

    async def scenario():
        s = await acquire(w, e)
        c.mono += 6
        await e.sweep()
        await asyncio.sleep(0)
        assert ("suspend", s.token, True) in board.calls
        await heartbeat(e, s)
        await asyncio.sleep(0)                # pushes go out as tasks
        assert ("suspend", s.token, False) in board.calls and not s.suspended
        reasons = [p["body"]["reason"] for p in pushes if p["message_type"] == "SessionStateChanged"]
        assert reasons[-2:] == ["heartbeat_missed", "heartbeat_resumed"]

    run(scenario())


def test_every_transition_is_in_the_table():
    from capwarden.engine.sessions import IllegalTransition, Session

    s = Session("fay:x", "rt", "r", "read", 0)
    with pytest.raises(IllegalTransition):
        s.move("handover_pending")
    s.move("active")
    s.move("terminating")
    with pytest.raises(IllegalTransition):
        s.move("active")


def test_runtime_bound_to_its_fays_cannot_act_for_others(tmp_path):
    w = World(str(tmp_path))
    e = Engine(w.t, {"sim": FakeBoard()}, AuditLog(None), fay_bindings={"rtA": {w.A}})
    e.add_runtime("rtA")

    async def scenario():
        own = await e.handle("rtA", protocol.make("AuthRequest", {
            "fay_id": w.A, "resource_id": w.res("gps"), "access_mode": "read", "credential": w.cred(w.dA)}, "rtA"))
        other = await e.handle("rtA", protocol.make("AuthRequest", {
            "fay_id": w.B, "resource_id": w.res("gps"), "access_mode": "read", "credential": w.cred(w.dB)}, "rtA"))
        ft = await e.handle("rtA", protocol.make("FayTerminated", {"fay_id": w.B}, "rtA"))
        return own, other, ft

    own, other, ft = run(scenario())
    assert own["body"]["result"] == "granted"
    assert other["message_type"] == "Error" and other["body"]["error_code"] == "E_PERMISSION_DENIED"
    assert ft["message_type"] == "Error" and ft["body"]["error_code"] == "E_PERMISSION_DENIED"
