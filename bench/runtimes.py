"""What the engine benchmarks share: the engine in its own process, a raw WebSocket runtime,
the world of credentials they use, and the ACQUIRE frame the echo baseline sends."""

import json
import os
import subprocess
import sys
import tempfile
import time

from bench import test_helper
from capshared import codec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ACQUIRE = codec.encode_frame("ACQUIRE", 1, {"res": 3, "modes": 1, "session": 7, "lease_ms": 3000, "wait_ms": 0})


def _world():
    return test_helper("engine", "enginerig").World(tempfile.mkdtemp(prefix="capwarden-bench-"))


class EngineProcess:
    """bench.engine_proc in its own process: `url`, `stats()`, `close()`."""

    def __init__(self, store, tokens, line="bare", sync="group", grants=None, baud=None):
        more = ["--grants", str(grants)] if grants else []
        more += ["--baud", str(baud)] if baud else []
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.engine_proc", store, json.dumps(tokens), "--line",
                                      line, "--sync", sync] + more, cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            self.proc.kill()
            raise RuntimeError("the benchmark engine did not start")

    def stats(self):
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RawRuntime:
    """A runtime that speaks the wire protocol directly: the frame is built before the clock
    starts, and the clock stops when the frame answering it arrives (pushes are skipped)."""

    def __init__(self, rid):
        self.rid = rid
        self.ws = None

    async def open(self, url, token):
        from websockets.asyncio.client import connect

        self.ws = await connect(url, additional_headers={"Authorization": "Bearer " + token}, max_size=None,
                                ping_interval=None, compression=None)
        return self

    async def call(self, mtype, body):
        from capwarden.engine import protocol

        msg = protocol.make(mtype, body, self.rid)
        text, mid = protocol.dumps(msg), msg["message_id"]
        t0 = time.perf_counter()
        await self.ws.send(text)
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("correlation_id") == mid:
                return reply, time.perf_counter() - t0

    async def close(self):
        await self.ws.close()


def _auth_body(world, name="gps", mode="read"):
    return {"fay_id": world.A, "resource_id": world.res(name), "access_mode": mode, "credential": world.cred(world.dA)}
