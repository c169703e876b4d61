"""Issue 9 defect 4: a decision made earlier is checked again when it is acted on.

A request queued with wait_ms, a handover waiting for the holder's consent, a command or a
heartbeat on a running session: when the credential was revoked or ran out meanwhile, the
engine refuses with the S2 code a fresh request would get, releases what the board granted,
and audits the refusal. Engine with injected clocks on a fake board with a grant table.
"""

import asyncio

import pytest

from capwarden.credentials.issue import sign_ticket, ticket_claims
from capwarden.engine import invariants
from tableboard import Rig, run, settle


@pytest.fixture
def rig(tmp_path):
    return Rig(str(tmp_path))


def _denied_in_audit(rig, action, code):
    return [e for e in rig.audit() if e["action"] == action and e["outcome"] in ("denied", "rejected")
            and e["reason"] == code]


def test_issue9_4_revoked_while_queued_is_denied_when_granted(rig):
    async def scenario():
        waiting = await rig.queued("motor_left", "write")
        assert [s.state for s in rig.e.sessions.values()] == ["creating"]   # queued on the board
        rig.revoke(rig.w.dA)                               # revoked while the request waits
        rig.board.wait_gate.set_result(None)               # the holder releases: the board grants
        r = await waiting
        assert r["body"]["result"] == "denied" and r["body"]["error_code"] == "E_DESCRIPTOR_REVOKED", r
        assert rig.board.held() == []                      # what the board granted is released
        assert rig.e.sessions == {}
        assert _denied_in_audit(rig, "acquire", "E_DESCRIPTOR_REVOKED")
        assert invariants.check(rig.e, rig.audit_path, replies=rig.replies) == []

    run(scenario())


def test_issue9_4_revoked_by_another_process_while_queued(rig):
    from capwarden.credentials import Terminal
    from capwarden.credentials.issue import sign_revocation

    async def scenario():
        waiting = await rig.queued("motor_left", "write")
        now = int(rig.clocks.wall)                         # `capwarden revocations import` meanwhile
        Terminal.open(rig.w.store).import_revocation(sign_revocation(rig.w.key, rig.w.dA, now), now)
        rig.board.wait_gate.set_result(None)               # granted before any sweep ran
        r = await waiting
        assert r["body"]["error_code"] == "E_DESCRIPTOR_REVOKED", r
        assert rig.board.held() == []

    run(scenario())


def test_issue9_4_ticket_expiring_while_queued_is_denied_when_granted(rig):
    w = rig.w
    now = int(rig.clocks.wall)
    ticket = sign_ticket(w.key, ticket_claims(w.A, w.tid, [w.grant("motor_left", "write")], "issuer:acme",
                                              now - 10, now + 30))

    async def scenario():
        waiting = await rig.queued("motor_left", "write", wait_ms=60000, cred={"type": "ticket", "ticket": ticket})
        rig.clocks.wall += 31                              # the ticket's exp passes while it waits
        rig.clocks.mono += 31
        rig.board.wait_gate.set_result(None)
        r = await waiting
        assert r["body"]["result"] == "denied" and r["body"]["error_code"] == "E_TICKET_EXPIRED", r
        assert rig.board.held() == [] and rig.e.sessions == {}
        assert _denied_in_audit(rig, "acquire", "E_TICKET_EXPIRED")

    run(scenario())


def test_issue9_4_handover_accepted_after_the_requester_was_revoked(rig):
    w = rig.w

    async def scenario():
        holder = rig.session(await rig.acquire("motor_left", "write"))
        offered = await rig.offered("motor_left", "write")
        assert holder.state == "handover_pending"
        rig.revoke(w.dB)                                   # the requester is revoked while the holder is asked
        hid = next(iter(rig.e.registry.handovers))
        ack = await rig.request("rtA", "HandoverResponse", {"handover_id": hid, "accept": True})
        assert ack["message_type"] == "HandoverResponseAck"
        r = await offered
        assert r["body"]["result"] == "rejected" and r["body"]["error_code"] == "E_DESCRIPTOR_REVOKED", r
        assert holder.state == "active"                    # the holder keeps the resource
        assert [g[1] for g in rig.board.held()] == [holder.token]
        assert not any(c[0] == "handover" for c in rig.board.calls)
        assert _denied_in_audit(rig, "handover", "E_DESCRIPTOR_REVOKED")

    run(scenario())


def test_issue9_4_revoked_during_the_handover_move_is_not_activated(rig):
    w = rig.w

    async def scenario():
        holder = rig.session(await rig.acquire("motor_left", "write"))
        rig.board.handover_gate = asyncio.get_running_loop().create_future()
        offered = await rig.offered("motor_left", "write")
        hid = next(iter(rig.e.registry.handovers))
        await rig.request("rtA", "HandoverResponse", {"handover_id": hid, "accept": True})
        await settle()
        assert any(c[0] == "handover" for c in rig.board.calls)     # the board is moving it
        rig.revoke(w.dB)
        rig.board.handover_gate.set_result(None)
        r = await offered
        assert r["body"]["result"] == "rejected" and r["body"]["error_code"] == "E_DESCRIPTOR_REVOKED", r
        assert holder.state == "terminated"                # its grant had moved: nobody holds it now
        assert rig.board.held() == [] and rig.e.sessions == {}
        assert _denied_in_audit(rig, "handover", "E_DESCRIPTOR_REVOKED")

    run(scenario())


def test_issue9_4_command_after_revocation_is_refused_before_the_board(rig):
    async def scenario():
        s = rig.session(await rig.acquire("motor_left", "write"))
        rig.revoke(rig.w.dA)                               # no sweep has run yet
        r = await rig.request("rtA", "ResourceCommand", {"session_id": s.session_id, "op": 1, "args": "AQA"})
        assert r["message_type"] == "Error" and r["body"]["error_code"] == "E_DESCRIPTOR_REVOKED", r
        assert not any(c[0] == "actuate" for c in rig.board.calls)   # never forwarded
        assert s.state == "terminated" and rig.board.held() == []
        assert _denied_in_audit(rig, "deny", "E_DESCRIPTOR_REVOKED")
        assert invariants.check(rig.e, rig.audit_path, replies=rig.replies) == []

    run(scenario())


def test_issue9_4_heartbeat_after_expiry_does_not_renew(rig):
    w = rig.w
    now = int(rig.clocks.wall)
    ticket = sign_ticket(w.key, ticket_claims(w.A, w.tid, [w.grant("gps", "read")], "issuer:acme", now - 10, now + 30))

    async def scenario():
        s = rig.session(await rig.acquire("gps", "read", cred={"type": "ticket", "ticket": ticket}))
        rig.clocks.wall += 31                              # expired; the sweep has not run yet
        r = await rig.request("rtA", "Heartbeat", {"session_ids": [s.session_id]})
        assert r["body"]["alive"] == [] and r["body"]["unknown"] == [s.session_id], r
        assert s.state == "terminated" and rig.board.held() == []
        ends = [e for e in rig.audit() if e["action"] == "terminate"]
        assert ends[-1]["reason"] == "credential_expired"

    run(scenario())


def test_issue9_4_a_valid_credential_still_passes_every_check(rig):
    async def scenario():
        waiting = await rig.queued("motor_left", "write")
        rig.board.wait_gate.set_result(None)
        s = rig.session(await waiting)
        r = await rig.request("rtA", "ResourceCommand", {"session_id": s.session_id, "op": 1, "args": "AQA"})
        assert r["message_type"] == "ResourceCommandResult", r
        r = await rig.request("rtA", "Heartbeat", {"session_ids": [s.session_id]})
        assert r["body"]["alive"] == [s.session_id]

    run(scenario())
