"""faults.md items about requests and their answers, against `capwarden serve` on the virtual
board: 28, 31 and 49, 32, 52, 65, 70.
"""

import asyncio
import json
import os
import subprocess

import pytest

from capwarden.engine import protocol
from capwarden.errors import CapError
from enginerig import EXE, answer, exchange, never_answer, refusal, runtime, speed, wait_until


def test_fault_28_a_request_withdrawn_while_waiting_never_gets_the_grant(world, served, run):
    async def scenario():
        a = await runtime(served, "rtA")
        b = await runtime(served, "rtB")
        held = await world.take(a, "motor_left", "write")
        # B's runtime queues for the motor, then goes away before it is granted.
        waiting = asyncio.ensure_future(world.take(b, "motor_left", "write", who="B",
                                                  wait_ms=5000))
        await asyncio.sleep(0.3)
        await b.close()
        with pytest.raises(Exception):
            await waiting
        await held.release()                                      # the grant would now go to B...
        c = await runtime(served, "rtC")
        mine = await world.take(c, "motor_left", "write")
        await mine.command(1, speed(5))                            # ...but the motor is free for C
        b2 = await runtime(served, "rtB")
        assert (await b2.request("SessionQuery", {}))["sessions"] == []
        # FayTerminated while the Fay's own request waits: the request is answered, not granted.
        waiting = asyncio.ensure_future(b2.request("AuthRequest", {
            "fay_id": world.B, "resource_id": world.res("motor_left"), "access_mode": "write",
            "credential": world.cred(world.dB), "wait_ms": 5000}))
        await asyncio.sleep(0.3)
        assert (await b2.request("FayTerminated", {"fay_id": world.B}))["session_ids"] == []
        r = await waiting
        assert r["result"] == "denied" and r["error_code"] == "E_SESSION_NOT_FOUND"
        await mine.release()
        assert (await b2.request("SessionQuery", {}))["sessions"] == []
        for x in (a, b2, c):
            await x.close()

    run(scenario())


def test_fault_31_49_a_retried_request_gives_exactly_one_grant(world, client, run):
    a = client()
    msg = protocol.make("AuthRequest", {"fay_id": world.A, "resource_id": world.res("camera"),
                                        "access_mode": "execute", "credential": world.cred(world.dA)}, "rtA")

    async def scenario():
        first = await exchange(a, msg)
        again = await exchange(a, msg)                       # the same request id: a retry
        assert first == again and first["body"]["result"] == "granted"
        sessions = (await a.request("SessionQuery", {}))["sessions"]
        assert [s["session_id"] for s in sessions] == [first["body"]["session_id"]]
        # Two copies at once (the first still in flight) also yield one grant and one answer.
        twin = protocol.make("AuthRequest", {"fay_id": world.A, "resource_id": world.res("gps"),
                                             "access_mode": "read", "credential": world.cred(world.dA)}, "rtA")
        await a.ws.send(protocol.dumps(twin))
        await a.ws.send(protocol.dumps(twin))
        assert await wait_until(lambda: len([p for p in a.pushes if p.get("correlation_id") == twin["message_id"]]) == 2)
        r1, r2 = [p for p in a.pushes if p.get("correlation_id") == twin["message_id"]]
        assert r1 == r2 and r1["body"]["result"] == "granted"
        assert len((await a.request("SessionQuery", {}))["sessions"]) == 2
        # The same id on a different request is not a retry.
        forged = dict(msg, body=dict(msg["body"], resource_id=world.res("led")))
        r = await exchange(a, forged)
        assert r["message_type"] == "Error" and r["body"]["error_code"] == "E_MALFORMED_REQUEST"

    run(scenario())


def test_fault_32_a_new_session_does_not_inherit_the_old_grant(world, client, run):
    a = client()

    async def scenario():
        old = await world.take(a, "motor_right", "write")
        await old.command(1, speed(200))
        await old.release()
        new = await world.take(a, "motor_right", "write")
        assert new.session_id != old.session_id
        assert await refusal(old.command(1, speed(300))) == "E_SESSION_NOT_FOUND"   # the old id acts on nothing
        assert (await a.request("Heartbeat", {"session_ids": [old.session_id]}))["unknown"] == [old.session_id]
        await new.command(1, speed(300))

    run(scenario())


def test_fault_52_a_holder_that_never_releases_means_a_bounded_wait(world, client, run):
    a, b = client("rtA"), client("rtB")

    async def scenario():
        await world.take(a, "motor_left", "write")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(CapError) as exc:
            await world.take(b, "motor_left", "write", who="B", wait_ms=400)
        assert exc.value.code == "E_RESOURCE_BUSY" and loop.time() - t0 >= 0.35   # it waited, then was told
        huge_wait = world.take(b, "motor_left", "write", who="B", wait_ms=10 ** 7)
        assert await refusal(huge_wait) == "E_MALFORMED_REQUEST"

    run(scenario())


def test_fault_65_every_path_applies_the_same_ownership_check(world, client, run):
    a, b = client("rtA"), client("rtB")
    offers = never_answer(a)

    async def scenario():
        s = await world.take(a, "camera", "execute")
        sid = {"session_id": s.session_id}
        for mtype, body in (("SessionRelease", sid), ("ResourceCommand", dict(sid, op=1)), ("SessionQuery", sid)):
            with pytest.raises(CapError) as exc:
                await b.request(mtype, body)
            assert exc.value.code == "E_PERMISSION_DENIED", mtype
        assert (await b.request("Heartbeat", {"session_ids": [s.session_id]}))["alive"] == []
        assert (await b.request("SessionQuery", {}))["sessions"] == []
        assert (await b.request("FayTerminated", {"fay_id": world.A}))["session_ids"] == []
        pending = asyncio.ensure_future(world.hand_over(b, "camera", "execute", 3000))
        while not offers:
            await asyncio.sleep(0.02)
        assert await refusal(answer(b, offers[0])) == "E_PERMISSION_DENIED"
        assert s.state in ("active", "handover_pending")
        await s.release()                                         # once it has ended, every path says so
        assert (await pending)["result"] == "rejected"
        for mtype, body in (("SessionRelease", sid), ("ResourceCommand", dict(sid, op=1)), ("SessionQuery", sid)):
            with pytest.raises(CapError) as exc:
                await a.request(mtype, body)
            assert exc.value.code == "E_SESSION_NOT_FOUND", mtype

    run(scenario())


def test_fault_70_the_last_decision_survives_a_crash(world, served, run):
    async def scenario():
        a, s = await world.holding(served, "gps", "read")
        served.proc.kill()                                        # SIGKILL right after the answer
        served.proc.wait(timeout=20)
        return s

    s = run(scenario())
    out = subprocess.run([EXE, "audit", "--store", world.store, "--json"], capture_output=True, text=True, timeout=30)
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert out.returncode == 0 and lines[-1]["intact"] is True
    # The answer's own entry, the engine's decision: "authorized" (written before the board was
    # asked; the board's "lock granted" follows at the next flush, which a kill right after the
    # answer may beat), or "granted" for a request that waited.
    assert any(e.get("session") == s.session_id and e["action"] == "acquire" and e["outcome"] in ("authorized", "granted")
               for e in lines[:-1])
    assert os.stat(os.path.join(world.store, "audit.log")).st_mode & 0o077 == 0   # owner only
