"""Link benchmarks: ping to the agent on the virtual board against a raw MicroPython echo.

The baseline is the same bytes over a bare pty to a MicroPython loop that echoes each frame
back: the floor any agent on this interpreter and line can reach. `EchoLoop` is shared with the
other benchmarks so every figure has a baseline measured in the same run. Agent and echo are
pinged alternately in one loop, so the machine's noise falls on both alike.
"""

import asyncio
import os
import pty
import select
import subprocess
import time
import tty

from bench import median, percentile
from capshared import codec

ECHO = r"""
import sys, select
p = select.poll(); p.register(sys.stdin, select.POLLIN)
rd = sys.stdin.buffer; wr = sys.stdout.buffer
buf = bytearray(256); b1 = bytearray(1); n = 0
while True:
    for _ in p.ipoll(-1):
        pass
    rd.readinto(b1, 1)
    buf[n] = b1[0]; n += 1
    if b1[0] == 0 or n == 256:
        wr.write(buf, n); n = 0
"""


class EchoLoop:
    """A MicroPython process on a bare pty that echoes every frame (the raw-line baseline)."""

    def __init__(self):
        from capwarden.sim.board import micropython_exe

        self.master, slave = pty.openpty()
        tty.setraw(slave)
        tty.setraw(self.master)
        self.proc = subprocess.Popen([micropython_exe(), "-c", ECHO], stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)

    def rtt(self, frame):
        """Seconds for `frame` (ending in 0x00) to come back."""
        t0 = time.perf_counter()
        os.write(self.master, frame)
        got = b""
        while not got.endswith(b"\x00"):
            r, _, _ = select.select([self.master], [], [], 5)
            if not r:
                raise RuntimeError("echo loop did not answer")
            got += os.read(self.master, 512)
        return time.perf_counter() - t0

    def close(self):
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


async def _alternate(board, echo, frame, count):
    agent, raw = [], []
    for i in range(count + 30):
        e = echo.rtt(frame)
        a = (await board.ping())["rtt_s"]
        if i >= 30:  # warm-up excluded
            raw.append(e)
            agent.append(a)
    return agent, raw


def run(results, count=200, rounds=5):
    from capwarden.link import Board, FdTransport, open_transport
    from capwarden.sim import VirtualBoard

    ping = codec.encode_frame("PING", 1, {"nonce": 12345})

    async def measure(vb, direct):
        board = Board(FdTransport(vb.detach_cable(), "virtual board pty") if direct else open_transport(vb.port),
                      key=vb.link_key)
        await board.open()
        try:
            with EchoLoop() as echo:
                return [await _alternate(board, echo, ping, count) for _ in range(rounds)]
        finally:
            await board.close()

    with VirtualBoard() as vb:
        cable_rounds = asyncio.run(measure(vb, direct=False))
    with VirtualBoard() as vb:
        direct_rounds = asyncio.run(measure(vb, direct=True))

    def pooled(rs, i):
        return [x for r in rs for x in r[i]]

    direct, echo_d = pooled(direct_rounds, 0), pooled(direct_rounds, 1)
    cable, echo_c = pooled(cable_rounds, 0), pooled(cable_rounds, 1)
    us = lambda s: round(s * 1e6, 1)  # noqa: E731
    # The machine's state (idle wake-up latency, other load) moves both figures; the ratio of
    # each round's medians is steadier than either figure, so the median round ratio is kept.
    round_ratio = median([median(a) / median(e) for a, e in direct_rounds])
    results.add("raw pty echo round trip p50 (%d B ping frame)" % len(ping), us(median(echo_d)), "us")
    results.add("agent ping p50, bare pty (like for like with the echo)", us(median(direct)), "us",
                baseline=us(median(echo_d)), target="ratio <= 3")
    results.add("agent/echo p50 ratio, median of %d interleaved rounds" % rounds, round(round_ratio, 2), "x",
                target="<= 3")
    results.add("agent ping p99, bare pty", us(percentile(direct, 99)), "us", baseline=us(percentile(echo_d, 99)))
    results.add("agent ping p50, through the virtual cable", us(median(cable)), "us",
                baseline=us(median(echo_c)), note="two more pty hops and a relay thread")
