# The whole agent on an in-memory line, for the device tests under MicroPython (mp_agent.py,
# mp_issue9.py). A helper module: mpharness builds it beside a test as it builds the test.
import gc
import sys

from micropython import const

import board
from capagent.agent import Agent
from capagent.link import Link
from capshared import wire as W
from capshared.framing import FRAME, FrameDecoder, FrameEncoder
from capshared.limits import AUTH_SIZE, HEADER_SIZE, MODE_READ, MODE_WRITE
from capshared.linkauth import DIR_TO_BOARD, DIR_TO_HOST, HELLO, PENDING, TAG_SIZE, equal
from fakeclock import Clock

KEY = b"rig-link-key-16b"   # the rig's board key (written to the board's key file)
_NB = const(19)             # HELLO_R's board nonce, a payload offset


# The rig plays the engine with the board's own LinkAuth: a session's midstate is the same on
# both sides, so the rig tags with mac() under the board's midstate and the host's direction,
# and checks the board's tags the same way. A second LinkAuth would cost the 64 KB heap about
# 1.4 KB a board never spends; the two implementations are held to the same bytes elsewhere
# (tests/shared/test_linkauth.py), and the HIL suite runs the engine's own.


class Line:
    # Both ends of the cable in preallocated buffers: the test writes requests into `buf`,
    # the agent's answers are decoded as they are written, and the last one is kept (header and
    # payload) for the test to read.
    def __init__(self):
        self.buf = bytearray(512)
        self.n = 0
        self.i = 0
        self.dec = FrameDecoder()
        self.frames = 0
        self.errors = 0
        self.last_mid = 0
        self.last_error = 0
        self.last = bytearray(128)
        self.last_n = 0
        self.auth = None        # the board's LinkAuth, when it has a key (see above)
        self.rig = None
        self.tag = bytearray(TAG_SIZE)
        self.rx = 0             # the board's last counter accepted
        self.refused = 0        # answers whose tag did not verify, or replayed

    def readinto(self, b, n):
        b[0] = self.buf[self.i]
        self.i += 1
        return 1

    def write(self, buf, n):
        d = self.dec
        for k in range(n):
            if d.feed(buf[k]) == FRAME:
                b = d.buf
                n = d.n - AUTH_SIZE
                if self.auth is not None and b[1] != W.ANNOUNCE:
                    s = self.rig.s
                    c = b[n] | (b[n + 1] << 8) | (b[n + 2] << 16) | (b[n + 3] << 24)
                    t = self.tag
                    self.auth.mac(s, DIR_TO_HOST, c, b, 0, n, t, 0, TAG_SIZE)
                    if b[1] == W.HELLO_R:     # a new session: counters from 1, both ways
                        self.rx = 0
                    if c <= self.rx or not equal(t, 0, b, n + 4, TAG_SIZE):
                        self.refused += 1
                        self.errors += 1
                        continue
                    self.rx = c
                    if b[1] == W.HELLO_R:
                        self.rig.tx = 0
                d.n = n
                self.frames += 1
                self.last_mid = d.mid()
                if d.mid() == W.ERROR:
                    self.errors += 1
                    self.last_error = d.u8(0)   # the error code, before its u32 detail
                for j in range(d.n):
                    self.last[j] = d.buf[j]
                self.last_n = d.n
        return n

    def u8(self, off):
        # A payload byte of the last frame.
        return self.last[4 + off]

    def u32(self, off):
        b = self.last
        o = 4 + off
        return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


class MemLink(Link):
    def __init__(self, line, key=KEY):
        if key is not None:
            with open("link.key", "wb") as f:   # the board's key file, in the test's folder
                f.write(key)
        Link.__init__(self, line, line, sys.stdin, "link.key" if key is not None else "no.key")
        self.line = line

    def wait(self, timeout_ms):
        return self.line.i < self.line.n


class Rig:
    def __init__(self, line=None, key=KEY, hello=True):
        self.line = line or Line()
        self.clock = Clock()
        self.agent = Agent(board, MemLink(self.line, key), self.clock)
        self.enc = FrameEncoder()
        self.rid = 0
        self.nh = bytearray(8)
        # The rig tags in the board's PENDING midstate: the session the board proposed in its
        # last HELLO_R, which it keeps there after taking it as CURRENT (the same bytes).
        self.s = PENDING
        self.tx = 0
        self.line.rig = self
        if key is not None:
            self.line.auth = self.agent.link.auth
        self.auth = self.line.auth
        if hello and key is not None:
            self.begin(W.HELLO)
            assert self.send() == W.HELLO_R

    def begin(self, mid):
        self.rid = self.rid % 60000 + 1
        self.enc.begin(mid, self.rid)
        return self.enc

    def send(self):
        # Seal the frame as the engine does (a HELLO gets a new host nonce first), then feed it.
        line = self.line
        n = self.wire()
        w = self.enc.wire
        line.i = 0
        for k in range(n):
            line.buf[k] = w[k]
        line.n = n
        self.clock.t += 1
        self.agent.step(0)
        return line.last_mid

    def wire(self):
        # The frame begun with begin(), sealed and framed: its wire bytes are self.enc.wire[:n].
        line = self.line
        e = self.enc
        r = e.raw
        c = 0
        a = self.auth
        n0 = e.n
        if r[1] == W.HELLO:
            nh = self.nh
            for i in range(8):
                nh[i] = (nh[i] + 1 + i) & 0xFF     # a new nonce per HELLO (no allocation)
            e.tail(nh, 0, 8)
            if a is not None:
                a.mac(HELLO, DIR_TO_BOARD, 0, r, 0, e.n, r, e.n + 4, TAG_SIZE)
        elif a is not None:
            self.tx += 1
            c = self.tx
            a.mac(self.s, DIR_TO_BOARD, c, r, 0, n0, r, n0 + 4, TAG_SIZE)
        n = e.n
        r[n] = c & 0xFF
        r[n + 1] = (c >> 8) & 0xFF
        r[n + 2] = (c >> 16) & 0xFF
        r[n + 3] = c >> 24
        e.n = n + AUTH_SIZE
        return e.finish()

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
# the heap nothing (the 64 KB tests run in a heap already fragmented by the agent's tables,
# where the test's own lists and tuples once failed for want of 72 bytes).
_HOLD = (("gps", 4), ("imu", 4), ("camera", 3), ("sdcard", 2), ("led", 0), ("motor_left", 1), ("motor_right", 1))


def rig_only():
    # What a Rig allocates besides the agent (its line, clock, encoder, nonce), for
    # mpharness.rig_cost: a 64 KB test's heap is 64 KB plus this and the modules.
    return [Line(), Clock(), FrameEncoder(), bytearray(8)]


def hold_fifteen(rig):
    # 15 grants spread over 7 resources; the 16th (on the gimbal, returned) is the test's own.
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


# ---- requests the issue 9 tests send (mp_issue9.py, and mp_agent.py's 64 KB test) ---------

def suspend(r, session, on):
    e = r.begin(W.SUSPEND)
    e.u32(session)
    e.u8(1 if on else 0)
    return r.send()


def config(r, key, value):
    e = r.begin(W.CONFIG)
    e.u8(key)
    e.u32(value)
    return r.send()


def tick(r, ms):
    r.clock.t += ms
    r.agent.step(0)


def resend(r, rid):
    # The next request goes out with request id `rid` again, as a late copy or a retry would:
    # same id and content, a new link sequence number. Returns the newest id used so far, for
    # after(): later requests must take new ids, as a host's do.
    top = r.rid
    r.rid = rid - 1
    return top


def after(r, top):
    r.rid = top


def new_paths(r, ml, s, k):
    # Once each, the paths issue 9 added: suspend and resume, a lease lost into the failsafe
    # delay window and a heartbeat that closes it, a lease lost for good (failsafe, audit ring),
    # reading the audit ring, and a late copy of an ACQUIRE refused (the request-id window).
    r.acquire(ml, MODE_WRITE, s, lease=100)
    suspend(r, s, True)
    suspend(r, s, False)
    tick(r, 150)                                    # failsafe delay opens
    r.heartbeat(2 * k)                              # and a heartbeat closes it
    tick(r, 150)
    tick(r, 150)                                    # then it lapses for good
    e = r.begin(W.AUDIT)                            # the ring, read (not parsed: no allocation)
    e.u32(1)
    r.send()
    r.acquire(ml, MODE_WRITE, s, lease=100)
    rid = r.rid
    r.release(ml, s)
    r.heartbeat(2 * k + 1)
    for _ in range(4):                              # four more answers: the replay cache moves on
        config(r, W.CFG_LOCK_DELAY_MS, 0)
    top = resend(r, rid)
    r.acquire(ml, MODE_WRITE, s, lease=100)         # a late copy: refused
    after(r, top)
