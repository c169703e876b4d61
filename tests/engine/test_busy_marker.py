"""faults.md 18 (issue 9 defect 11, engine part): a long but healthy blocking operation.

A runtime about to block (a calibration, a flash) sends a Heartbeat with `busy_ms`: until its
next heartbeat the session is late only after max(timeout, busy_ms), bounded by the engine's
maximum, which the HeartbeatAck reports. Audited. Injected clocks, no waiting.
"""

import asyncio

import pytest

from capwarden.engine import protocol
from enginerig import refusal
from tableboard import Rig, run


@pytest.fixture
def rig(tmp_path):
    return Rig(str(tmp_path), max_busy_ms=30000)


async def _beat(rig, s, busy=None):
    body = {"session_ids": [s.session_id]}
    if busy is not None:
        body["busy_ms"] = busy
    r = await rig.request("rtA", "Heartbeat", body)
    assert r["message_type"] == "HeartbeatAck", r
    return r["body"]


def test_fault_18_busy_marker_holds_off_suspension_for_its_time(rig):
    c = rig.clocks

    async def scenario():
        s = rig.session(await rig.acquire("motor_left", "write"))
        ack = await _beat(rig, s, busy=20000)
        assert ack["busy_ms"] == 20000 and ack["alive"] == [s.session_id]
        c.mono += 19.9                                 # far past the 5 s timeout, inside the marker
        await rig.e.sweep()
        assert s.state == "active" and not s.suspended
        c.mono += 0.2                                  # the marker's time is over
        await rig.e.sweep()
        assert s.suspended
        await _beat(rig, s)                            # back: a plain heartbeat clears it
        assert not s.suspended and s.busy_ms == 0
        c.mono += 5.001
        await rig.e.sweep()
        assert s.suspended                             # the normal timeout again

    run(scenario())


def test_fault_18_busy_marker_is_bounded_by_the_engine(rig):
    c = rig.clocks

    async def scenario():
        s = rig.session(await rig.acquire("motor_left", "write"))
        ack = await _beat(rig, s, busy=600000)         # asks ten minutes
        assert ack["busy_ms"] == 30000                 # gets the engine's maximum, and is told so
        c.mono += 30.001
        await rig.e.sweep()
        assert s.suspended
        entries = [e for e in rig.audit() if e["action"] == "busy"]
        assert entries and entries[-1]["requested_ms"] == 600000 and entries[-1]["busy_ms"] == 30000
        assert entries[-1]["sessions"] == [s.session_id]

    run(scenario())


def test_fault_18_busy_marker_keeps_the_and_rule_for_a_dropped_connection(rig):
    c = rig.clocks

    async def scenario():
        s = rig.session(await rig.acquire("gps", "read"))
        await _beat(rig, s, busy=10000)
        rig.e.disconnected("rtA", rig.send)
        c.mono += 9.9
        await rig.e.sweep()
        assert s.state == "active"                     # busy, not late: the lost connection alone ends nothing
        c.mono += 0.2
        await rig.e.sweep()
        assert s.state == "terminated"                 # late and disconnected

    run(scenario())


def test_fault_18_busy_ms_in_the_schema():
    ok = protocol.make("Heartbeat", {"session_ids": [], "busy_ms": 1000}, "rtA")
    protocol.validate(ok)
    for bad in (-1, 600001, 1.5, "10", True):
        with pytest.raises(protocol.BadMessage):
            protocol.validate(protocol.make("Heartbeat", {"session_ids": [], "busy_ms": bad}, "rtA"))
    protocol.validate(protocol.make("HeartbeatAck", {"alive": [], "unknown": [], "busy_ms": 0}, "e"))


def test_fault_18_sdk_busy_through_serve(world, client, run):
    
    a = client("rtA")

    async def scenario():
        s = await world.take(a, "gps", "read")
        assert await s.busy(2500) == 2500               # longer than the test's 1 s timeout
        await asyncio.sleep(1.6)                        # past the timeout, inside the marker
        assert s.state == "active" and not s.suspended
        assert await s.busy(10 ** 5) == 60000           # serve's default maximum
        ack = await a.heartbeat()                       # a plain heartbeat clears it
        assert ack["alive"] == [s.session_id] and "busy_ms" not in ack
        # beyond the schema: refused before sending
        assert await refusal(s.busy(600001)) == "E_MALFORMED_REQUEST"
        await s.release()

    run(scenario())
