"""The harness's own parts, checked without a board: each invariant check fires on a state that
breaks it and stays quiet on one that keeps it, and the targeted cable hits only the frames it
names. (A checker that can never fire would let every schedule pass.)"""

import socket
import time
import types

import pytest

from capshared import codec, messages
from capwarden.engine import protocol
from capwarden.engine.audit import AuditLog
from capwarden.sim import TO_BOARD

from . import invariants as inv
from .rig import TargetedCable, frame_name


def _session(token, epoch, res=0, state="active", mode="write", handle="h", rid="t/sim/led"):
    return types.SimpleNamespace(session_id="s%d" % token, token=token, epoch=epoch, res=res, state=state,
                                 access_mode=mode, board=handle, handover=None, resource_id=rid, suspended=False,
                                 credential_ref={"id": "c"})


def _engine(*sessions):
    return types.SimpleNamespace(registry=types.SimpleNamespace(sessions={s.session_id: s for s in sessions}))


def test_an_ownerless_board_grant_is_allowed_one_grace_period_and_no_longer():
    handle = types.SimpleNamespace(retired=set())
    own = inv.Ownership(grace=1.0)
    e = _engine(_session(7, 3, handle=handle))
    grants = {0: [(7, 3, 2), (9, 1, 2)]}               # token 9: nobody's
    own.check(e, handle, grants, {0: "led"}, now=100.0)
    own.check(e, handle, grants, {0: "led"}, now=100.9)
    with pytest.raises(inv.Violation) as exc:
        own.check(e, handle, grants, {0: "led"}, now=101.1)
    assert exc.value.name == "orphan_grant"
    own.forget()
    own.check(e, handle, grants, {0: "led"}, now=200.0)
    own.check(e, handle, {0: [(7, 3, 2)]}, {0: "led"}, now=200.5)   # released in time: forgotten
    own.check(e, handle, grants, {0: "led"}, now=202.0)             # seen again: a new grace starts


def test_a_session_the_board_no_longer_holds_is_allowed_one_grace_period():
    handle = types.SimpleNamespace(retired=set())
    own = inv.Ownership(grace=1.0)
    e = _engine(_session(7, 3, handle=handle))
    own.check(e, handle, {0: [(7, 2, 2)]}, {}, now=0.0)             # an older epoch is not its grant
    with pytest.raises(inv.Violation) as exc:
        own.check(e, handle, {0: []}, {}, now=1.5)
    assert exc.value.name == "engine_board_disagree"


def test_two_exclusive_holders_on_the_board_or_in_the_engine_are_reported():
    inv.exclusive_holders_board({0: [(1, 1, 1), (2, 1, 1)]}, {})     # two readers: fine
    with pytest.raises(inv.Violation):
        inv.exclusive_holders_board({0: [(1, 1, 1), (2, 2, 2)]}, {})
    inv.exclusive_holders_engine(_engine(_session(1, 1, mode="read"), _session(2, 1, mode="read")))
    with pytest.raises(inv.Violation):
        inv.exclusive_holders_engine(_engine(_session(1, 1, mode="read"), _session(2, 1, mode="write")))


def test_actuation_checks():
    inv.actuation_accepted(("active", False, "c"), ("active", False, "c"), {}, 10.0, 0.1)
    for before, after, invalid in ((None, None, {}), (("terminated", False, "c"), None, {}),
                                   (("active", True, "c"), ("active", True, "c"), {}),
                                   (("active", False, "c"), ("active", False, "c"), {"c": 9.0})):
        with pytest.raises(inv.Violation) as exc:
            inv.actuation_accepted(before, after, invalid, 10.0, 0.1)
        assert exc.value.name == "actuation_accepted"


def test_answers_must_be_final_and_correlated():
    msg = protocol.make("SessionRelease", {"session_id": "x"}, "rtA")
    ok = protocol.make("SessionReleased", {"session_id": "x"}, "t", msg["message_id"])
    assert inv.final_answer(msg, ok) is None
    deny = protocol.make("Error", {"error_code": "E_SESSION_NOT_FOUND", "error_message": ""}, "t", msg["message_id"])
    assert inv.final_answer(msg, deny) == "E_SESSION_NOT_FOUND"
    for bad, name in ((protocol.make("SessionReleased", {}, "t", "other"), "wrong_answer"),
                      (protocol.make("HeartbeatAck", {}, "t", msg["message_id"]), "wrong_answer"),
                      (protocol.make("Error", {"error_code": "E_INTERNAL", "error_message": ""}, "t",
                                     msg["message_id"]), "internal_error")):
        with pytest.raises(inv.Violation) as exc:
            inv.final_answer(msg, bad)
        assert exc.value.name == name


def test_every_deny_needs_its_own_audit_entry(tmp_path):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.record("acquire", "denied", "E_RESOURCE_BUSY", runtime="rtA")
    entries = inv.audit_entries(path)
    inv.denies_audited({("rtA", "E_RESOURCE_BUSY"): 1}, entries)
    for denies in ({("rtA", "E_RESOURCE_BUSY"): 2}, {("rtB", "E_RESOURCE_BUSY"): 1}):
        with pytest.raises(inv.Violation) as exc:
            inv.denies_audited(denies, entries)
        assert exc.value.name == "deny_not_audited"
    with open(path, "ab") as f:
        f.write(b'{"torn')
    with pytest.raises(inv.Violation) as exc:
        inv.audit_entries(path)
    assert exc.value.name == "audit_chain"


def _signed(name, rid, fields):
    # A frame as the signed link (protocol 3) carries it: counter and tag after the payload.
    raw = bytes((1, messages.ID[name], rid & 0xFF, rid >> 8)) + codec.encode_payload(name, fields)
    return codec.raw_frame_bytes(raw + (7).to_bytes(4, "little") + bytes(range(8)))


def test_frames_are_named_on_the_signed_link_as_on_the_plain_one():
    """A signed frame of a fixed-size message read without its trailer has no name: every
    targeted fault but ACTUATE's matched nothing on the signed link (fails on the old rig)."""
    for name, fields in (("HEARTBEAT_R", {"hb_seq": 3, "grants": 1, "failsafes": 0, "override": 0}),
                         ("ACQUIRE", {"res": 1, "modes": 2, "session": 3, "lease_ms": 1000, "wait_ms": 0}),
                         ("EV_OVERRIDE", {"mask": 4, "ended": 1}), ("ACTUATE", {"res": 1, "session": 2, "epoch": 3,
                                                                               "op": 1, "args": b"ab"})):
        assert frame_name(_signed(name, 9, fields)) == name
        assert frame_name(codec.encode_frame(name, 9, fields)) == name


@pytest.mark.parametrize("signed", (True, False))
def test_the_targeted_cable_faults_only_the_frames_it_names(signed):
    frame = _signed if signed else codec.encode_frame
    host, host_end = socket.socketpair()
    board, board_end = socket.socketpair()
    cable = TargetedCable(host_end.fileno(), board_end.fileno()).start()
    try:
        hb = frame("HEARTBEAT", 5, {"hb_seq": 1})
        acq = frame("ACQUIRE", 6, {"res": 1, "modes": 2, "session": 3, "lease_ms": 1000, "wait_ms": 0})
        assert frame_name(hb) == "HEARTBEAT" and frame_name(acq) == "ACQUIRE"
        cable.inject_matching(TO_BOARD, "drop", ("ACQUIRE",), 1)
        host.sendall(hb + acq + hb + acq)
        got = b""
        board.settimeout(2)
        end = time.monotonic() + 2
        while len(got) < len(hb) * 2 + len(acq) and time.monotonic() < end:
            got += board.recv(4096)
        assert got == hb + hb + acq                   # the first ACQUIRE dropped, nothing else
        assert not cable.armed()
    finally:
        cable.close()
        for s in (host, host_end, board, board_end):
            s.close()


def test_a_suspended_session_may_still_read():
    inv.actuation_accepted(("active", True, "c"), ("active", True, "c"), {}, 10.0, 0.1, drives=False)
    with pytest.raises(inv.Violation, match="suspended"):   # but not drive: the rule is there
        inv.actuation_accepted(("active", True, "c"), ("active", True, "c"), {}, 10.0, 0.1, drives=True)
