"""Device benchmarks: lock + actuate + release on the virtual board, and the agent's heap.

- The control round trip (ACQUIRE, ACTUATE, RELEASE) over a bare pty, against three raw
  MicroPython echo round trips of the same frames, measured alternately in the same run.
- The same through the virtual cable paced at 115200 baud, against the line-time limit of the
  bytes actually sent and received (bytes x 10 / baud).
- Heap in use by the agent at rest and with 16 grants held (8 resources), 64 KB heap.
- A virtual board's start (stage, deploy, agent up) with the compiled-module cache filled,
  against the same with an empty cache (every module through mpy-cross), alternately.
"""

import asyncio
import time

from bench import median
from bench.link import EchoLoop
from capshared import codec
from capshared.limits import MODE_READ, MODE_WRITE

LONG = 60000


async def _cycle(board, res, session, k):
    g = await board.acquire(res, MODE_WRITE, session, LONG)
    await board.actuate(res, session, g.epoch, 1, (k % 500).to_bytes(2, "little"))
    await board.release(res, session, g.epoch)


def _frames():
    return [codec.encode_frame("ACQUIRE", 1, {"res": 1, "modes": 2, "session": 7, "lease_ms": LONG, "wait_ms": 0}),
            codec.encode_frame("ACTUATE", 2, {"res": 1, "session": 7, "epoch": 1, "op": 1, "args": b"\x10\x00"}),
            codec.encode_frame("RELEASE", 3, {"res": 1, "session": 7, "epoch": 1})]


def _starts(rounds):
    """Seconds to start a virtual board, from a filled cache and from an empty one, alternately."""
    import os

    from bench import scratch
    from capwarden.sim import VirtualBoard

    def start(cache):
        os.environ["CAPWARDEN_CACHE"] = cache
        t0 = time.perf_counter()
        with VirtualBoard():
            return time.perf_counter() - t0

    before = os.environ.get("CAPWARDEN_CACHE")
    warm, cold = [], []
    try:
        with scratch("cw-bench-cache-") as filled:
            start(filled)
            for _ in range(rounds):
                warm.append(start(filled))
                with scratch("cw-bench-cache-") as empty:
                    cold.append(start(empty))
    finally:
        if before is None:
            os.environ.pop("CAPWARDEN_CACHE", None)
        else:
            os.environ["CAPWARDEN_CACHE"] = before
    return warm, cold


def run(results, count=300):
    from capwarden.link import Board, FdTransport, open_board
    from capwarden.sim import VirtualBoard

    async def bare(vb):
        board = Board(FdTransport(vb.detach_cable(), "virtual board pty"), key=vb.link_key)
        await board.open()
        ml = board.resource_index("motor_left")
        agent, raw = [], []
        frames = _frames()
        with EchoLoop() as echo:
            for k in range(count + 20):
                e = sum(echo.rtt(f) for f in frames)
                t0 = time.perf_counter()
                await _cycle(board, ml, 7, k)
                a = time.perf_counter() - t0
                if k >= 20:
                    agent.append(a)
                    raw.append(e)
        await board.close()
        return agent, raw

    async def paced(vb):
        board = await open_board(vb.port)
        ml = board.resource_index("motor_left")
        vb.cable.baud = 115200
        ratios, times = [], []
        for k in range(60):
            tx0, rx0 = board.tx_bytes, board.rx_bytes
            t0 = time.perf_counter()
            await _cycle(board, ml, 7, k)
            dt = time.perf_counter() - t0
            line = ((board.tx_bytes - tx0) + (board.rx_bytes - rx0)) * 10 / 115200
            if k >= 5:
                ratios.append(dt / line)
                times.append((dt, line))
        vb.cable.baud = None
        await board.close()
        return ratios, times

    async def heap(vb):
        board = await open_board(vb.port)
        at_rest = (await board.ping())
        names = [r.name for r in board.info.resources]
        s = 100
        plan = [("gps", 4, MODE_READ), ("imu", 4, MODE_READ), ("camera", 3, MODE_READ), ("sdcard", 2, MODE_READ),
                ("led", 1, MODE_READ), ("motor_left", 1, MODE_WRITE), ("gimbal", 1, MODE_WRITE)]
        for name, n, mode in plan:
            for _ in range(n):
                s += 1
                await board.acquire(names.index(name), mode, s, LONG)
        held = await board.ping()
        await board.close()
        return at_rest, held, len(names)

    with VirtualBoard() as vb:
        agent, raw = asyncio.run(bare(vb))
    a50, e50 = median(agent) * 1e6, median(raw) * 1e6
    results.add("lock+actuate+release p50, bare pty", round(a50, 1), "us", baseline=round(e50, 1),
                note="baseline: three raw MicroPython echo round trips of the same frames")
    with VirtualBoard() as vb:
        ratios, times = asyncio.run(paced(vb))
    results.add("lock+actuate+release p50 at 115200 baud (cable)", round(median([t for t, _l in times]) * 1e3, 3), "ms",
                baseline=round(median([l for _t, l in times]) * 1e3, 3), target="ratio <= 1.2 (issue 12, signed)",
                note="baseline: line time of the bytes sent and received")
    with VirtualBoard() as vb:
        rest, held, n_res = asyncio.run(heap(vb))
    results.add("agent heap in use at rest (64 KB heap, %d resources)" % n_res, rest["mem_alloc"], "bytes")
    results.add("agent heap in use with 16 grants", held["mem_alloc"], "bytes", baseline=rest["mem_alloc"])
    results.add("agent heap free with 16 grants", held["mem_free"], "bytes")
    warm, cold = _starts(5)
    results.add("virtual board start p50, compiled-module cache filled", round(median(warm), 2), "s",
                baseline=round(median(cold), 2),
                note="stage, deploy (one mpremote run) and agent up; baseline: the same with an empty cache "
                     "(each module through mpy-cross), alternately, 5 rounds")
