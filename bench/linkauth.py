"""Link authentication cost (issue 12): seal + verify of a 32-byte frame on the MicroPython unix
port (capshared.linkauth as deployed, cryptolib) and on the host (cryptography's CMAC), beside
the cost of framing the same frame (CRC-16, COBS, escaping, decoding) measured in the same run;
and the board RAM the module and one LinkAuth take in a 64 KB heap.
"""

import os
import subprocess
import sys
import time

from bench import median

FRAME = 32
ROUNDS = 5

MP_SCRIPT = r"""
import sys, gc, time
sys.path[:0] = %(path)r
gc.collect(); a0 = gc.mem_alloc()
from capshared import linkauth as la
gc.collect(); a1 = gc.mem_alloc()
board = la.LinkAuth(la.DIR_TO_HOST)
board.set_key(b"0123456789abcdef")
gc.collect(); a2 = gc.mem_alloc()
print("RAM", a1 - a0, a2 - a1)
host = la.LinkAuth(la.DIR_TO_BOARD)
host.set_key(b"0123456789abcdef")
n = bytearray(8)
board.begin(n, 0, n, 0, 1, la.CURRENT)
host.begin(n, 0, n, 0, 1, la.CURRENT)
from capshared.framing import FrameDecoder, FrameEncoder
enc = FrameEncoder(); dec = FrameDecoder()
frame = bytearray(%(size)d); tag = bytearray(8)
N = %(n)d
for r in range(%(rounds)d):
    t0 = time.ticks_us()
    for i in range(N):
        c = host.seal(frame, 0, %(size)d, tag, 0)
        board.verify(frame, 0, %(size)d, c, tag, 0)
    t1 = time.ticks_us()
    for i in range(N):
        enc.begin(1, 5)
        enc.tail(frame, 4, %(size)d)
        m = enc.finish()
        w = enc.wire
        for j in range(m):
            dec.feed(w[j])
    t2 = time.ticks_us()
    print("US", time.ticks_diff(t1, t0) / N, time.ticks_diff(t2, t1) / N)
"""


def _micropython():
    import mpharness

    from capwarden.sim.board import micropython_exe

    from capwarden.sim.inline import inline

    # Folded as the firmware is: the deployed linkauth keeps its constants private.
    code = inline(MP_SCRIPT % {"path": mpharness.firmware_path(), "size": FRAME, "n": 2000, "rounds": ROUNDS})
    proc = subprocess.run([micropython_exe(), "-X", "heapsize=64K", "-c", code], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError("micropython failed: " + proc.stdout + proc.stderr)
    ram = None
    auth, framing = [], []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[0] == "RAM":
            ram = int(parts[1]), int(parts[2])
        elif parts[0] == "US":
            auth.append(float(parts[1]))
            framing.append(float(parts[2]))
    return ram, median(auth), median(framing)


def _host():
    from capshared import codec
    from capwarden.link import linkauth as hl

    host = hl.HostAuth(hl.generate())
    host.hello()
    host.begin(bytes(8), 1)
    frame = bytes(FRAME)
    n = 5000
    auth, framing = [], []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(n):
            c, t = host.seal(frame)
            # A check of the host's own frame is refused (wrong direction) after the same work
            # as a good one: one CMAC and a constant-time compare.
            host.verify(frame, c, t)
        t1 = time.perf_counter()
        for _ in range(n):
            wire = codec.frame_bytes(1, 5, frame[4:], 0)
            codec.StreamDecoder().feed(wire)
        t2 = time.perf_counter()
        auth.append((t1 - t0) / n * 1e6)
        framing.append((t2 - t1) / n * 1e6)
    return median(auth), median(framing)


def run(results):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(here, "tests"))
    ram, mp_auth, mp_framing = _micropython()
    results.add("linkauth: seal+verify 32-byte frame, MicroPython", round(mp_auth, 1), "us", baseline=round(mp_framing, 1),
                note="baseline: encode + decode of the same frame (CRC, COBS, escaping) in the same run")
    h_auth, h_framing = _host()
    results.add("linkauth: seal+verify 32-byte frame, host (cryptography)", round(h_auth, 2), "us",
                baseline=round(h_framing, 2), note="baseline: codec.frame_bytes + StreamDecoder of the same frame")
    results.add("linkauth: board RAM, module (64-bit unix port)", ram[0], "bytes")
    results.add("linkauth: board RAM, one LinkAuth with its key", ram[1], "bytes")


if __name__ == "__main__":
    from bench import Results

    run(Results())
