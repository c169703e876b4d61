"""The board-side manual override (issue 15 item 5) on a 64 KB virtual board: its switch (the
file `override` in the board's flash, read in place every tick) takes every exclusive grant of a
resource away from Fays on the board itself and makes the resource safe, with the engine killed
or stalled; the engine, when it hears the board again, ends those sessions with the reason
manual_override and audits what the board did. The RC mode switch of boards/esp32_drone is the
same code path with a machine.Pin (tests/device/mp_board_esp32_drone.py; no hardware here)."""

import os
import subprocess
import sys
import time

import pytest

from capwarden.engine import audit, controlroom
from capwarden.link import open_board
from hil.helpers import R, speed, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "engine"))
from enginerig import EXE, TOKENS, World, runtime  # noqa: E402

HEAP = "64K"
NAMES = ("camera", "motor_left", "motor_right", "gps", "sdcard", "imu", "led", "gimbal")   # the sim board's order


def _switch(folder, on=()):
    # Written in place: the board keeps the file open and reads it again every tick.
    data = b"".join(b"1" if name in on else b"0" for name in NAMES)
    path = os.path.join(folder, "override")
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:
        f.write(data)


@pytest.fixture
def overridable(tmp_path, request):
    """A 64 KB virtual board whose flash holds the override switch, off."""
    if request.config.getoption("--port"):
        pytest.skip("needs the virtual board's switch file; a real board's switch is its own (esp32_drone: RC mode)")
    from capwarden.sim import VirtualBoard

    fs = str(tmp_path / "flash")
    os.makedirs(fs)
    _switch(fs)
    vb = VirtualBoard(heapsize=HEAP, fs_dir=fs)
    vb.start()
    yield vb
    vb.stop()


def _entries(path, action):
    return [e for e in audit.read(path)[0] if e.get("action") == action]


def test_override_with_the_engine_killed_board_alone_then_the_engine_back(overridable, tmp_path, run):
    vb = overridable
    world = World(str(tmp_path))
    args = [EXE, "serve", "--store", world.store, "--listen", "127.0.0.1:0", "--port", vb.port,
            "--runtime-token", "rtA=%s" % TOKENS["rtA"]]
    log = open(str(tmp_path / "serve.log"), "w")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving "), open(str(tmp_path / "serve.log")).read()

        async def hold():
            from capwarden.sdk import connect

            a = await connect(line.split()[1], "rtA", TOKENS["rtA"])
            s = await world.take(a, "motor_left", "write")
            await s.command(1, speed(400))
            return a
        run(hold())
        proc.kill()                                   # the host is dead: nothing renews, nothing is sent
        proc.wait()
        _switch(vb.fs_dir, ["motor_left"])
        time.sleep(0.5)                               # well within the 3 s lease: the switch, not the lease
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

    async def board_alone():
        b = await open_board(vb.port)
        ml = b.resource_index("motor_left")
        assert await b.grants(ml) == []               # the board took the grant itself
        ring = await b.audit_ring(1)
        ends = [e for e in ring.entries if e.name == "motor_left" and e.kind == "end"]
        assert ends and ends[-1].reason == "override"
        g = await b.acquire(ml, R, 999, 60000)        # the motor is safe: stopped
        assert int.from_bytes(await b.actuate(ml, 999, g.epoch, 2, b""), "little", signed=True) == 0
        await b.release(ml, 999, g.epoch)
        await b.close()
    run(board_alone())

    async def engine_back():
        from capwarden.engine.app import EngineApp

        app = EngineApp(world.store, "127.0.0.1:0", TOKENS, ports=[vb.port], leeway=0)
        await app.start()
        try:
            board = app.boards["sim"]
            # The board tells a new host the override at its first heartbeat.
            assert await wait_until(lambda: board.override == 1 << NAMES.index("motor_left"), 5)
            assert await wait_until(lambda: any(e["outcome"] == "override_on" for e in
                                                _entries(app.audit_path, "board")), 5)
            snap = controlroom.snapshot(app.engine)
            ml = next(r for r in snap["boards"][0]["resources"] if r["name"] == "motor_left")
            assert ml["override"] is True and ml["holders"] == []
            a = await runtime(app, "rtA")
            r = await a.request("AuthRequest", world.auth_body("motor_left", "write"))
            assert r["result"] == "denied" and r["error_code"] == "E_RESOURCE_BUSY"
            _switch(vb.fs_dir, [])                    # the pilot gives it back
            assert await wait_until(lambda: board.override == 0, 5)
            s = await world.take(a, "motor_left", "write")
            assert s.state == "active"
            await a.close()
        finally:
            await app.stop()
    run(engine_back())


def test_override_with_the_engine_stalled_ends_its_sessions_with_manual_override(overridable, tmp_path, run):
    vb = overridable
    world = World(str(tmp_path))

    async def scenario():
        from capwarden.engine.app import EngineApp

        app = EngineApp(world.store, "127.0.0.1:0", TOKENS, ports=[vb.port], leeway=0)
        await app.start()
        try:
            a, m = await world.holding(app, "motor_left", "write")
            g, gps = await world.holding(app, "gps", "read", who="B")
            await m.command(1, speed(300))
            await controlroom.take(app.engine, "alice", world.res("motor_right"))
            _switch(vb.fs_dir, ["motor_left", "motor_right", "gps"])
            time.sleep(1.0)          # the engine's loop stalls: it reads nothing, sends nothing
            assert await wait_until(lambda: m.state == "terminated", 5)
            assert m.changes[-1]["reason"] == "manual_override"
            assert gps.state == "active"                       # readers keep reading
            snap = controlroom.snapshot(app.engine)
            res = {r["name"]: r for r in snap["boards"][0]["resources"]}
            assert res["motor_left"]["override"] and res["motor_left"]["holders"] == []
            assert res["motor_right"]["holders"] == []         # the operator's hold went too
            assert await wait_until(lambda: [e["reason"] for e in _entries(app.audit_path, "terminate")
                                             if e.get("session") == m.session_id] == ["manual_override"], 5)
            assert await wait_until(lambda: any(e["outcome"] == "override_on" and "motor_left" in e["resources"]
                                                for e in _entries(app.audit_path, "board")), 5)
            # The board's own record of what it did, copied into the engine's log.
            assert await wait_until(lambda: {e["resource"] for e in _entries(app.audit_path, "board_ring")
                                             if e.get("reason") == "override"} >= {"motor_left", "motor_right"}, 5)
            await a.close()
            await g.close()
        finally:
            await app.stop()
    run(scenario())


def test_a_lost_ev_override_is_made_good_by_the_next_heartbeat_answer(tmp_path, run, request, monkeypatch):
    """EV_OVERRIDE is an event, never acknowledged. Dropped on the line, the engine used to
    believe the resource free of the override until its next host session: the control room
    showed none, and a take was refused by the board with a bare E_RESOURCE_BUSY. Every
    HEARTBEAT_R carries the mask (protocol 4): the engine knows it within a heartbeat period,
    audits it as seen in a heartbeat answer, and the operator's take is refused for the override."""
    if request.config.getoption("--port"):
        pytest.skip("needs the virtual board's switch file and the virtual cable's targeted drop")
    import capwarden.sim.board as board_mod
    from capwarden.engine.app import EngineApp
    from capwarden.errors import CapError
    from capwarden.sim import TO_HOST, VirtualBoard

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from chaos.rig import TargetedCable

    monkeypatch.setattr(board_mod, "VirtualCable", TargetedCable)      # drops aimed at one message type
    fs = str(tmp_path / "flash")
    os.makedirs(fs)
    _switch(fs)
    vb = VirtualBoard(heapsize=HEAP, fs_dir=fs)
    vb.start()
    world = World(str(tmp_path))

    async def scenario():
        app = await EngineApp(world.store, "127.0.0.1:0", TOKENS, ports=[vb.port], leeway=0).start()
        try:
            board = app.boards["sim"]
            vb.cable.inject_matching(TO_HOST, "drop", ("EV_OVERRIDE",), 1)
            _switch(vb.fs_dir, ["motor_right"])
            assert await wait_until(lambda: not vb.cable.armed(), 5)       # the event is gone
            assert await wait_until(lambda: board.override == 1 << NAMES.index("motor_right"), 5)
            assert await wait_until(lambda: any(e["outcome"] == "override_on" and "heartbeat" in e.get("detail", "")
                                                for e in _entries(app.audit_path, "board")), 5)
            snap = controlroom.snapshot(app.engine)
            mr = next(r for r in snap["boards"][0]["resources"] if r["name"] == "motor_right")
            assert mr["override"] is True
            with pytest.raises(CapError) as refused:
                await controlroom.take(app.engine, "alice", world.res("motor_right"))
            assert refused.value.code == "E_RESOURCE_BUSY" and "manual override" in str(refused.value)
            _switch(vb.fs_dir, [])                    # back: the next event (or heartbeat) says so
            assert await wait_until(lambda: board.override == 0, 5)
        finally:
            await app.stop()
    try:
        run(scenario())
    finally:
        vb.stop()
