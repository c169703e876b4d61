"""The authenticated link's cost (issue 12): lock + actuate + release, signed against unsigned.

Since protocol 3 every frame carries a counter and a tag and a board refuses frames without
them, so no build of today's tree speaks the unsigned link. The unsigned baseline is therefore
the last unsigned release of this project (UNSIGNED_REF, protocol 2: the same agent, engine
link and virtual board without link authentication), exported from git into a temporary
folder and driven by the same script as today's tree, in the same run, alternately in rounds so
that the machine's noise falls on both. Without git history (an installed wheel) the row says
why it is missing.

Also: the agent's heap with signing on and 16 grants, over 10,000 signed lock/heartbeat/release
cycles (it must stay flat: the signed path allocates nothing), on a 64 KB virtual board.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from bench import median

UNSIGNED_REF = "fd4ac838bb78d670196469c71678ddc9b733fee0"   # protocol 2, the last unsigned link
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = 3
CYCLES = 120

# Runs inside a tree (cwd): its own engine link, firmware and virtual board. Prints the
# cycle times as JSON. Works with protocol 2 (no keys) and 3 (the virtual board's key).
_CYCLES = r"""
import asyncio, json, os, sys, time
sys.path[:0] = [os.path.join(os.getcwd(), "host"), os.getcwd()]
from capwarden.link import Board, FdTransport
from capwarden.sim import VirtualBoard
from bench.device import _cycle

N = int(sys.argv[1])

async def go(vb):
    kw = {"key": vb.link_key} if getattr(vb, "link_key", None) is not None else {}
    board = Board(FdTransport(vb.detach_cable(), "virtual board pty"), **kw)
    await board.open()
    ml = board.resource_index("motor_left")
    out = []
    for k in range(N + 20):
        t0 = time.perf_counter()
        await _cycle(board, ml, 7, k)
        if k >= 20:
            out.append(time.perf_counter() - t0)
    await board.close()
    return out

with VirtualBoard() as vb:
    print("CYCLES " + json.dumps(asyncio.run(go(vb))))
"""


def _export(ref):
    """The tree at `ref` in a temporary folder, or None without git history."""
    if not os.path.isdir(os.path.join(ROOT, ".git")) and not os.path.isfile(os.path.join(ROOT, ".git")):
        return None
    dest = tempfile.mkdtemp(prefix="capwarden-unsigned-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", ref], capture_output=True)
    if archive.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        return None
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    return dest


def _cycles(tree, n):
    proc = subprocess.run([sys.executable, "-c", _CYCLES, str(n)], cwd=tree, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=""))
    line = [x for x in proc.stdout.splitlines() if x.startswith("CYCLES ")]
    if not line:
        raise RuntimeError("cycles in %s failed: %s" % (tree, (proc.stderr or proc.stdout)[-400:]))
    return json.loads(line[0][len("CYCLES "):])


def _heap_flat(cycles=10000):
    import asyncio

    from capshared.limits import MODE_READ, MODE_WRITE
    from capwarden.link import open_board
    from capwarden.sim import VirtualBoard

    async def go(vb):
        board = await open_board(vb.port)
        names = [r.name for r in board.info.resources]
        s = 100
        plan = [("gps", 4, MODE_READ), ("imu", 4, MODE_READ), ("camera", 3, MODE_READ), ("sdcard", 2, MODE_READ),
                ("led", 1, MODE_READ), ("gimbal", 1, MODE_WRITE)]
        for name, n, mode in plan:
            for _ in range(n):
                s += 1
                await board.acquire(names.index(name), mode, s, 600000)
        ml = names.index("motor_left")
        for k in range(50):                              # warm up (first calls may intern names)
            g = await board.acquire(ml, MODE_WRITE, 7, 600000)
            await board.heartbeat(k + 1)
            await board.release(ml, 7, g.epoch)
        before = await board.ping()
        for k in range(50, 50 + cycles):                 # the 16th grant comes and goes
            g = await board.acquire(ml, MODE_WRITE, 7, 600000)
            await board.heartbeat(k + 1)
            await board.release(ml, 7, g.epoch)
        after = await board.ping()
        await board.close()
        return before, after

    with VirtualBoard() as vb:
        return asyncio.run(go(vb))


def run(results):
    old = _export(UNSIGNED_REF)
    if old is None:
        results.add("lock+actuate+release p50, signed link, bare pty", 0, "us",
                    note="not measured: the unsigned baseline needs this project's git history")
    else:
        try:
            signed, unsigned = [], []
            for _ in range(ROUNDS):
                unsigned += _cycles(old, CYCLES)
                signed += _cycles(ROOT, CYCLES)
        finally:
            shutil.rmtree(old, ignore_errors=True)
        results.add("lock+actuate+release p50, signed link, bare pty", round(median(signed) * 1e6, 1), "us",
                    baseline=round(median(unsigned) * 1e6, 1), target="ratio <= 1.15 (issue 12)",
                    note="baseline: the unsigned link of protocol 2 (%s), same script, alternating rounds"
                         % UNSIGNED_REF[:7])
    before, after = _heap_flat()
    results.add("agent heap in use, signed, 16 grants, after 10,000 cycles (64 KB heap)", after["mem_alloc"],
                "bytes", baseline=before["mem_alloc"], target="ratio 1.00 (flat)",
                note="baseline: the same board after the warm-up, before the 10,000 signed lock/heartbeat/release cycles")
    results.add("agent heap free, signed, 16 grants (64 KB heap)", after["mem_free"], "bytes")
