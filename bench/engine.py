"""Engine benchmarks.

- AuthRequest -> AuthResult latency (granted, board lock included), p50 and p99, on the virtual
  board, against the raw MicroPython pty echo round trip, measured alternately in the same run.
  Target: p50 within 10x the echo.
- 1,000 sessions heartbeating at 1 Hz (ten runtimes of 100 sessions, one Heartbeat message per
  runtime per second): the engine process's CPU share and the bytes per second on the board
  link, which should not grow with the number of sessions (one batched board heartbeat).
"""

import asyncio
import json
import subprocess
import sys
import tempfile
import time

from bench import median, percentile
from bench.link import EchoLoop
from capshared import codec

ENGINE = r"""
import asyncio, json, sys, time
from capwarden.engine.app import EngineApp
from capwarden.engine.liveness import LivenessPolicy
async def main(store, tokens):
    app = EngineApp(store, "127.0.0.1:0", tokens, sim=True, heapsize="2M", sim_grants=1024,
                    liveness=LivenessPolicy(default=(1000, 5000)))
    await app.start()
    print(app.server.url, flush=True)
    loop = asyncio.get_running_loop()
    board = app.boards["sim"]
    await loop.run_in_executor(None, sys.stdin.readline)          # "measure"
    c0, t0, b0 = time.process_time(), time.monotonic(), board.tx_bytes + board.rx_bytes
    await loop.run_in_executor(None, sys.stdin.readline)          # "stop"
    c1, t1, b1 = time.process_time(), time.monotonic(), board.tx_bytes + board.rx_bytes
    sessions = sum(1 for s in app.engine.sessions.values() if s.state == "active")
    print(json.dumps({"cpu": (c1 - c0) / (t1 - t0), "link_bps": (b1 - b0) / (t1 - t0), "sessions": sessions}), flush=True)
    await app.stop()
asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""


def _world():
    from bench import test_helper

    return test_helper("engine", "bench_engine_world").World(tempfile.mkdtemp(prefix="capwarden-bench-"))


async def _latency(world, count):
    from capwarden.engine.app import EngineApp
    from capwarden.sdk import connect

    app = EngineApp(world.store, "127.0.0.1:0", {"rt": "bench-token-1"}, sim=True)
    await app.start()
    try:
        c = await connect(app.server.url, "rt", "bench-token-1")
        frame = codec.encode_frame("ACQUIRE", 1, {"res": 3, "modes": 1, "session": 7, "lease_ms": 3000, "wait_ms": 0})
        auth, raw = [], []
        with EchoLoop() as echo:
            for i in range(count + 20):
                e = echo.rtt(frame)
                t0 = time.perf_counter()
                s = await c.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
                a = time.perf_counter() - t0
                await s.release()
                if i >= 20:
                    auth.append(a)
                    raw.append(e)
        await c.close()
        return auth, raw
    finally:
        await app.stop()


async def _heartbeats(world, url, tokens, seconds):
    from capwarden.sdk import connect

    readable = [("gps", world.dA), ("camera", world.dA), ("motor_left", world.dA), ("motor_right", world.dA)]
    clients = []
    ids = {}
    for rid, tok in tokens.items():
        c = await connect(url, rid, tok)
        clients.append(c)
        ids[rid] = []
        for k in range(100):
            name, did = readable[k % len(readable)]
            s = await c.acquire(world.A, world.res(name), "read", world.cred(did))
            ids[rid].append(s.session_id)

    async def beat(c, rid, stop):
        while not stop.is_set():
            ack = await c.request("Heartbeat", {"session_ids": ids[rid]})
            assert len(ack["alive"]) == 100
            await asyncio.sleep(1.0)

    return clients, ids, beat


def run(results, count=200, seconds=10):
    world = _world()
    auth, raw = asyncio.run(_latency(world, count))
    us = lambda s: round(s * 1e6, 1)  # noqa: E731
    results.add("AuthRequest->AuthResult p50 (granted, board lock)", us(median(auth)), "us", baseline=us(median(raw)),
                target="ratio <= 10", note="baseline: raw pty echo of an ACQUIRE frame")
    results.add("AuthRequest->AuthResult p99", us(percentile(auth, 99)), "us", baseline=us(percentile(raw, 99)))

    tokens = {"rt%d" % i: "bench-token-%02d" % i for i in range(10)}
    proc = subprocess.Popen([sys.executable, "-c", ENGINE, world.store, json.dumps(tokens)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()

        async def load():
            clients, ids, beat = await _heartbeats(world, url, tokens, seconds)
            stop = asyncio.Event()
            tasks = [asyncio.ensure_future(beat(c, rid, stop)) for c, rid in zip(clients, tokens)]
            await asyncio.sleep(2)
            proc.stdin.write("measure\n")
            proc.stdin.flush()
            await asyncio.sleep(seconds)
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in clients:
                await c.close()

        asyncio.run(load())
        figures = json.loads(proc.stdout.readline())
    finally:
        proc.wait(timeout=60)
    results.add("engine CPU share, %d sessions heartbeating at 1 Hz" % figures["sessions"],
                round(100 * figures["cpu"], 2), "%")
    results.add("board link bytes/s with %d sessions" % figures["sessions"], round(figures["link_bps"], 1), "B/s",
                note="one HEARTBEAT frame per second renews every lease, whatever the session count")
