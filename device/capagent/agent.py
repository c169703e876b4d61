# The agent's main loop: announce, then answer frames and tick the control logic until told to
# stop. Link-level messages are answered here; everything about control (locks, leases,
# handover, actuation, resource events) belongs to capagent.control.
import gc
import os
import sys
import time

import micropython
from micropython import const

from capagent import VERSION
from capagent.link import EOF, Link
from capshared import wire as W
from capshared.framing import FRAME, INTERRUPT
from capshared.limits import HEADER_SIZE, MAX_RAW, PROTOCOL_VERSION
from capshared.linkauth import CURRENT, NONCE_SIZE, PENDING
from capshared.errors import E_DEV_BAD_MESSAGE as E_BAD, E_INTERNAL, E_RESOURCE_UNAVAILABLE as E_RES

_TICK_MS = const(20)    # longest sleep between control ticks


def _boot_id():
    b = os.urandom(4)
    return (b[0] | (b[1] << 8) | (b[2] << 16) | ((b[3] & 0x3F) << 24)) or 1


class Agent:
    def __init__(self, board, link, clock=None, rx_buf=256):
        from capagent.control import Control  # imported here so a board can replace it in tests
        gc.collect()  # the loader's leftovers go before the tables are made: fewer holes
        self.board = board
        self.link = link
        # Monotonic milliseconds: the time module's ticks_ms, ticks_diff and ticks_add, or a
        # test's object with the same three methods.
        self.clock = clock or time
        self.resources = board.resources()
        self.boot_id = _boot_id()
        self.rx_buf = rx_buf
        self.started = self.clock.ticks_ms()
        self.info = (VERSION + " " + board.NAME).encode()
        self.control = Control(link, self.resources, self.clock, board)
        self.running = True
        self.errors = 0

    def uptime(self):
        return self.clock.ticks_diff(self.clock.ticks_ms(), self.started) & 0x3FFFFFFF

    def _hello(self, mid, rid):
        e = self.link.enc
        e.begin(mid, rid)
        e.u8(PROTOCOL_VERSION)
        e.u32(self.boot_id)
        e.u16(self.rx_buf)
        e.u8(MAX_RAW)
        e.u8(len(self.resources))
        e.u32(self.uptime())
        link = self.link
        a = link.auth
        if rid:  # HELLO_R: what a new host continues from (issue 9, defect 1)
            e.u32(self.control.hb_seq)
            e.u16(link.rid_hw)
            # The session this HELLO's nonce and ours make, proposed (PENDING): the current
            # one stays until a frame under the new one arrives (docs/link-auth.md).
            a.board_nonce(e.raw, e.n)
            a.begin(link.dec.buf, HEADER_SIZE, e.raw, e.n, self.boot_id, PENDING)
            e.n += NONCE_SIZE
        else:    # ANNOUNCE: the key id (zeros: no key, every frame refused)
            e.tail(a.key_id, 0, 4)
        e.tail(self.info, 0, len(self.info))
        link.send(False, PENDING if rid else CURRENT)  # never replayed: a retried HELLO is a new proposal

    def announce(self):
        # A delimiter first: whatever the line carried before (the REPL's "OK" when the agent
        # restarts on the same UART) ends there, so the host reads the ANNOUNCE as a frame.
        self.link.wr.write(b"\x00")
        self._hello(W.ANNOUNCE, 0)

    def dispatch(self, mid, rid):
        link = self.link
        dec = link.dec
        e = link.enc
        if mid == W.PING:
            # No gc.collect() here: the steady state allocates nothing, so free is accurate
            # and a ping measures the link, not the collector.
            e.begin(W.PING_R, rid)
            e.u32(dec.u32(W.PING_NONCE))
            e.u32(gc.mem_free() & 0x3FFFFFFF)
            e.u32(gc.mem_alloc() & 0x3FFFFFFF)
            e.u32(self.uptime())
            link.send()
        elif mid == W.HELLO:
            self._hello(W.HELLO_R, rid)
        elif mid == W.RES_INFO:
            i = dec.u8(W.RES_INFO_RES)
            if i >= len(self.resources):
                link.error(rid, E_RES, i)
                return
            r = self.resources[i]
            e.begin(W.RES_INFO_R, rid)
            e.u8(i)
            e.u8(r.cls)
            e.u8(r.modes)
            e.u8(self.control.r_state[i])
            n = r.name.encode() if isinstance(r.name, str) else r.name
            e.tail(n, 0, len(n))
            link.send()
        elif mid == W.STATS:
            d = link.dec
            e.begin(W.STATS_R, rid)
            e.u16(d.bad_crc & 0xFFFF)
            e.u16(d.bad_frame & 0xFFFF)
            e.u16(d.overrun & 0xFFFF)
            e.u16(link.lost & 0xFFFF)
            e.u16(link.dup & 0xFFFF)
            e.u16(link.replayed & 0xFFFF)
            e.u32(link.frames_rx & 0x3FFFFFFF)
            e.u32(link.frames_tx & 0x3FFFFFFF)
            e.u16(link.stale_n & 0xFFFF)
            a = link.auth
            e.u16(a.bad_tag & 0xFFFF)
            e.u16(a.replay & 0xFFFF)
            e.u16(a.no_key & 0xFFFF)
            link.send()
        elif mid == W.REKEY:
            # Rare: its code is loaded for the one frame and dropped again (board RAM).
            import capagent.rekey as rk

            try:
                rk.rekey(link, rid)
            finally:
                sys.modules.pop("capagent.rekey", None)
                try:
                    del sys.modules["capagent"].rekey
                except (KeyError, AttributeError):
                    pass    # the import itself failed (MemoryError): its error is the one to see
        elif mid == W.REPL:
            e.begin(W.REPL_R, rid)
            link.send()
            self.running = False
        elif not self.control.handle(mid, rid):
            link.error(rid, E_BAD, mid)

    def _check_size(self, mid):
        # Reject frames whose payload does not match the table before reading any field.
        if mid > 0x3F or mid == 0:
            return False  # not a request
        s = W.SIZE[mid]
        if s == 0xFF:
            return False
        n = self.link.dec.payload_len()
        fixed = s & 0x7F
        if not (n == fixed or (n > fixed and s & 0x80)):
            return False
        # Every u32 below 2**30 (the host's codec never sends more): a larger one would be a
        # heap-allocated int on a 32-bit board, and is refused, never read.
        buf = self.link.dec.buf
        for k in range(4 * mid, 4 * mid + 4):
            o = W.U32_TOP[k]
            if o and buf[HEADER_SIZE - 1 + o] & 0xC0:
                return False
        return True

    def step(self, timeout_ms):
        # One pass: wait for input up to timeout_ms, handle what arrived, tick control.
        link = self.link
        if link.wait(timeout_ms):
            while True:
                r = link.read()
                if r == FRAME:
                    mid = link.dec.mid()
                    rid = link.dec.rid()
                    self.control.host_seen(self.clock.ticks_ms())
                    if not self._check_size(mid):
                        link.error(rid, E_BAD, mid)
                        continue
                    try:
                        if link.stale:
                            self.control.stale(mid, rid)  # a late copy: never executed again
                        else:
                            self.dispatch(mid, rid)
                    except Exception as exc:  # a bug must not take the board's safety down
                        self.errors += 1
                        link.error(rid, E_INTERNAL, self.errors & 0xFFFF)
                elif r == INTERRUPT or r == EOF:
                    self.running = False
                    break
                else:
                    break
            if link.hello_refused:   # a HELLO with another key, or none: say which key we hold
                link.hello_refused = False
                self._hello(W.ANNOUNCE, 0)
        self.control.tick(self.clock.ticks_ms())

    def run(self):
        self.announce()
        gc.collect()
        try:
            while self.running:
                self.step(self.control.g.sleep_ms(_TICK_MS, self.clock.ticks_ms()))
        finally:
            # Leaving the agent (Ctrl-C, REPL request, or a crash) leaves the hardware safe,
            # and the line as the REPL wants it.
            self.control.stop()
            self.link.close()


def main():
    import select  # noqa: F401  (fail early on a port without select)
    import board
    micropython.kbd_intr(3)  # Ctrl-C stays the documented way back to the REPL
    link = board.link() if hasattr(board, "link") else Link(sys.stdin.buffer, sys.stdout.buffer, sys.stdin,
                                                            terminal=True)
    agent = Agent(board, link)
    try:
        agent.run()
    except KeyboardInterrupt:
        pass
