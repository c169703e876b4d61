"""The real process: `capwarden serve --port` in front of the shared virtual board, killed with
SIGKILL and started again on the same store and the same running board.

What the in-process `kill_engine` step stands for, once for real: no cleanup at all (no
release, the store's lock held by a dead process, the audit log closed mid-run), and a runtime
that heartbeats throughout. The new engine must start (the store is free once its one writer
is dead), clear the dead engine's grant, and keep the new session alive: the board must not take
the new engine's heartbeats for frozen ones (issue 9, defect 1).
"""

import asyncio
import os
import signal
import subprocess
import sys
import time

import procs
from capwarden.sdk import connect

from . import invariants as inv
from .rig import Creds, shared_board

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")
TOKEN = "token-A-123456"


class Serve:
    def __init__(self, store, port):
        self.proc = subprocess.Popen([EXE, "serve", "--store", store, "--listen", "127.0.0.1:0", "--port", port,
                                      "--runtime-token", "rtA=" + TOKEN, "--leeway", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("serving "):
            self.proc.kill()
            raise AssertionError("serve did not start: %r %s" % (line, self.proc.stderr.read()))
        self.url = line.split()[1]

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        procs.stop(self.proc)


async def _beat(session, until):
    while time.monotonic() < until and session.state == "active":
        try:
            await session.heartbeat()
        except Exception:
            return
        await asyncio.sleep(0.3)


def test_kill_9_serve_and_start_it_again_in_front_of_the_running_board():
    vb = shared_board().reset()
    creds = Creds()
    a = creds.items["A"]
    motor = creds.res("motor_left")
    served = []
    loop = asyncio.new_event_loop()
    try:
        first = Serve(creds.store, vb.port)
        served.append(first)

        async def before_the_kill():
            c = await connect(first.url, "rtA", TOKEN)
            m = await c.acquire(a["fay_id"], motor, "write", a["credential"])
            # Long enough for the engine's board heartbeat counter (one a second) to pass a lease (3 s).
            await _beat(m, time.monotonic() + 4.5)
            assert m.state == "active", m.changes
            return c

        c = loop.run_until_complete(asyncio.wait_for(before_the_kill(), 60))
        first.kill9()
        try:
            loop.run_until_complete(c.close())
        except Exception:
            pass

        second = Serve(creds.store, vb.port)   # the dead process's store and board: it must start
        served.append(second)

        async def after_the_restart():
            c = await connect(second.url, "rtA", TOKEN)
            # The dead engine's grant is released at start (or runs out): the motor is free again.
            m = await c.acquire(a["fay_id"], motor, "write", a["credential"], wait_ms=5000)
            await _beat(m, time.monotonic() + 5.0)     # well past a lease of the new engine's grant
            assert m.state == "active", "the new engine's session ended under a heartbeating runtime: %s" % (
                m.changes,)
            await m.command(1, (10).to_bytes(2, "little", signed=True))
            await c.close()

        loop.run_until_complete(asyncio.wait_for(after_the_restart(), 60))
        entries = inv.audit_entries(os.path.join(creds.store, "audit.log"))   # the chain verifies across the kill
        assert any(e["action"] == "lock" and e["outcome"] == "granted" for e in entries)
    finally:
        for s in served:
            s.stop()
        loop.close()
        creds.cleanup()
