# The whole agent, driven through an in-memory line under MicroPython: the frame path
# allocates nothing, and the heap stays flat over 10,000 lock/heartbeat/release cycles with
# 16 grants held on 8 resources in a 64 KB heap (issue 4, item 9).
import gc
import sys

import board
import micropython
from capagent.agent import Agent
from capagent.link import Link
from capshared import wire as W
from capshared.framing import FRAME, FrameDecoder, FrameEncoder
from capshared.limits import MODE_READ, MODE_WRITE


class Clock:
    def __init__(self):
        self.t = 5000

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, d):
        return a + d


class Line:
    # Both ends of the cable in preallocated buffers: the test writes requests into `buf`,
    # the agent's answers are decoded as they are written.
    def __init__(self):
        self.buf = bytearray(512)
        self.n = 0
        self.i = 0
        self.dec = FrameDecoder()
        self.frames = 0
        self.errors = 0
        self.last_mid = 0
        self.last_error = 0
        self.info_state = -1

    def readinto(self, b, n):
        b[0] = self.buf[self.i]
        self.i += 1
        return 1

    def write(self, buf, n):
        d = self.dec
        for k in range(n):
            if d.feed(buf[k]) == FRAME:
                self.frames += 1
                self.last_mid = d.mid()
                if d.mid() == W.ERROR:
                    self.errors += 1
                    self.last_error = d.u8(0)   # the error code, before its u32 detail
                elif d.mid() == W.RES_INFO_R:
                    self.info_state = d.u8(3)   # index, class, modes, state
        return n


class MemLink(Link):
    def __init__(self, line):
        Link.__init__(self, line, line, sys.stdin)
        self.line = line

    def wait(self, timeout_ms):
        return self.line.i < self.line.n


class Rig:
    def __init__(self, line=None):
        self.line = line or Line()
        self.clock = Clock()
        self.agent = Agent(board, MemLink(self.line), self.clock)
        self.enc = FrameEncoder()
        self.rid = 0

    def begin(self, mid):
        self.rid = self.rid % 60000 + 1
        self.enc.begin(mid, self.rid)
        return self.enc

    def send(self):
        line = self.line
        n = self.enc.finish()
        w = self.enc.wire
        line.i = 0
        for k in range(n):
            line.buf[k] = w[k]
        line.n = n
        self.clock.t += 1
        self.agent.step(0)
        return line.last_mid

    def acquire(self, res, modes, session, lease=60000, wait=0):
        e = self.begin(W.ACQUIRE)
        e.u8(res)
        e.u8(modes)
        e.u32(session)
        e.u32(lease)
        e.u32(wait)
        return self.send()

    def release(self, res, session):
        g = self.agent.control.g
        e = self.begin(W.RELEASE)
        e.u8(res)
        e.u32(session)
        e.u32(g.epoch[g.find(res, session)])
        return self.send()

    def heartbeat(self, seq):
        e = self.begin(W.HEARTBEAT)
        e.u32(seq)
        return self.send()

    def actuate(self, res, session, op, a0, a1):
        g = self.agent.control.g
        e = self.begin(W.ACTUATE)
        e.u8(res)
        e.u32(session)
        e.u32(g.epoch[g.find(res, session)])
        e.u8(op)
        e.u8(a0)
        e.u8(a1)
        return self.send()


# Grants held per resource name, and the mode: constants in the .mpy, so building them costs
# the heap nothing (this runs in a 64 KB heap already fragmented by the agent's tables, where
# the test's own lists and tuples once failed for want of 72 bytes, depending on the length of
# the checkout's path).
_HOLD = (("gps", 4), ("imu", 4), ("camera", 3), ("sdcard", 2), ("led", 0), ("motor_left", 1), ("motor_right", 1))


def _hold_fifteen(rig):
    # 15 grants spread over 7 resources; the 16th is taken and given back by each cycle.
    gc.collect()
    resources = rig.agent.resources
    assert len(resources) == 8
    s = 100
    gimbal = -1
    for k in range(8):
        name = resources[k].name
        if name == "gimbal":
            gimbal = k
        for want, count in _HOLD:
            if want == name:
                mode = MODE_WRITE if name[:5] == "motor" else MODE_READ
                for _ in range(count):
                    s += 1
                    assert rig.acquire(k, mode, s) == W.ACQUIRE_R
    assert rig.agent.control.g.count() == 15 and gimbal >= 0
    return gimbal


def _cycle(rig, res, k):
    rig.acquire(res, MODE_WRITE, 7)
    rig.heartbeat(k)
    rig.release(res, 7)


def test_frame_path_allocates_nothing():
    rig = Rig()
    gim = _hold_fifteen(rig)
    for k in range(1, 20):  # warm up: first calls may intern names or cache poll state
        _cycle(rig, gim, k)
    before = rig.line.frames
    micropython.heap_lock()
    try:
        for k in range(20, 520):
            _cycle(rig, gim, k)
    finally:
        micropython.heap_unlock()
    assert rig.agent.errors == 0 and rig.line.errors == 0
    assert rig.line.frames - before == 3 * 500


def test_actuation_path_allocates_nothing():
    rig = Rig()
    names = [r.name for r in rig.agent.resources]
    ml = names.index("motor_left")
    assert rig.acquire(ml, MODE_WRITE, 5) == W.ACQUIRE_R
    rig.actuate(ml, 5, 1, 100, 0)
    micropython.heap_lock()
    try:
        for k in range(300):
            rig.actuate(ml, 5, 1, k & 0xFF, 0)
    finally:
        micropython.heap_unlock()
    assert rig.line.errors == 0 and rig.agent.resources[ml].speed == 299 & 0xFF


def test_64k_sixteen_grants_and_flat_heap_over_10000_cycles():
    gc.collect()
    rig = Rig()
    gim = _hold_fifteen(rig)
    rig.acquire(gim, MODE_WRITE, 7)
    assert rig.agent.control.g.count() == 16  # 8 resources, 16 concurrent grants
    rig.release(gim, 7)
    for k in range(1, 50):
        _cycle(rig, gim, k)
    gc.collect()
    before = gc.mem_alloc()
    for k in range(50, 10050):
        _cycle(rig, gim, k)
    gc.collect()
    after = gc.mem_alloc()
    assert rig.agent.errors == 0 and rig.line.errors == 0
    assert after <= before, "heap grew from %d to %d" % (before, after)
    print("heap in use with 15 grants held:", after, "free:", gc.mem_free())



def _issue9_cycle(rig, res, k):
    # The paths issue 9 added, once each: suspend and resume, a lease lost into the failsafe
    # delay window and a heartbeat that closes it, a lease lost for good (failsafe, audit ring),
    # reading the audit ring, and a late copy of an ACQUIRE refused (the request-id window).
    rig.acquire(res, MODE_WRITE, 7, lease=100)
    for on in (1, 0):
        e = rig.begin(W.SUSPEND)
        e.u32(7)
        e.u8(on)
        rig.send()
    rig.clock.t += 150
    rig.agent.step(0)
    rig.heartbeat(2 * k)
    rig.clock.t += 150
    rig.agent.step(0)
    rig.clock.t += 150
    rig.agent.step(0)
    e = rig.begin(W.AUDIT)
    e.u32(1)
    rig.send()
    rig.acquire(res, MODE_WRITE, 7, lease=100)
    rid = rig.rid
    rig.release(res, 7)
    rig.heartbeat(2 * k + 1)
    for _ in range(4):
        e = rig.begin(W.CONFIG)
        e.u8(W.CFG_LOCK_DELAY_MS)
        e.u32(0)
        rig.send()
    top = rig.rid
    rig.rid = rid - 1
    rig.acquire(res, MODE_WRITE, 7, lease=100)   # refused: E_DEV_STALE_REQUEST
    rig.rid = top


def test_64k_issue9_paths_flat_heap_over_10000_cycles():
    gc.collect()
    rig = Rig()
    gim = _hold_fifteen(rig)
    e = rig.begin(W.CONFIG)
    e.u8(W.CFG_FAILSAFE_DELAY_MS)
    e.u32(100)
    rig.send()
    for k in range(1, 30):
        _issue9_cycle(rig, gim, k)
    errors = rig.line.errors
    gc.collect()
    before = gc.mem_alloc()
    for k in range(30, 630):                    # 600 rounds of 17 frames: over 10,000 cycles
        _issue9_cycle(rig, gim, k)
    gc.collect()
    after = gc.mem_alloc()
    assert rig.agent.errors == 0
    assert rig.line.errors - errors == 600      # exactly the late copies
    assert after <= before, "heap grew from %d to %d" % (before, after)
    print("heap in use with 15 grants held:", after, "free:", gc.mem_free())
