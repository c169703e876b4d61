"""Handover policy `priority` (issue 15 items 1 and 2; blueprint 2.4 type 1) against the virtual
board through the runtime API: preemption, queue, deny, ties, two and three contenders, the
urgency cap, a failing and an over-budget rule; faults.md 34, 43, 50, 51, 53, 54, 58."""

import asyncio

import pytest

from capwarden.errors import CapError, DeviceError
from enginerig import refusal, runtime, wait_until
from policyrig import audit_entries, hand, settings, take

RULE = "(role == 'emergency' ? 100 : role == 'routine' ? 10 : 0) + urgency"
ROLES = {"A": {"role": "routine", "max_urgency": 5}, "B": {"role": "emergency", "max_urgency": 5},
         "C": {"role": "routine", "max_urgency": 10}}


def prio(world, name="motor_left", rule=RULE, fays=ROLES, **extra):
    return settings(world, [(name, "priority", dict({"rule": rule}, **extra))], fays)


def test_fault_50_53_higher_priority_preempts_and_the_holder_is_told_why(world, in_process, run):
    async def scenario():
        app = await in_process(handover=prio(world))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A", urgency=5)
        old = app.engine.sessions[sa.session_id]
        res, token, epoch = old.res, old.token, old.epoch
        sb = await take(world, b, "motor_left", "write", "B")          # emergency: 100 against 15
        # A holder that ignores what it is told cannot actuate either: the board moved the grant
        # (faults.md 34).
        with pytest.raises(DeviceError):
            await app.boards["sim"].actuate(res, token, epoch, 1, b"\x01\x00")
        assert await sa.ended(5) == "preempted"                         # told why (faults.md 53)
        assert [c["reason"] for c in sa.changes][-2:] == ["preempted", "preempted"]
        assert await refusal(sa.command(1, b"\x01\x00")) == "E_SESSION_NOT_FOUND"   # stops at once
        assert await sb.command(1, b"\x01\x00") is not None
        held = await app.boards["sim"].grants(next(r.index for r in app.boards["sim"].info.resources
                                                   if r.name == "motor_left"))
        assert len(held) == 1                                            # one holder on the board
        pol = audit_entries(app, "policy")[-1]
        assert pol["outcome"] == "grant" and pol["reason"] == "priority" and pol["decided_by"] == "rule"
        assert pol["inputs"]["requester"]["score"] == 100 and pol["inputs"]["holder"]["score"] == 15
        assert pol["inputs"]["holder"]["role"] == "routine" and pol["inputs"]["requester"]["resource_type"] == "motor"
        moved = audit_entries(app, "handover")[-1]
        assert moved["outcome"] == "completed" and moved["reason"] == "priority" and moved["from_fay"] == world.A

    run(scenario())


def test_fault_54_lower_priority_is_denied_or_queued_and_a_tie_keeps_the_holder(world, in_process, run):
    async def scenario():
        app = await in_process(handover=prio(world, "camera"))
        a, c = await runtime(app, "rtA"), await runtime(app, "rtC")
        sa = await take(world, a, "camera", "execute", "A", urgency=3)   # 13
        with pytest.raises(CapError) as exc:
            await take(world, c, "camera", "execute", "C", urgency=3)     # 13: a tie keeps the holder
        assert exc.value.code == "E_RESOURCE_BUSY" and "tie keeps the holder" in str(exc.value)
        assert sa.state == "active" and await sa.command(1) is not None
        # Lower, asking to wait: queued on the board, granted when the holder releases.
        queued = asyncio.ensure_future(take(world, c, "camera", "execute", "C", urgency=1, wait_ms=3000))
        assert await wait_until(lambda: any(e["outcome"] == "queue" for e in audit_entries(app, "policy")))
        assert not queued.done()
        await sa.release()
        sc = await queued
        assert sc.state == "active"
        assert [e["outcome"] for e in audit_entries(app, "policy")] == ["deny", "queue"]

    run(scenario())


def test_fault_51_three_contenders_exactly_one_wins(world, in_process, run):
    async def scenario():
        app = await in_process(handover=prio(world, "camera", rule="urgency",
                                             fays={w: {"max_urgency": 10} for w in "ABC"}))
        a, b, c = [await runtime(app, r) for r in ("rtA", "rtB", "rtC")]
        sa = await take(world, a, "camera", "execute", "A", urgency=5)
        rb, rc = await asyncio.gather(take(world, b, "camera", "execute", "B", urgency=3),
                                      take(world, c, "camera", "execute", "C", urgency=9), return_exceptions=True)
        assert isinstance(rb, CapError) and rb.code == "E_RESOURCE_BUSY"   # a clean "in use"
        assert rc.state == "active" and await sa.ended(5) == "preempted"
        holders = app.engine.registry.holders(world.res("camera"))
        assert [s.fay_id for s in holders] == [world.C]

    run(scenario())


def test_claimed_urgency_is_capped_per_fay(world, in_process, run):
    async def scenario():
        app = await in_process(handover=prio(world, rule="urgency", fays={"A": {"max_urgency": 10},
                                                                          "B": {"max_urgency": 2}}))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        await take(world, a, "motor_left", "write", "A", urgency=4)
        assert await refusal(take(world, b, "motor_left", "write", "B", urgency=10)) == "E_RESOURCE_BUSY"
        req = audit_entries(app, "policy")[-1]["inputs"]["requester"]
        assert (req["claimed"], req["urgency"], req["score"]) == (10, 2, 2)

    run(scenario())


def test_unlisted_fays_claim_no_urgency_by_default(world, in_process, run):
    async def scenario():
        app = await in_process(handover=prio(world, rule="urgency", fays={}))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        await take(world, a, "motor_left", "write", "A")
        assert await refusal(take(world, b, "motor_left", "write", "B", urgency=10)) == "E_RESOURCE_BUSY"

    run(scenario())


def test_fault_58_a_failing_rule_denies_and_keeps_the_holder(world, in_process, run):
    async def scenario():
        app = await in_process(handover=prio(world, rule="100 / (urgency - urgency)"))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A")
        with pytest.raises(CapError) as exc:
            await take(world, b, "motor_left", "write", "B")
        assert exc.value.code == "E_RESOURCE_BUSY" and "division by zero" in str(exc.value)
        assert sa.state == "active" and await sa.command(1, b"\x01\x00") is not None
        assert audit_entries(app, "policy")[-1]["outcome"] == "deny"

    run(scenario())


def test_fault_58_an_over_budget_rule_denies(world, in_process, run):
    ticks = iter(range(0, 10 ** 12, 10 ** 9))            # every reading of the rule's clock is 1 s later

    async def scenario():
        app = await in_process(handover=settings(world, [("motor_left", "priority", {"rule": RULE})], ROLES,
                                                 clock=lambda: next(ticks)))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A")
        with pytest.raises(CapError) as exc:
            await take(world, b, "motor_left", "write", "B")            # it would win, but ran out of budget
        assert exc.value.code == "E_RESOURCE_BUSY" and "over its budget" in str(exc.value)
        assert sa.state == "active"

    run(scenario())


def test_fault_43_a_handover_request_under_priority_goes_to_the_policy_too(world, in_process, run):
    async def scenario():
        app = await in_process(handover=prio(world))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        offers = []
        a.on_offer(lambda o: offers.append(o) or True)
        sa = await take(world, a, "motor_left", "write", "A")
        r = await hand(world, b, "motor_left", "write", "B")
        assert r["result"] == "completed" and offers == []
        assert await sa.ended(5) == "preempted"
        # And the other way: the routine Fay cannot take it back from the emergency one.
        r = await hand(world, a, "motor_left", "write", "A")
        assert r["result"] == "rejected" and r["error_code"] == "E_HANDOVER_REJECTED"
        assert sa.state == "terminated" and r["error_message"].startswith("the priority policy keeps the holder")

    run(scenario())


def test_other_resources_keep_consent(world, in_process, run):
    async def scenario():
        app = await in_process(handover=prio(world))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "camera", "execute", "A")
        assert await refusal(take(world, b, "camera", "execute", "B")) == "E_RESOURCE_BUSY"   # faults.md 43
        assert sa.state == "active" and audit_entries(app, "policy") == []

    run(scenario())


def test_a_decision_that_cannot_be_audited_grants_nothing(world, in_process, run):
    from capwarden.errors import StoreError

    async def scenario():
        app = await in_process(handover=prio(world))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A")
        record = app.engine.audit.record

        def failing(action, *args, **kw):
            if action == "policy":
                raise StoreError("disk full")
            return record(action, *args, **kw)

        app.engine.audit.record = failing
        assert await refusal(take(world, b, "motor_left", "write", "B")) == "E_INTERNAL"
        app.engine.audit.record = record
        assert [s.fay_id for s in app.engine.sessions.values()] == [world.A]   # no session left behind
        assert sa.state == "active" and await sa.command(1, b"\x01\x00") is not None

    run(scenario())


def test_no_priority_preempts_an_operators_hold(world, in_process, run):
    # An emergency Fay outranks every Fay under the rule, never a human who took the motor.
    from capwarden.engine import controlroom

    async def scenario():
        app = await in_process(handover=prio(world))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        await take(world, a, "motor_left", "write", "A")
        held = await controlroom.take(app.engine, "alice", world.res("motor_left"))
        with pytest.raises(CapError) as exc:
            await take(world, b, "motor_left", "write", "B", urgency=5)    # score 105
        r = next(r for bd in controlroom.snapshot(app.engine)["boards"] for r in bd["resources"]
                 if r["name"] == "motor_left")
        return exc.value.code, held, r

    code, held, r = run(scenario())
    assert code == "E_RESOURCE_BUSY"
    assert [h["kind"] for h in r["holders"]] == ["operator"] and r["holders"][0]["session_id"] == held["session_id"]


def test_the_sdk_sends_the_claimed_urgency(world, in_process, run):
    # Through the SDK's acquire(urgency=): B (routine here, 10 + 7) outranks A (routine, 10 + 5);
    # without its urgency B would score 10 and be refused.
    async def scenario():
        fays = {"A": {"role": "routine", "max_urgency": 5}, "B": {"role": "routine", "max_urgency": 10}}
        app = await in_process(handover=prio(world, fays=fays))
        a, c = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "motor_left", "write", "A", urgency=5)
        b = world.auth_body("motor_left", "write", "B")
        sc = await c.acquire(b["fay_id"], b["resource_id"], b["access_mode"], b["credential"], urgency=7)
        return await sa.ended(5), sc.state, audit_entries(app, "policy")[-1]

    ended, state, pol = run(scenario())
    assert ended == "preempted" and state == "active"
    assert pol["inputs"]["requester"]["score"] == 17
