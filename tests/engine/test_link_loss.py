"""Issue 9 defect 10: a dead board is noticed.

When the board stops answering (its process killed, the cable cut) the engine notices within
the link's retries of one board heartbeat, ends the sessions on that board with
board_unreachable (the board's lease failsafe makes the hardware safe), says so in its log,
refuses new requests for it at once with E_DEVICE_UNREACHABLE, and reconciles the board when
it answers again. The engine runs in this process, on the virtual board.
"""

import asyncio
import logging
import os
import signal

from capwarden.engine import invariants
from enginerig import runtime, speed, wait_until


def _warned(caplog, text):
    return [r for r in caplog.records if r.name == "capwarden.engine" and r.levelno >= logging.WARNING
            and text in r.getMessage()]


def test_issue9_10_killing_the_board_process_ends_its_sessions(world, run, in_process, caplog):
    caplog.set_level(logging.WARNING, logger="capwarden.engine")

    async def scenario():
        app = await in_process()
        a, m = await world.holding(app, "motor_left", "write")
        g = await world.take(a, "gps", "read")
        os.killpg(app.vboard.proc.pid, signal.SIGKILL)          # the board process dies; the line stays
        app.vboard.proc.wait(timeout=10)
        beating = asyncio.ensure_future(_beat(m, g))            # the runtime itself is healthy
        assert await wait_until(lambda: m.state == g.state == "terminated", 15)
        beating.cancel()
        assert m.changes[-1]["reason"] == g.changes[-1]["reason"] == "board_unreachable"
        # What really happens: the virtual cable keeps the host's pty open, so the port never
        # closes (no on_lost); the board heartbeat's retries run out and the link reports LinkDown.
        assert [r for r in _warned(caplog, "unreachable") if "no answer to" in r.getMessage()]
        r = await a.request("AuthRequest", {"fay_id": world.A, "resource_id": world.res("camera"),
                                            "access_mode": "execute", "credential": world.cred(world.dA)})
        assert r["result"] == "denied" and r["error_code"] == "E_DEVICE_UNREACHABLE"
        assert "does not answer" in r["error_message"]          # refused at once, not after the link's retries
        assert invariants.check(app.engine, app.audit_path) == []
        await a.close()

    run(scenario())


async def _beat(*sessions):
    while True:
        for s in sessions:
            try:
                await s.heartbeat()
            except Exception:
                pass
        await asyncio.sleep(0.1)


def test_issue9_10_a_closed_port_is_noticed_at_once(world, run, in_process, caplog):
    caplog.set_level(logging.WARNING, logger="capwarden.engine")

    async def scenario():
        app = await in_process()
        a, m = await world.holding(app, "motor_left", "write")
        app.vboard.crash()                                       # process, cable and ptys gone: a USB unplug
        assert await wait_until(lambda: m.state == "terminated", 15)
        assert m.changes[-1]["reason"] == "board_unreachable"
        warned = _warned(caplog, "unreachable")
        assert warned and not [r for r in warned if "no answer to" in r.getMessage()]   # the port's end, not retries
        await a.close()

    run(scenario())


def test_fault_30_issue9_10_a_cut_cable_ends_the_sessions_and_recovers(world, run, in_process, caplog):
    caplog.set_level(logging.WARNING, logger="capwarden.engine")

    async def scenario():
        app = await in_process(lease_ms=600, board_heartbeat_ms=150)
        board = app.boards["sim"]
        a, m = await world.holding(app, "motor_left", "write")
        res = board.resource_index("motor_left")
        beating = asyncio.ensure_future(_beat(m))               # the runtime stays healthy throughout
        app.vboard.cable.disconnect()
        assert await wait_until(lambda: m.state == "terminated", 15)    # noticed while the cable is cut
        assert m.changes[-1]["reason"] == "board_unreachable"
        assert _warned(caplog, "unreachable")
        app.vboard.cable.reconnect()
        h = app.engine.registry.boards["sim"]
        assert await wait_until(lambda: h.down is None and not h.retired, 15)
        beating.cancel()
        assert _warned(caplog, "answers again")
        assert await board.grants(res) == []                    # neither side holds it
        again = await world.take(a, "motor_left", "write", wait_ms=3000)
        await again.command(1, speed(10))
        assert invariants.check(app.engine, app.audit_path) == []
        assert await invariants.check_boards(app.engine) == []
        await a.close()

    run(scenario())


def test_issue9_10_replies_lost_on_the_way_back_leave_no_grant(world, run, in_process):
    from capwarden.sim import TO_HOST

    async def scenario():
        app = await in_process(lease_ms=600, board_heartbeat_ms=150)
        board = app.boards["sim"]
        a, m = await world.holding(app, "motor_left", "write")
        res = board.resource_index("motor_left")
        app.vboard.cable.inject(TO_HOST, "drop", count=12)    # the board hears us, we do not hear it
        assert await wait_until(lambda: m.state == "terminated", 15)
        assert m.changes[-1]["reason"] == "board_unreachable"
        h = app.engine.registry.boards["sim"]
        assert await wait_until(lambda: h.down is None and not h.retired, 20)
        assert await board.grants(res) == []                    # ended, not renewed by our heartbeats
        await a.close()

    run(scenario())


def test_issue9_10_a_request_queued_on_a_board_that_dies_is_answered_at_once(world, run, in_process):
    """A request waiting in the board's queue (wait_ms) when the board dies gets its answer when
    the link is found down, not after its whole wait: a runtime is not left hanging for minutes."""
    import time

    async def scenario():
        app = await in_process(lease_ms=600, board_heartbeat_ms=150)
        a = await runtime(app, "rtA")
        b = await runtime(app, "rtB")
        await world.take(a, "motor_left", "write")
        waiting = asyncio.ensure_future(b.request("AuthRequest", {
            "fay_id": world.B, "resource_id": world.res("motor_left"), "access_mode": "write",
            "credential": world.cred(world.dB), "wait_ms": 45000}))
        await asyncio.sleep(0.5)                                  # queued on the board
        assert not waiting.done()
        t0 = time.monotonic()
        os.killpg(app.vboard.proc.pid, signal.SIGKILL)
        r = await asyncio.wait_for(waiting, 40)
        assert r["result"] == "denied" and r["error_code"] == "E_DEVICE_UNREACHABLE", r
        assert time.monotonic() - t0 < 30                        # not the 45 s it asked to wait (generous)
        assert invariants.check(app.engine, app.audit_path) == []
        await a.close()
        await b.close()

    run(scenario())
