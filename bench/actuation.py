"""The guarded actuation against the unguarded one: a ResourceCommand through the engine
(session, epoch and mode checked on the board) against a raw-REPL exec of the same driver call
on a second virtual board without the agent, in one open mpremote session (what Belay and
`mpremote exec` do), alternately; on bare ptys and on lines paced at a UART's baud rate."""

import os
import pty
import shutil
import subprocess
import time
import tty

from bench.runtimes import ACQUIRE, RawRuntime, _auth_body
from capwarden.credentials.b64 import b64u_encode

class ReplBoard:
    """The unguarded baseline: the sim board's driver module on MicroPython without the agent, on
    a bare pty, driven by mpremote's transport in one raw-REPL session (entered once).

    baud: the line paced at this rate by a virtual cable between mpremote's pty and the board's,
    as the guarded side's board line is in the same measurement."""

    def __init__(self, baud=None):
        from mpremote.transport_serial import SerialTransport

        from capwarden.sim import firmware
        from capwarden.sim.board import micropython_exe

        self.staged, _written = firmware.stage("sim")
        master, slave = pty.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        # MicroPython on the master side, so that mpremote opens the other end by its path.
        self.proc = subprocess.Popen([micropython_exe(), "-X", "heapsize=2M"], stdin=master, stdout=master,
                                     stderr=master, cwd=self.staged, close_fds=True)
        self._fds = [master, slave]
        self.cable = None
        port = os.ttyname(slave)
        if baud:
            from capwarden.sim.cable import VirtualCable

            # The board keeps the first pty (its master end); mpremote opens a second pty, and
            # the cable joins the two masters at `baud`.
            hm, hs = pty.openpty()
            tty.setraw(hm)
            tty.setraw(hs)
            self._fds += [hm, hs]
            self.cable = VirtualCable(hm, slave, baud=baud).start()
            port = os.ttyname(hs)
        self.t = SerialTransport(port, baudrate=115200)
        self.t.enter_raw_repl(soft_reset=False)
        self.t.exec("from board import SimMotor\nm = SimMotor('motor_left')\na = bytearray(2)\no = bytearray(8)")

    def set_speed(self, v):
        """The driver call the ResourceCommand makes (op 1, set speed), and its answer back."""
        out = self.t.exec("a[0]=%d;a[1]=%d;m.op(1,a,0,2,o);print(o[0]|o[1]<<8)" % (v & 0xFF, (v >> 8) & 0xFF))
        return int(out)

    def close(self):
        try:
            self.t.exit_raw_repl()
            self.t.close()
        finally:
            if self.cable:
                self.cable.close()
            self.proc.kill()
            self.proc.wait()
            for fd in self._fds:
                os.close(fd)
            shutil.rmtree(self.staged, ignore_errors=True)


async def _pair(repl, rt, sid, v):
    """One unguarded and one guarded setting of the motor's speed to `v`, each checked:
    (raw-REPL seconds, ResourceCommand seconds)."""
    t0 = time.perf_counter()
    if repl.set_speed(v) != v:
        raise RuntimeError("the raw REPL did not set the speed")
    e = time.perf_counter() - t0
    reply, g = await rt.call("ResourceCommand", {"session_id": sid, "op": 1, "args": b64u_encode(v.to_bytes(2, "little"))})
    if reply["message_type"] != "ResourceCommandResult":
        raise RuntimeError("ResourceCommand refused: %r" % reply["body"])
    return e, g


async def _actuation(world, url, count, repl, direct, echo, ws):
    """Alternately: the raw-REPL exec, the ResourceCommand through the engine, the same ACTUATE
    frame sent by the host's link API straight to a board with no engine in between, the
    AuthRequest's board lock the same way, and a bare WebSocket echo of each request's frame
    (`ws`, bench.runtimes.WsEcho). Each iteration's WebSocket echo plus its link round trip is
    the floor of that request through any engine with the runtime API's process hop: what it
    would take if the engine did no work at all."""
    from capshared.limits import MODE_READ, MODE_WRITE
    from capwarden import runtimeapi

    rt = await RawRuntime("rt").open(url, "bench-token-1")
    reply, _ = await rt.call("AuthRequest", _auth_body(world, "motor_left", "write"))
    sid = reply["body"]["session_id"]
    ml = direct.resource_index("motor_left")
    gps = direct.resource_index("gps")
    grant = await direct.acquire(ml, MODE_WRITE, 7, 600000)
    command = runtimeapi.dumps(runtimeapi.make("ResourceCommand", {"session_id": sid, "op": 1, "args": "ZAA"}, "rt"))
    auth = runtimeapi.dumps(runtimeapi.make("AuthRequest", _auth_body(world), "rt"))
    f = {k: [] for k in ("guarded", "raw", "link", "locks", "lock_raw", "act_floor", "auth_floor")}
    for i in range(count + 20):
        v = 100 + i % 500
        e, g = await _pair(repl, rt, sid, v)
        t0 = time.perf_counter()
        await direct.actuate(ml, 7, grant.epoch, 1, v.to_bytes(2, "little"))
        d = time.perf_counter() - t0
        hop_act = await ws.rtt(command)
        le = echo.rtt(ACQUIRE)
        t0 = time.perf_counter()
        g2 = await direct.acquire(gps, MODE_READ, 8, 3000)
        lk = time.perf_counter() - t0
        await direct.release(gps, 8, g2.epoch)
        hop_auth = await ws.rtt(auth)
        if i % 50 == 0:
            await rt.call("Heartbeat", {"session_ids": [sid]})
        if i >= 20:
            for k, x in (("guarded", g), ("raw", e), ("link", d), ("locks", lk), ("lock_raw", le),
                         ("act_floor", hop_act + d), ("auth_floor", hop_auth + lk)):
                f[k].append(x)
    await rt.call("SessionRelease", {"session_id": sid})
    await rt.close()
    await direct.release(ml, 7, grant.epoch)
    return f


async def _actuation_run(world, url, count, echo):
    """The figures of `_actuation` (a dict of sample lists), its boards and echo set up here."""
    from bench.runtimes import WsEcho
    from capwarden.link import Board, FdTransport
    from capwarden.sim import VirtualBoard

    repl = ReplBoard()
    ws = None
    try:
        ws = await WsEcho().open()
        with VirtualBoard() as vb:
            direct = Board(FdTransport(vb.detach_cable(), "virtual board pty"), timeout=0.5, retries=3, key=vb.link_key)
            await direct.open()
            try:
                return await _actuation(world, url, count, repl, direct, echo, ws)
            finally:
                await direct.close()
    finally:
        if ws is not None:
            await ws.close()
        repl.close()


async def _actuation_paced(world, url, count, baud):
    """The guarded actuation against the raw-REPL exec with both boards' lines paced at `baud`
    (a UART board's line, and mpremote's default rate): alternately, one open session each."""
    rt = await RawRuntime("rt").open(url, "bench-token-1")
    reply, _ = await rt.call("AuthRequest", _auth_body(world, "motor_left", "write"))
    sid = reply["body"]["session_id"]
    repl = ReplBoard(baud=baud)
    guarded, raw = [], []
    try:
        for i in range(count + 5):
            e, g = await _pair(repl, rt, sid, 100 + i % 500)
            if i % 20 == 0:
                await rt.call("Heartbeat", {"session_ids": [sid]})
            if i >= 5:
                guarded.append(g)
                raw.append(e)
    finally:
        repl.close()
    await rt.call("SessionRelease", {"session_id": sid})
    await rt.close()
    return guarded, raw
