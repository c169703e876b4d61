"""faults.md "Handover" at the engine (first form: the holder's consent), end to end.

Not applicable to the first form: 36 and 48 (one resource per handover, no long-running
commands), 41 and 43's priority variants (later issue). The board-side atomicity of 35 is also
tested in hil/.
"""

import asyncio

import pytest

from capwarden.errors import CapError
from enginerig import answer, never_answer, refusal, wait_until


def test_fault_35_release_before_acquire_also_in_what_runtimes_are_told(world, client, run):
    a = client("rtA")                        # one runtime hosts both Fays: one ordered stream
    a.on_offer(lambda o: True)

    async def scenario():
        old = await world.take(a, "camera", "execute")
        r = await world.hand_over(a, "camera", "execute", 5000)
        assert r["result"] == "completed"
        new = r["session"]
        def events():
            return [(p["body"]["session_id"], p["body"]["state"]) for p in a.pushes
                    if p["message_type"] == "SessionStateChanged"]

        assert await wait_until(lambda: {(old.session_id, "terminated"), (new.session_id, "active")} <= set(events()))
        events = events()
        assert events.index((old.session_id, "terminated")) < events.index((new.session_id, "active"))
        listed = (await a.request("SessionQuery", {}))["sessions"]
        assert [(s["session_id"], s["fay_id"]) for s in listed] == [(new.session_id, world.B)]

    run(scenario())


def test_fault_38_handover_never_answered_rolls_back(world, client, run):
    a, b = client("rtA"), client("rtB")
    never = asyncio.Event()

    async def hold(offer):
        await never.wait()

    a.on_offer(hold)

    async def scenario():
        sa = await world.take(a, "camera", "execute")
        r = await world.hand_over(b, "camera", "execute", 500)
        assert r["result"] == "rejected" and r["error_code"] == "E_HANDOVER_TIMEOUT"
        assert await wait_until(lambda: sa.changes[-1]["state"] == "active")
        assert sa.changes[-1]["reason"] == "handover_timeout"   # both parties are told
        assert await sa.command(1)                               # the holder still holds it
        assert (await a.request("SessionQuery", {}))["sessions"][0]["state"] == "active"

    run(scenario())


def test_fault_39_late_consent_does_not_grant_a_stale_request(world, client, run):
    a, b = client("rtA"), client("rtB")
    offers = never_answer(a)

    async def scenario():
        sa = await world.take(a, "camera", "execute")
        r = await world.hand_over(b, "camera", "execute", 300)
        assert r["error_code"] == "E_HANDOVER_TIMEOUT"
        assert await refusal(answer(a, offers[0])) == "E_HANDOVER_TIMEOUT"
        assert (await b.request("SessionQuery", {}))["sessions"] == []
        assert await wait_until(lambda: sa.changes and sa.changes[-1]["state"] == "active")
        assert sa.changes[-1]["reason"] == "handover_timeout"

    run(scenario())


def test_fault_40_a_requester_that_lost_the_result_finds_its_session_by_query(world, client, run):
    a, b = client("rtA"), client("rtB")

    async def slow_yes(offer):
        await asyncio.sleep(0.5)
        return True

    a.on_offer(slow_yes)

    async def scenario():
        await world.take(a, "camera", "execute")
        with pytest.raises(asyncio.TimeoutError):     # the requester stops waiting: its answer is lost
            await b.request("HandoverRequest", {"resource_id": world.res("camera"), "to_fay_id": world.B,
                                                "access_mode": "execute", "credential": world.cred(world.dB),
                                                "timeout_ms": 5000}, timeout=0.1)
        await asyncio.sleep(1.0)
        listed = (await b.request("SessionQuery", {}))["sessions"]   # query before reporting failure
        assert len(listed) == 1 and listed[0]["fay_id"] == world.B and listed[0]["state"] == "active"

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
        await world.take(a, "camera", "execute")
        first = asyncio.ensure_future(world.hand_over(b, "camera", "execute", 5000))
        assert await wait_until(lambda: offers)
        second = await world.hand_over(c, "camera", "execute", 5000, who="C")
        assert second["result"] == "rejected" and second["error_code"] == "E_HANDOVER_REJECTED"
        assert (await first)["result"] == "completed"
        assert len(offers) == 1

    run(scenario())


def test_fault_43_a_plain_request_never_takes_over(world, client, run):
    a, b = client("rtA"), client("rtB")
    offers = []
    a.on_offer(lambda o: offers.append(o) or False)

    async def scenario():
        sa = await world.take(a, "camera", "execute")
        for wait_ms in (0, 300):                       # at once, and queued
            assert await refusal(world.take(b, "camera", "execute", who="B", wait_ms=wait_ms)) == "E_RESOURCE_BUSY"
        assert offers == [] and sa.state == "active"   # only a HandoverRequest asks the holder
        r = await world.hand_over(b, "camera", "execute", 2000)
        assert r["error_code"] == "E_HANDOVER_REJECTED" and len(offers) == 1

    run(scenario())


def test_fault_44_only_the_holder_releases(world, client, run):
    a, b = client("rtA"), client("rtB")
    s = run(world.take(a, "camera", "execute"))
    with pytest.raises(CapError) as exc:
        run(b.request("SessionRelease", {"session_id": s.session_id}))
    assert exc.value.code == "E_PERMISSION_DENIED"
    with pytest.raises(CapError) as exc:
        run(b.request("ResourceCommand", {"session_id": s.session_id, "op": 1}))
    assert exc.value.code == "E_PERMISSION_DENIED"
    assert run(a.request("SessionQuery", {}))["sessions"][0]["state"] == "active"


def test_fault_45_only_the_holder_answers_and_offers_are_cleared(world, client, run):
    a, b = client("rtA"), client("rtB")
    offers = never_answer(a)

    async def scenario():
        sa = await world.take(a, "camera", "execute")
        pending = asyncio.ensure_future(world.hand_over(b, "camera", "execute", 5000))
        assert await wait_until(lambda: offers)
        assert await refusal(answer(b, offers[0])) == "E_PERMISSION_DENIED"
        await b.close()                         # the requester goes away: the offer is withdrawn at once
        assert await wait_until(lambda: sa.changes and sa.changes[-1]["reason"] == "handover_rejected", 3)
        assert await refusal(answer(a, offers[0])) == "E_HANDOVER_TIMEOUT"
        assert sa.state == "active"
        pending.cancel()

    run(scenario())


def test_handover_of_a_shared_resource_is_refused(world, client, run):
    a, b, c = client("rtA"), client("rtB"), client("rtC")
    a.on_offer(lambda o: True)
    b.on_offer(lambda o: True)

    async def scenario():
        await world.take(a, "gps", "read")
        await world.take(b, "gps", "read", who="B")
        gps = world.descriptor(world.C, [world.grant("gps", "read")])
        r = await c.handover(world.res("gps"), world.C, "read", world.cred(gps), 2000)
        assert r["result"] == "rejected" and r["error_code"] == "E_HANDOVER_REJECTED" and "shared" in r["error_message"]

    run(scenario())


def test_handover_with_no_holder_is_an_acquisition(world, client, run):
    b = client("rtB")
    r = run(world.hand_over(b, "camera", "execute", 1000))
    assert r["result"] == "completed" and r["session"].state == "active"
    assert r["heartbeat_timeout_ms"] == 1000


def test_handover_needs_the_receiving_fays_credential(world, client, run):
    a, b = client("rtA"), client("rtB")
    offers = []
    a.on_offer(lambda o: offers.append(o) or True)
    run(world.take(a, "motor_right", "write"))
    r = run(world.hand_over(b, "motor_right", "write", 1000))
    assert r["result"] == "rejected" and r["error_code"] == "E_DESCRIPTOR_RESOURCE_NOT_GRANTED"
    assert offers == []                          # checked before the holder is bothered


def test_fault_46_a_read_session_cannot_actuate(world, client, run):
    from enginerig import speed

    a = client()
    s = run(world.take(a, "motor_left", "read"))
    assert run(s.command(2)) == speed(0)                 # reading the speed is a read
    with pytest.raises(CapError) as exc:
        run(s.command(1, speed(300)))                    # setting it actuates: gated by the mode
    assert exc.value.code == "E_PERMISSION_DENIED"
