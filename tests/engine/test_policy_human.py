"""Handover policy `human` (issue 15 item 4; blueprint 2.4 type 3) against the virtual board:
an operator approves or denies a pending decision (resolved programmatically here; the browser
is tests/console), nobody answering is a deny; faults.md 39, 42, 57, 58, 59."""

import asyncio

import pytest

from capwarden.engine.decisions import DecisionClosed
from enginerig import refusal, runtime, wait_until
from policyrig import audit_entries, hand, settings, take


def human(world, timeout_ms=5000, name="camera"):
    return settings(world, [(name, "human", {"timeout_ms": timeout_ms})])


def test_operator_approves_and_the_holder_is_preempted(world, in_process, run):
    async def scenario():
        app = await in_process(handover=human(world))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        seen = []
        app.engine.decisions.subscribe(lambda ev, d: seen.append((ev, d["requester"]["fay_id"])))
        sa = await take(world, a, "camera", "execute", "A")
        asking = asyncio.ensure_future(take(world, b, "camera", "execute", "B"))
        assert await wait_until(lambda: app.engine.decisions.pending())
        d = app.engine.decisions.pending()[0]
        shown = d.to_json()
        assert shown["requester"]["fay_id"] == world.B and shown["holder"]["fay_id"] == world.A
        assert 0 < shown["remaining_ms"] <= 5000 and shown["resource_id"] == world.res("camera")
        assert sa.state == "active" and await sa.command(1) is not None    # the holder keeps it meanwhile
        app.engine.decisions.resolve(d.decision_id, True, "op:alice")
        sb = await asking
        assert await sa.ended(5) == "preempted" and sb.state == "active"
        assert seen == [("created", world.B), ("approved", world.B)]
        decided = [e for e in audit_entries(app, "decision")]
        assert [(e["outcome"], e.get("operator")) for e in decided] == [("pending", None), ("approved", "op:alice")]
        pol = audit_entries(app, "policy")[-1]
        assert pol["outcome"] == "grant" and pol["operator"] == "op:alice" and pol["decided_by"] == "operator"

    run(scenario())


def test_operator_denies(world, in_process, run):
    async def scenario():
        app = await in_process(handover=human(world))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "camera", "execute", "A")
        asking = asyncio.ensure_future(hand(world, b, "camera", "execute", "B"))
        assert await wait_until(lambda: app.engine.decisions.pending())
        app.engine.decisions.resolve(app.engine.decisions.pending()[0].decision_id, False, "op:bob")
        r = await asking
        assert r["result"] == "rejected" and r["error_code"] == "E_HANDOVER_REJECTED"
        assert sa.state == "active" and await sa.command(1) is not None
        assert (await b.request("SessionQuery", {}))["sessions"] == []

    run(scenario())


def test_fault_57_59_nobody_answers_deny_on_timeout_and_a_late_approval_grants_nothing(world, in_process, run):
    async def scenario():
        app = await in_process(handover=human(world, timeout_ms=300))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "camera", "execute", "A")
        asking = asyncio.ensure_future(take(world, b, "camera", "execute", "B"))
        assert await wait_until(lambda: app.engine.decisions.pending())
        d = app.engine.decisions.pending()[0]
        assert d.timeout_ms <= 300
        assert await refusal(asking) == "E_HANDOVER_TIMEOUT"
        with pytest.raises(DecisionClosed):
            app.engine.decisions.resolve(d.decision_id, True, "op:alice")        # faults.md 39
        assert sa.state == "active" and await sa.command(1) is not None
        assert app.engine.registry.holders(world.res("camera")) == [app.engine.sessions[sa.session_id]]
        assert [e["outcome"] for e in audit_entries(app, "decision")] == ["pending", "expired"]

    run(scenario())


def test_fault_42_one_question_per_resource(world, in_process, run):
    async def scenario():
        app = await in_process(handover=human(world))
        a, b, c = [await runtime(app, r) for r in ("rtA", "rtB", "rtC")]
        await take(world, a, "camera", "execute", "A")
        first = asyncio.ensure_future(take(world, b, "camera", "execute", "B"))
        assert await wait_until(lambda: app.engine.decisions.pending())
        assert await refusal(take(world, c, "camera", "execute", "C")) == "E_RESOURCE_BUSY"
        assert len(app.engine.decisions.pending()) == 1
        app.engine.decisions.resolve(app.engine.decisions.pending()[0].decision_id, False, "op:alice")
        assert await refusal(first) == "E_RESOURCE_BUSY"

    run(scenario())


def test_a_requester_that_goes_away_withdraws_its_question(world, in_process, run):
    async def scenario():
        app = await in_process(handover=human(world))
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "camera", "execute", "A")
        asking = asyncio.ensure_future(take(world, b, "camera", "execute", "B"))
        assert await wait_until(lambda: app.engine.decisions.pending())
        d = app.engine.decisions.pending()[0]
        await b.close()
        assert await wait_until(lambda: d.state == "cancelled")
        with pytest.raises(DecisionClosed):
            app.engine.decisions.resolve(d.decision_id, True, "op:alice")
        asking.cancel()
        assert sa.state == "active" and await sa.command(1) is not None

    run(scenario())
