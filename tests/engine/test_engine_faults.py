"""faults.md "Leases and heartbeats" and "Handover", and attacks.md section I, at the engine.

Against `capwarden serve` on the virtual board, liveness 200/1000 ms (motors 150/700 ms).
"""

import asyncio
import subprocess

import pytest

from capwarden.errors import CapError
from capwarden.sdk import connect
from conftest import EXE, TOKENS, wait_until


def speed(v):
    return int(v).to_bytes(2, "little", signed=True)


def test_fault_11_connection_up_heartbeats_stop_suspends_and_holds_safe(world, client, run):
    a = client()

    async def scenario():
        m = await a.acquire(world.A, world.res("motor_left"), "write", world.cred(world.dA))
        await m.command(1, speed(500))
        assert await wait_until(lambda: m.suspended, 5)          # no heartbeats, connection up
        assert m.state == "active"                               # AND rule: not expired
        with pytest.raises(CapError) as exc:
            await m.command(1, speed(500))                       # write refused by the board
        assert exc.value.code == "E_PERMISSION_DENIED"
        await m.heartbeat()                                      # heartbeats return
        assert await wait_until(lambda: not m.suspended, 5)
        await m.command(1, speed(100))

    run(scenario())


def test_fault_13_connection_down_and_timeout_expires(world, served, run):
    async def scenario():
        a = await connect(served.url, "rtA", TOKENS["rtA"])
        s = await a.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
        await a.close()                                          # down, and no heartbeats
        await asyncio.sleep(2.0)
        a2 = await connect(served.url, "rtA", TOKENS["rtA"])
        try:
            assert (await a2.request("SessionQuery", {}))["sessions"] == []
        finally:
            await a2.close()
        return s

    run(scenario())


def test_fault_14_session_never_heartbeating_still_expires(world, served, run):
    test_fault_13_connection_down_and_timeout_expires(world, served, run)


def test_fault_15_reconnect_in_time_keeps_sessions_after_expiry_does_not_resurrect(world, served, run):
    async def scenario():
        a = await connect(served.url, "rtA", TOKENS["rtA"])
        s = await a.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
        await a.close()
        await asyncio.sleep(0.3)                                 # well inside the 1 s timeout
        a2 = await connect(served.url, "rtA", TOKENS["rtA"])
        ack = await a2.request("Heartbeat", {"session_ids": [s.session_id]})
        assert ack["alive"] == [s.session_id]                    # same session, same grant
        await a2.close()
        await asyncio.sleep(2.0)
        a3 = await connect(served.url, "rtA", TOKENS["rtA"])
        ack = await a3.request("Heartbeat", {"session_ids": [s.session_id]})
        assert ack["unknown"] == [s.session_id]                  # expired stays expired
        await a3.close()

    run(scenario())


def test_fault_17_another_runtimes_heartbeat_does_not_keep_a_session_alive(world, served, run):
    async def scenario():
        a = await connect(served.url, "rtA", TOKENS["rtA"])
        s = await a.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
        await a.close()
        b = await connect(served.url, "rtB", TOKENS["rtB"])
        for _ in range(12):                                      # 2.4 s of foreign heartbeats
            ack = await b.request("Heartbeat", {"session_ids": [s.session_id]})
            assert ack["alive"] == []
            await asyncio.sleep(0.2)
        a2 = await connect(served.url, "rtA", TOKENS["rtA"])
        assert (await a2.request("SessionQuery", {}))["sessions"] == []
        await b.close()
        await a2.close()

    run(scenario())


def test_fault_23_runtime_crash_ends_sessions_and_motors_go_safe(world, served, run):
    async def scenario():
        a = await connect(served.url, "rtA", TOKENS["rtA"])
        m = await a.acquire(world.A, world.res("motor_left"), "write", world.cred(world.dA))
        await m.command(1, speed(800))
        a.ws.transport.abort()                                   # the runtime process dies
        await asyncio.sleep(2.0)
        c = await connect(served.url, "rtC", TOKENS["rtC"])
        r = await c.acquire(world.A, world.res("motor_left"), "read", world.cred(world.dA))
        assert await r.command(2) == speed(0)                    # the motor is idle
        await c.close()

    run(scenario())


def test_fault_24_per_class_timeouts_are_honoured(world, client, run):
    a = client()

    async def scenario():
        m = await a.acquire(world.A, world.res("motor_right"), "write", world.cred(world.dA))
        g = await a.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
        assert (m.timeout_ms, g.timeout_ms) == (700, 1000)
        order = []
        m.on_change(lambda c: c["suspended"] and order.append("motor"))
        g.on_change(lambda c: c["suspended"] and order.append("gps"))
        # Neither heartbeats: the motor class's shorter timeout must suspend it first.
        assert await wait_until(lambda: len(order) == 2, 10)
        assert order == ["motor", "gps"]

    run(scenario())


def test_fault_38_handover_never_answered_rolls_back(world, client, run):
    a, b = client("rtA"), client("rtB")
    never = asyncio.Event()

    async def hold(offer):
        await never.wait()

    a.on_offer(hold)

    async def scenario():
        sa = await a.acquire(world.A, world.res("camera"), "execute", world.cred(world.dA))
        r = await b.handover(world.res("camera"), world.B, "execute", world.cred(world.dB), 500)
        assert r["result"] == "rejected" and r["error_code"] == "E_HANDOVER_TIMEOUT"
        assert await wait_until(lambda: sa.changes[-1]["state"] == "active")
        assert sa.changes[-1]["reason"] == "handover_timeout"
        await sa.heartbeat()
        assert (await a.request("SessionQuery", {}))["sessions"][0]["state"] == "active"

    run(scenario())


def test_fault_39_late_consent_does_not_grant_a_stale_request(world, client, run):
    a, b = client("rtA"), client("rtB")
    offers = []
    a.on_offer(lambda o: offers.append(o) or asyncio.sleep(3600))

    async def scenario():
        sa = await a.acquire(world.A, world.res("camera"), "execute", world.cred(world.dA))
        r = await b.handover(world.res("camera"), world.B, "execute", world.cred(world.dB), 300)
        assert r["error_code"] == "E_HANDOVER_TIMEOUT"
        with pytest.raises(CapError) as exc:
            await a.request("HandoverResponse", {"handover_id": offers[0]["handover_id"], "accept": True})
        assert exc.value.code == "E_HANDOVER_TIMEOUT"
        assert (await b.request("SessionQuery", {}))["sessions"] == []
        assert await wait_until(lambda: sa.changes and sa.changes[-1]["state"] == "active")
        assert sa.changes[-1]["reason"] == "handover_timeout"

    run(scenario())


def test_fault_42_two_requesters_one_offer(world, client, run):
    a, b, c = client("rtA"), client("rtB"), client("rtC")
    offers = []

    async def slow_yes(o):
        offers.append(o)
        await asyncio.sleep(0.5)
        return True

    a.on_offer(slow_yes)

    async def scenario():
        await a.acquire(world.A, world.res("camera"), "execute", world.cred(world.dA))
        first = asyncio.ensure_future(b.handover(world.res("camera"), world.B, "execute", world.cred(world.dB), 5000))
        await asyncio.sleep(0.1)
        second = await c.handover(world.res("camera"), world.C, "execute", world.cred(world.dC), 5000)
        assert second["result"] == "rejected" and second["error_code"] == "E_HANDOVER_REJECTED"
        assert (await first)["result"] == "completed"
        assert len(offers) == 1

    run(scenario())


def test_fault_44_only_the_holder_releases(world, client, run):
    a, b = client("rtA"), client("rtB")
    s = run(a.acquire(world.A, world.res("camera"), "execute", world.cred(world.dA)))
    with pytest.raises(CapError) as exc:
        run(b.request("SessionRelease", {"session_id": s.session_id}))
    assert exc.value.code == "E_PERMISSION_DENIED"
    with pytest.raises(CapError) as exc:
        run(b.request("ResourceCommand", {"session_id": s.session_id, "op": 1}))
    assert exc.value.code == "E_PERMISSION_DENIED"
    assert run(a.request("SessionQuery", {}))["sessions"][0]["state"] == "active"


def test_fault_45_only_the_holder_answers_its_offer(world, client, run):
    a, b = client("rtA"), client("rtB")
    offers = []
    a.on_offer(lambda o: offers.append(o) or asyncio.sleep(3600))

    async def scenario():
        await a.acquire(world.A, world.res("camera"), "execute", world.cred(world.dA))
        pending = asyncio.ensure_future(b.handover(world.res("camera"), world.B, "execute", world.cred(world.dB), 2000))
        assert await wait_until(lambda: offers)
        with pytest.raises(CapError) as exc:    # the requester cannot consent on the holder's behalf
            await b.request("HandoverResponse", {"handover_id": offers[0]["handover_id"], "accept": True})
        assert exc.value.code == "E_PERMISSION_DENIED"
        assert (await pending)["error_code"] == "E_HANDOVER_TIMEOUT"

    run(scenario())


def test_fault_46_read_session_cannot_actuate(world, client, run):
    a = client()
    s = run(a.acquire(world.A, world.res("motor_left"), "read", world.cred(world.dA)))
    assert run(s.command(2)) == speed(0)
    with pytest.raises(CapError) as exc:
        run(s.command(1, speed(300)))
    assert exc.value.code == "E_PERMISSION_DENIED"


def test_I69_descriptor_expiring_mid_session_ends_it(world, client, run):
    short = world.descriptor(world.A, [world.grant("led", "write")], seconds=3)
    a = client()

    async def scenario():
        s = await a.acquire(world.A, world.res("led"), "write", world.cred(short))
        for _ in range(40):
            if s.state == "terminated":
                break
            await s.heartbeat()
            await asyncio.sleep(0.2)
        assert s.state == "terminated" and s.changes[-1]["reason"] == "credential_expired"

    run(scenario())


def test_I70_revocation_imported_mid_session_ends_it(world, client, run, tmp_path):
    a = client()

    async def scenario():
        s = await a.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
        rev = str(tmp_path / "rev.cbor")
        for cmd in (["revoke", "--key", world.keyfile, "--descriptor-id", world.dA, "--out", rev],
                    ["revocations", "import", "--store", world.store, rev]):
            assert subprocess.run([EXE] + cmd, capture_output=True, timeout=30).returncode == 0
        for _ in range(25):                                      # a bound: within 5 s
            if s.state == "terminated":
                break
            await s.heartbeat()
            await asyncio.sleep(0.2)
        assert s.state == "terminated" and s.changes[-1]["reason"] == "revoked"
        r = await a.request("AuthRequest", {"fay_id": world.A, "resource_id": world.res("gps"), "access_mode": "read",
                                            "credential": world.cred(world.dA)})
        assert r["error_code"] == "E_DESCRIPTOR_REVOKED"

    run(scenario())


def test_I72_replayed_command_is_refused(world, client, run):
    from capwarden.engine import protocol

    a = client()
    s = run(a.acquire(world.A, world.res("motor_left"), "write", world.cred(world.dA)))
    msg = protocol.make("ResourceCommand", {"session_id": s.session_id, "op": 1, "args": "ZAA"}, "rtA")

    async def send_twice():
        out = []
        for _ in range(2):
            fut = asyncio.get_running_loop().create_future()
            a._pending[msg["message_id"]] = fut
            await a.ws.send(protocol.dumps(msg))
            out.append(await asyncio.wait_for(fut, 10))
        return out

    first, second = run(send_twice())
    assert first["message_type"] == "ResourceCommandResult"
    assert second["message_type"] == "Error" and second["body"]["error_code"] == "E_MALFORMED_REQUEST"


def test_I73_no_resumption_without_the_credential_holder(world, client, run):
    a, b = client("rtA"), client("rtB")
    s = run(a.acquire(world.A, world.res("motor_left"), "write", world.cred(world.dA)))
    # Another runtime knowing the session id gets nothing from it.
    assert run(b.request("Heartbeat", {"session_ids": [s.session_id]}))["alive"] == []
    with pytest.raises(CapError):
        run(b.request("ResourceCommand", {"session_id": s.session_id, "op": 1, "args": "ZAA"}))


def test_board_reset_ends_the_sessions_on_it(world, tmp_path, run):
    """Engine in-process, so the test can reset the virtual board under it."""
    from capwarden.engine.app import EngineApp
    from capwarden.engine.liveness import LivenessPolicy

    async def scenario():
        app = EngineApp(world.store, "127.0.0.1:0", TOKENS, sim=True, liveness=LivenessPolicy(default=(200, 5000)))
        await app.start()
        try:
            a = await connect(app.server.url, "rtA", TOKENS["rtA"])
            s = await a.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
            from capshared import codec
            from capwarden.sim import TO_HOST
            fake = codec.encode_frame("ANNOUNCE", 0, {"proto": 1, "boot_id": 12345, "rx_buf": 256, "max_raw": 120,
                                                      "n_res": 8, "uptime_ms": 0, "info": b"0.1.0 sim"})
            app.vboard.cable.inject_bytes(TO_HOST, fake)        # the board says it rebooted
            assert await wait_until(lambda: s.state == "terminated", 5)
            assert s.changes[-1]["reason"] == "board_reset"
            await a.close()
        finally:
            await app.stop()

    run(scenario())


def test_resource_unplug_ends_its_sessions_only(world, tmp_path, run):
    from capwarden.engine.app import EngineApp

    async def scenario():
        app = EngineApp(world.store, "127.0.0.1:0", TOKENS, sim=True)
        await app.start()
        try:
            a = await connect(app.server.url, "rtA", TOKENS["rtA"])
            g = await a.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
            m = await a.acquire(world.A, world.res("motor_left"), "write", world.cred(world.dA))
            board = app.boards["sim"]
            await board.sim_plug(board.resource_index("gps"), False)
            assert await wait_until(lambda: g.state == "terminated", 5)
            assert g.changes[-1]["reason"] == "resource_removed" and m.state == "active"
            await m.command(1, speed(10))
            await a.close()
        finally:
            await app.stop()

    run(scenario())
