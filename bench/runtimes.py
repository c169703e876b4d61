"""What the engine benchmarks share: the engine in its own process, a raw WebSocket runtime,
the world of credentials they use, and the ACQUIRE frame the echo baseline sends."""

import json
import os
import subprocess
import sys
import time

from bench import test_helper
from capshared import codec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ACQUIRE = codec.encode_frame("ACQUIRE", 1, {"res": 3, "modes": 1, "session": 7, "lease_ms": 3000, "wait_ms": 0})


WS_ECHO = r"""
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    s = await serve(echo, "127.0.0.1", 0, compression=None, ping_interval=None)
    print(s.sockets[0].getsockname()[1], flush=True)
    await asyncio.Future()
asyncio.run(main())
"""


class WsEcho:
    """A bare WebSocket echo server in its own process (the runtime API's library, loopback and
    options, no engine), and a connection to it: the floor of the runtime-to-engine hop."""

    async def open(self):
        from websockets.asyncio.client import connect

        self.proc = subprocess.Popen([sys.executable, "-c", WS_ECHO], stdout=subprocess.PIPE, text=True)
        try:
            port = int(self.proc.stdout.readline())
            self.ws = await connect("ws://127.0.0.1:%d" % port, compression=None, ping_interval=None)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        return self

    async def rtt(self, text):
        """Seconds for the text frame `text` to come back."""
        t0 = time.perf_counter()
        await self.ws.send(text)
        await self.ws.recv()
        return time.perf_counter() - t0

    async def close(self):
        try:
            await self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait()


def _world(folder):
    """The engine tests' World (stores, credentials, tokens) in `folder` (bench.scratch)."""
    return test_helper("engine", "enginerig").World(folder)


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
