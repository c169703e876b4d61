"""faults.md "Leases and heartbeats" at the engine, against `capwarden serve` on the virtual board.

Liveness 200/1000 ms (motors 150/700 ms). The exact timing edges (13's boundary, 19, 25) are
in test_engine_unit.py with injected clocks; the device side (26, 27, 29-31, 33, 34) in hil/.
"""

import asyncio

import pytest

from capwarden.engine import protocol
from enginerig import exchange, refusal, runtime, speed, wait_until


def test_fault_11_connection_up_heartbeats_stop_suspends_and_holds_safe(world, client, run):
    a = client()

    async def scenario():
        m = await world.take(a, "motor_left", "write")
        await m.command(1, speed(500))
        assert await wait_until(lambda: m.suspended, 5)          # no heartbeats, connection up
        assert m.state == "active"                               # AND rule: not expired
        assert await refusal(m.command(1, speed(500))) == "E_PERMISSION_DENIED"   # write refused by the board
        await m.heartbeat()                                      # heartbeats return
        assert await wait_until(lambda: not m.suspended, 5)
        await m.command(1, speed(100))

    run(scenario())


def test_fault_13_connection_down_and_timeout_expires(world, served, run):
    async def scenario():
        a, s = await world.holding(served, "gps", "read")
        await s.heartbeat()
        await a.close()                                          # down first, then the timeout
        await asyncio.sleep(2.0)
        a2 = await runtime(served, "rtA")
        try:
            assert (await a2.request("SessionQuery", {}))["sessions"] == []
            assert (await a2.request("Heartbeat", {"session_ids": [s.session_id]}))["unknown"] == [s.session_id]
        finally:
            await a2.close()

    run(scenario())


def test_fault_14_session_never_heartbeating_still_expires(world, served, client, run):
    a = client()

    async def scenario():
        s = await world.take(a, "gps", "read")
        # Not one heartbeat. With the connection up the AND rule suspends, never expires...
        assert await wait_until(lambda: s.suspended, 5)
        assert s.state == "active"
        await a.close()                                          # ...and once it drops, it ends
        await asyncio.sleep(0.5)                                 # (already late: at the next sweep)
        b = await runtime(served, "rtA")
        try:
            assert (await b.request("SessionQuery", {}))["sessions"] == []
        finally:
            await b.close()

    run(scenario())


def test_fault_15_reconnect_in_time_keeps_sessions_after_expiry_does_not_resurrect(world, served, run):
    async def scenario():
        a, s = await world.holding(served, "gps", "read")
        a.ws.transport.abort()                                   # the network drops
        await asyncio.sleep(0.3)                                 # well inside the 1 s timeout
        await a.reconnect()
        assert await s.heartbeat()                               # same session, same grant
        assert await s.command(1)                                # and it still reads
        await a.close()
        await asyncio.sleep(2.0)
        await a.reconnect()
        ack = await a.request("Heartbeat", {"session_ids": [s.session_id]})
        assert ack["unknown"] == [s.session_id]                  # expired stays expired
        assert await refusal(s.command(1)) == "E_SESSION_NOT_FOUND"
        await a.close()

    run(scenario())


def test_fault_17_another_runtimes_heartbeat_does_not_keep_a_session_alive(world, served, run):
    async def scenario():
        a, s = await world.holding(served, "gps", "read")
        await a.close()
        b = await runtime(served, "rtB")
        for _ in range(12):                                      # 2.4 s of foreign heartbeats
            ack = await b.request("Heartbeat", {"session_ids": [s.session_id]})
            assert ack["alive"] == []
            await asyncio.sleep(0.2)
        a2 = await runtime(served, "rtA")
        assert (await a2.request("SessionQuery", {}))["sessions"] == []
        await b.close()
        await a2.close()

    run(scenario())


def test_fault_22_a_dead_keep_alive_loop_is_surfaced_to_the_runtime(world, client, run):
    a = client()
    seen = []

    async def scenario():
        s = await world.take(a, "camera", "execute")
        s.on_change(seen.append)

        async def keep_alive():
            for _ in range(3):
                await s.heartbeat()
                await asyncio.sleep(0.1)
            raise RuntimeError("the keep-alive loop dies silently")

        with pytest.raises(RuntimeError):
            await keep_alive()
        # The runtime still believes it holds the camera; the engine tells it otherwise.
        assert await wait_until(lambda: any(c["reason"] == "heartbeat_missed" for c in seen), 5)
        listed = (await a.request("SessionQuery", {"session_id": s.session_id}))["sessions"][0]
        assert listed["suspended"] is True and s.suspended is True

    run(scenario())


def test_fault_23_runtime_crash_ends_sessions_and_motors_go_safe(world, served, run):
    async def scenario():
        a, m = await world.holding(served, "motor_left", "write")
        await m.command(1, speed(800))
        a.ws.transport.abort()                                   # the runtime process dies
        c = await runtime(served, "rtC")
        # Busy until the timeout ends A's session, then (after the board's lock-delay) free.
        r = await world.take(c, "motor_left", "read", wait_ms=5000)
        assert await r.command(2) == speed(0)                    # the motor is idle
        await c.close()

    run(scenario())


def test_fault_24_per_class_timeouts_are_honoured(world, client, run):
    a = client()

    async def scenario():
        m = await world.take(a, "motor_right", "write")
        g = await world.take(a, "gps", "read")
        assert (m.timeout_ms, g.timeout_ms) == (700, 1000)
        order = []
        m.on_change(lambda c: c["suspended"] and order.append("motor"))
        g.on_change(lambda c: c["suspended"] and order.append("gps"))
        # Neither heartbeats: the motor class's shorter timeout must suspend it first.
        assert await wait_until(lambda: len(order) == 2, 10)
        assert order == ["motor", "gps"]

    run(scenario())


def test_fault_26_a_frozen_heartbeat_counts_as_missed(world, client, run):
    a = client()

    async def scenario():
        s = await world.take(a, "gps", "read")
        frozen = protocol.make("Heartbeat", {"session_ids": [s.session_id]}, "rtA")
        acks = []
        for _ in range(15):                                      # 1.5 s of the same message
            acks.append(await exchange(a, frozen))
            await asyncio.sleep(0.1)
        assert all(r == acks[0] for r in acks)                   # answered the same, not acted on again
        assert s.suspended                                       # the timeout (1 s) passed unrenewed

    run(scenario())
