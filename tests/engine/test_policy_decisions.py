"""engine/decisions.py: pending human decisions (issue 15 item 4; faults.md 39, 58), unit level
with an injected clock. The end-to-end human policy is in test_policy_human.py."""

import asyncio

import pytest

from capwarden.engine.audit import AuditLog
from capwarden.engine.decisions import DecisionClosed, PendingDecisions


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def table(clock=None, **kw):
    audit = AuditLog(None)
    entries = []
    record = audit.record
    audit.record = lambda *a, **k: entries.append(record(*a, **k)) or entries[-1]
    return PendingDecisions(audit, clock=clock or Clock(), **kw), entries


REQ = {"runtime_id": "rtB", "fay_id": "fay:b"}


def test_approve_is_audited_with_the_operator_and_announced():
    async def scenario():
        t, entries = table()
        seen = []
        t.subscribe(lambda ev, d: seen.append((ev, d["state"], d["operator_id"])))
        d = t.create("term/sim/motor_left", REQ, {"fay_id": "fay:a"}, "write", timeout_ms=5000)
        assert [x.decision_id for x in t.pending()] == [d.decision_id]
        assert d.to_json(t.clock())["remaining_ms"] == 5000
        waiter = asyncio.ensure_future(t.wait(d))
        await asyncio.sleep(0)
        t.resolve(d.decision_id, True, "op:alice")
        assert await waiter is True
        assert t.pending() == [] and t.get(d.decision_id).state == "approved"
        assert seen == [("created", "pending", None), ("approved", "approved", "op:alice")]
        assert [(e["action"], e["outcome"], e.get("operator")) for e in entries] == [
            ("decision", "pending", None), ("decision", "approved", "op:alice")]
        with pytest.raises(DecisionClosed):          # settled once
            t.resolve(d.decision_id, False, "op:bob")

    asyncio.run(scenario())


def test_deny_and_timeout_both_deny_and_a_late_answer_grants_nothing():
    async def scenario():
        clock = Clock()
        t, entries = table(clock, default_timeout_ms=50)
        d = t.create("r", REQ)
        t.resolve(d.decision_id, False, "op:alice")
        assert await t.wait(d) is False and d.state == "denied"
        late = t.create("r", REQ)
        assert late.timeout_ms == 50
        assert await t.wait(late) is False          # the real 50 ms pass: nobody answered
        assert late.state == "expired" and entries[-1]["outcome"] == "expired"
        with pytest.raises(DecisionClosed):
            t.resolve(late.decision_id, True, "op:alice")   # faults.md 39
        gone = t.create("r", REQ, timeout_ms=10000)
        clock.t += 11                                   # past its deadline, not yet swept
        with pytest.raises(DecisionClosed):
            t.resolve(gone.decision_id, True, "op:alice")
        assert gone.state == "expired"

    asyncio.run(scenario())


def test_resolve_needs_an_operator_and_unknown_ids_are_closed():
    async def scenario():
        t, _ = table()
        d = t.create("r", REQ)
        with pytest.raises(ValueError):
            t.resolve(d.decision_id, True, "")
        assert d.open
        with pytest.raises(DecisionClosed):
            t.resolve("nope", True, "op:alice")
        t.cancel(d.decision_id, "the requester went away")
        assert await t.wait(d) is False and d.state == "cancelled"

    asyncio.run(scenario())
