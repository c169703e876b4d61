"""Link benchmarks: ping to the agent on the virtual board against a raw MicroPython echo.

The baseline (`raw_echo_rtts`) is the same bytes over a bare pty to a MicroPython loop that
echoes each frame back: the floor any agent on this interpreter and line can reach. Other
benchmarks import it so that every figure has a baseline measured in the same run.
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


def raw_echo_rtts(frame, count=300):
    """Round trips of `frame` (bytes ending in 0x00) over a bare pty to a MicroPython echo loop."""
    from capwarden.sim.board import micropython_exe

    master, slave = pty.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    proc = subprocess.Popen([micropython_exe(), "-c", ECHO], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        rtts = []
        for i in range(count + 20):
            t0 = time.perf_counter()
            os.write(master, frame)
            got = b""
            while not got.endswith(b"\x00"):
                r, _, _ = select.select([master], [], [], 5)
                if not r:
                    raise RuntimeError("echo loop did not answer")
                got += os.read(master, 512)
            if i >= 20:  # warm-up excluded
                rtts.append(time.perf_counter() - t0)
        return rtts
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


async def _agent_pings(port, count):
    from capwarden.link import open_board

    board = await open_board(port)
    try:
        for _ in range(20):
            await board.ping()
        return [(await board.ping())["rtt_s"] for _ in range(count)]
    finally:
        await board.close()


def run(results):
    from capwarden.sim import VirtualBoard

    ping = codec.encode_frame("PING", 1, {"nonce": 12345})
    with VirtualBoard() as vb:
        agent = asyncio.run(_agent_pings(vb.port, 300))
    echo = raw_echo_rtts(ping, 300)
    e50 = median(echo) * 1e6
    results.add("raw pty echo round trip p50 (%d B frame)" % len(ping), round(e50, 1), "us")
    results.add("agent ping round trip p50 (virtual board, via cable)", round(median(agent) * 1e6, 1), "us",
                baseline=round(e50, 1), target="ratio <= 3")
    results.add("agent ping round trip p99", round(percentile(agent, 99) * 1e6, 1), "us",
                baseline=round(percentile(echo, 99) * 1e6, 1))
