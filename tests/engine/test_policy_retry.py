"""Timeouts, rollback and retry strategies of the handover policies (blueprint 2.4 "Timeout
Handling Principles"; issue 15 item 1): the board's move fails, the holder keeps control and is
told, then `auto` retries with back-off within the timeout, `person` asks an operator, `none`
gives up; faults.md 38 (rollback on timeout), 40 (a lost answer read back), 49 (bounded retries)."""

import asyncio

from capwarden.errors import DeviceError, LinkTimeout
from enginerig import refusal, runtime, wait_until
from policyrig import audit_entries, settings, take

RULE = "urgency"
FAYS = {"A": {"max_urgency": 10}, "B": {"max_urgency": 10}}


def policy(world, retry, timeout_ms=3000):
    return settings(world, [("motor_left", "priority", {"rule": RULE, "retry": retry, "timeout_ms": timeout_ms})],
                    FAYS)


def failing_moves(app, n, exc=lambda: DeviceError("E_RESOURCE_BUSY", "the board is busy")):
    """The board's HANDOVER fails for the next `n` calls (then works); the list of call times."""
    board = app.boards["sim"]
    real = board.handover
    calls = []

    async def handover(*a, **kw):
        calls.append(asyncio.get_running_loop().time())
        if len(calls) <= n:
            raise exc()
        return await real(*a, **kw)

    board.handover = handover
    return calls


def test_auto_retry_with_backoff_then_granted(world, in_process, run):
    async def scenario():
        app = await in_process(handover=policy(world, {"strategy": "auto", "attempts": 3, "backoff_ms": 40}))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A", urgency=1)
        calls = failing_moves(app, 2)
        sb = await take(world, b, "motor_left", "write", "B", urgency=9)
        assert len(calls) == 3 and sb.state == "active" and await sa.ended(5) == "preempted"
        assert calls[2] - calls[1] >= calls[1] - calls[0] >= 0.035            # the back-off doubles
        assert [e["attempt"] for e in audit_entries(app, "policy") if e["outcome"] == "rollback"] == [1, 2]
        assert audit_entries(app, "handover")[-1]["attempt"] == 3

    run(scenario())


def test_fault_49_retries_are_bounded_and_roll_back_to_the_holder(world, in_process, run):
    async def scenario():
        app = await in_process(handover=policy(world, {"strategy": "auto", "attempts": 2, "backoff_ms": 10}))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A", urgency=1)
        calls = failing_moves(app, 100)
        code = await refusal(take(world, b, "motor_left", "write", "B", urgency=9))
        assert code == "E_RESOURCE_BUSY" and len(calls) == 3                  # the first try and 2 retries
        assert sa.state == "active" and await sa.command(1, b"\x01\x00") is not None   # rollback: A keeps it
        assert await wait_until(lambda: any(c["reason"] == "handover_failed" for c in sa.changes))   # and is told
        assert (await b.request("SessionQuery", {}))["sessions"] == []

    run(scenario())


def test_fault_38_the_timeout_stops_the_retries(world, in_process, run):
    async def scenario():
        app = await in_process(handover=policy(world, {"strategy": "auto", "attempts": 10, "backoff_ms": 200},
                                               timeout_ms=300))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A", urgency=1)
        calls = failing_moves(app, 100)
        assert await refusal(take(world, b, "motor_left", "write", "B", urgency=9)) == "E_HANDOVER_TIMEOUT"
        assert len(calls) == 2                                                # 200 ms, then 400 would pass 300
        assert sa.state == "active" and await sa.command(1, b"\x01\x00") is not None

    run(scenario())


def test_no_retry_gives_up_after_one_try(world, in_process, run):
    async def scenario():
        app = await in_process(handover=policy(world, {"strategy": "none"}))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A", urgency=1)
        calls = failing_moves(app, 1)
        assert await refusal(take(world, b, "motor_left", "write", "B", urgency=9)) == "E_RESOURCE_BUSY"
        assert len(calls) == 1 and sa.state == "active"

    run(scenario())


def test_wait_for_a_person_then_retry(world, in_process, run):
    async def scenario():
        app = await in_process(handover=policy(world, {"strategy": "person"}, timeout_ms=5000))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A", urgency=1)
        calls = failing_moves(app, 1)
        asking = asyncio.ensure_future(take(world, b, "motor_left", "write", "B", urgency=9))
        assert await wait_until(lambda: app.engine.decisions.pending())
        d = app.engine.decisions.pending()[0]
        assert d.what == "retry" and len(calls) == 1 and sa.state == "active"
        app.engine.decisions.resolve(d.decision_id, True, "op:carol")
        sb = await asking
        assert sb.state == "active" and len(calls) == 2 and await sa.ended(5) == "preempted"

    run(scenario())


def test_wait_for_a_person_who_declines(world, in_process, run):
    async def scenario():
        app = await in_process(handover=policy(world, {"strategy": "person"}, timeout_ms=5000))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A", urgency=1)
        failing_moves(app, 1)
        asking = asyncio.ensure_future(take(world, b, "motor_left", "write", "B", urgency=9))
        assert await wait_until(lambda: app.engine.decisions.pending())
        app.engine.decisions.resolve(app.engine.decisions.pending()[0].decision_id, False, "op:carol")
        assert await refusal(asking) == "E_RESOURCE_BUSY"
        assert sa.state == "active" and await sa.command(1, b"\x01\x00") is not None

    run(scenario())


def test_fault_40_a_lost_answer_is_read_back_before_failing(world, in_process, run):
    async def scenario():
        app = await in_process(handover=policy(world, {"strategy": "none"}))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A", urgency=1)
        board = app.boards["sim"]
        real = board.handover

        async def moved_but_lost(*args, **kw):
            await real(*args, **kw)                    # the board moved it; its answer is lost
            raise LinkTimeout("no answer")

        board.handover = moved_but_lost
        sb = await take(world, b, "motor_left", "write", "B", urgency=9)
        assert sb.state == "active" and await sa.ended(5) == "preempted"
        assert await sb.command(1, b"\x01\x00") is not None

    run(scenario())


def test_a_consent_policy_timeout_caps_the_requests(world, in_process, run):
    async def scenario():
        app = await in_process(handover=settings(world, [("camera", "consent", {"timeout_ms": 300})]))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        offers = []
        a.on_offer(lambda o: offers.append(o) or asyncio.sleep(3600))       # never answers
        sa = await take(world, a, "camera", "execute", "A")
        body = {"resource_id": world.res("camera"), "to_fay_id": world.B, "access_mode": "execute",
                "credential": world.cred(world.dB), "timeout_ms": 30000}
        r = await b.request("HandoverRequest", body, timeout=10)              # far less than 30 s
        assert r["error_code"] == "E_HANDOVER_TIMEOUT" and offers[0]["timeout_ms"] == 300
        assert await wait_until(lambda: sa.changes and sa.changes[-1]["reason"] == "handover_timeout")

    run(scenario())
