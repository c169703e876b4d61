"""The engine with injected clocks and a fake board: timing edges without waiting.

faults.md 13 (the exact timeout boundary, both orders of the AND rule), 19 (jitter near the
timeout), 25 (the wall clock stepping backward and forward).
"""

import asyncio
import json
import types

import pytest

from capwarden import resources

from capwarden.engine import protocol
from capwarden.engine.audit import AuditLog
from capwarden.engine.authorizer import StoreAuthorizer
from capwarden.engine.engine import Engine
from capwarden.engine.liveness import LivenessPolicy
from capwarden.engine.routes import ROUTES
from capwarden.link.types import BoardInfo, Grant, ResourceInfo
from enginerig import World


class FakeBoard:
    def __init__(self):
        self.info = BoardInfo("sim", "0.1.0", 1, 1, 256, 0, [ResourceInfo(0, "gps", "gps", ["read"], "present")])
        self.calls = []
        self.epoch = 0

    def subscribe(self, cb):
        pass

    async def acquire(self, res, modes, session, lease_ms, wait_ms=0):
        self.epoch += 1
        self.calls.append(("acquire", session))
        return Grant(res, modes, session, self.epoch, lease_ms)

    async def release(self, res, session, epoch):
        self.calls.append(("release", session))

    async def suspend(self, session, on):
        self.calls.append(("suspend", session, on))

    async def heartbeat(self, seq):
        pass

    async def end_session(self, session):
        self.calls.append(("end_session", session))
        return 0

    async def grants(self, res):
        return []


class Clocks:
    def __init__(self):
        self.mono = 1000.0
        import time

        self.wall = float(int(time.time()))  # credentials in the World were made against real time


@pytest.fixture
def rig(tmp_path):
    w = World(str(tmp_path))
    clocks = Clocks()
    board = FakeBoard()
    e = Engine(StoreAuthorizer(w.store), {"sim": board}, AuditLog(None), liveness=LivenessPolicy(default=(1000, 5000)),
               clock=lambda: clocks.mono, wall=lambda: clocks.wall)
    pushes = []

    async def send(msg):
        pushes.append(msg)

    e.add_runtime("rtA")
    e.connected("rtA", send)
    w.now = int(clocks.wall)
    return w, e, clocks, board, send, pushes


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def acquire(w, e):
    did = w.descriptor(w.A, [w.grant("gps", "read")], seconds=10 ** 6)
    msg = protocol.make("AuthRequest", {"fay_id": w.A, "resource_id": w.res("gps"), "access_mode": "read",
                                        "credential": w.cred(did)}, "rtA")
    r = await e.handle("rtA", msg)
    assert r["body"]["result"] == "granted", r
    return e.sessions[r["body"]["session_id"]]


async def heartbeat(e, s):
    await e.handle("rtA", protocol.make("Heartbeat", {"session_ids": [s.session_id]}, "rtA"))


def test_fault_13_boundary_and_both_orders_of_the_and_rule(rig):
    w, e, c, board, send, pushes = rig

    async def scenario():
        s = await acquire(w, e)
        e.disconnected("rtA", send)           # connection down first
        c.mono += 5.0                         # exactly the timeout: not yet late
        await e.sweep()
        assert s.state == "active"
        c.mono += 0.001                       # one millisecond past: expired
        await e.sweep()
        assert s.state == "terminated"
        e.connected("rtA", send)
        s2 = await acquire(w, e)
        c.mono += 5.001                       # the other order: heartbeat late first...
        await e.sweep()
        assert s2.state == "active" and s2.suspended
        e.disconnected("rtA", send)           # ...then the connection drops: expired
        await e.sweep()
        assert s2.state == "terminated"

    run(scenario())


def test_fault_19_jitter_near_the_timeout_does_not_flap(rig):
    w, e, c, board, send, pushes = rig

    async def scenario():
        s = await acquire(w, e)
        for _ in range(20):
            c.mono += 4.99                    # every beat just inside the timeout
            await e.sweep()
            await heartbeat(e, s)
        assert not any(call[0] == "suspend" for call in board.calls)
        assert s.state == "active" and not s.suspended

    run(scenario())


def test_fault_25_wall_clock_steps_do_not_move_liveness(rig):
    w, e, c, board, send, pushes = rig

    async def scenario():
        s = await acquire(w, e)
        c.wall -= 3600                        # NTP steps the clock back an hour
        c.mono += 1.0
        await e.sweep()
        assert s.state == "active" and not s.suspended
        c.wall += 7200                        # ...and forward two
        c.mono += 1.0
        await e.sweep()
        assert not s.suspended                # still only 2 s of monotonic time since the grant
        c.mono += 3.5
        await e.sweep()
        assert s.suspended                    # 5.5 s monotonic: late

    run(scenario())


def test_suspension_is_told_to_the_board_and_lifted_by_a_heartbeat(rig):
    w, e, c, board, send, pushes = rig

    async def scenario():
        s = await acquire(w, e)
        c.mono += 6
        await e.sweep()
        await asyncio.sleep(0)
        assert ("suspend", s.token, True) in board.calls
        await heartbeat(e, s)
        await asyncio.sleep(0)                # pushes go out as tasks
        assert ("suspend", s.token, False) in board.calls and not s.suspended
        reasons = [p["body"]["reason"] for p in pushes if p["message_type"] == "SessionStateChanged"]
        assert reasons[-2:] == ["heartbeat_missed", "heartbeat_resumed"]

    run(scenario())


def _reach(state):
    """A session brought to `state` by allowed moves only (breadth first from creating)."""
    from collections import deque

    from capwarden.engine.sessions import TRANSITIONS, Session

    paths = deque([["creating"]])
    while paths:
        path = paths.popleft()
        if path[-1] == state:
            s = Session("fay:x", "rt", "r", "read", 0, 0)
            for step in path[1:]:
                s.move(step)
            return s
        paths.extend(path + [n] for n in sorted(TRANSITIONS[path[-1]]) if n not in path)
    raise AssertionError("%s cannot be reached from creating" % state)


def test_every_transition_is_in_the_table():
    """Every ordered pair of states: the move is allowed exactly when the table has it, every
    state is reachable, and the states are the schema's (SessionStateChanged.state)."""
    from capwarden.engine.sessions import TRANSITIONS, IllegalTransition

    schema = json.load(open(resources.schema_path()))
    assert set(TRANSITIONS) == set(schema["$defs"]["SessionStateChanged"]["properties"]["state"]["enum"])
    assert TRANSITIONS["terminated"] == set()            # the end: nothing leaves it
    checked = 0
    for old in TRANSITIONS:
        for new in TRANSITIONS:
            s = _reach(old)
            if new in TRANSITIONS[old]:
                assert s.move(new) == old and s.state == new
            else:
                with pytest.raises(IllegalTransition):
                    s.move(new)
                assert s.state == old                    # a refused move changes nothing
            checked += 1
    assert checked == len(TRANSITIONS) ** 2


def test_runtime_bound_to_its_fays_cannot_act_for_others(tmp_path):
    w = World(str(tmp_path))
    e = Engine(StoreAuthorizer(w.store), {"sim": FakeBoard()}, AuditLog(None), fay_bindings={"rtA": {w.A}})
    e.add_runtime("rtA")

    async def scenario():
        own = await e.handle("rtA", protocol.make("AuthRequest", {
            "fay_id": w.A, "resource_id": w.res("gps"), "access_mode": "read", "credential": w.cred(w.dA)}, "rtA"))
        other = await e.handle("rtA", protocol.make("AuthRequest", {
            "fay_id": w.B, "resource_id": w.res("gps"), "access_mode": "read", "credential": w.cred(w.dB)}, "rtA"))
        ft = await e.handle("rtA", protocol.make("FayTerminated", {"fay_id": w.B}, "rtA"))
        return own, other, ft

    own, other, ft = run(scenario())
    assert own["body"]["result"] == "granted"
    assert other["message_type"] == "Error" and other["body"]["error_code"] == "E_PERMISSION_DENIED"
    assert ft["message_type"] == "Error" and ft["body"]["error_code"] == "E_PERMISSION_DENIED"


def test_a_grant_inside_the_leeway_is_not_ended_a_moment_later(tmp_path):
    w = World(str(tmp_path))
    clocks = Clocks()
    e = Engine(StoreAuthorizer(w.store, leeway=60), {"sim": FakeBoard()}, AuditLog(None),
               clock=lambda: clocks.mono, wall=lambda: clocks.wall)
    e.add_runtime("rtA")
    e.connected("rtA", _sink)
    did = w.descriptor(w.A, [w.grant("gps", "read")], seconds=int(clocks.wall) - w.now - 30)   # expired 30 s ago

    async def scenario():
        r = await e.handle("rtA", protocol.make("AuthRequest", {"fay_id": w.A, "resource_id": w.res("gps"),
                                                                "access_mode": "read", "credential": w.cred(did)}, "rtA"))
        assert r["body"]["result"] == "granted"                  # inside the 60 s leeway
        s = e.sessions[r["body"]["session_id"]]
        assert r["body"]["expires_at"] == s.credential_ref["not_after"] + 60
        await e.sweep()
        assert s.state == "active"                               # not ended by the next sweep
        clocks.wall = r["body"]["expires_at"] - 1
        await e.sweep()
        assert s.state == "active"
        clocks.wall += 1                                         # the instant a new request is refused
        await e.sweep()
        assert s.state == "terminated"

    run(scenario())


async def _sink(msg):
    pass


def test_a_key_revoked_in_the_store_ends_its_sessions(rig):
    w, e, c, board, send, pushes = rig
    from capwarden.credentials import Terminal

    async def scenario():
        s = await acquire(w, e)
        await e.sweep()
        assert s.state == "active"
        Terminal.open(w.store).keys.revoke("acme-1")             # as another process would
        await e.sweep()
        assert s.state == "terminated"
        await asyncio.sleep(0.01)                                # pushes go out as tasks
        reasons = [p["body"]["reason"] for p in pushes if p["message_type"] == "SessionStateChanged"]
        assert reasons[-1] == "key_invalid"

    run(scenario())


@pytest.mark.parametrize("mtype", sorted(set(protocol.message_types()) - set(ROUTES)))
def test_default_deny_every_other_message_type(rig, mtype):
    w, e, c, board, send, pushes = rig
    r = run(e.handle("rtA", protocol.make(mtype, {}, "rtA")))
    assert r["message_type"] == "Error" and r["body"]["error_code"] == "E_PERMISSION_DENIED"


def test_unknown_runtime_and_forged_sender_are_denied(rig):
    w, e, c, board, send, pushes = rig
    r = run(e.handle("rtZ", protocol.make("SessionQuery", {}, "rtZ")))
    assert r["body"]["error_code"] == "E_PERMISSION_DENIED"
    r = run(e.handle("rtA", protocol.make("SessionQuery", {}, "rtB")))
    assert r["body"]["error_code"] == "E_PERMISSION_DENIED"


class FakeAuthorizer:
    """The engine's whole dependency on credentials: four methods and two attributes."""

    terminal_id = "terminal:01927b34-7e21-7c4d-a89f-1234567890ab"

    def __init__(self):
        self.listeners = []
        self.generation = 0
        self.revoked = set()

    def check(self, credential, fay_id, resource_id, mode, now):
        from capwarden.credentials.validate import Decision

        ok = credential["descriptor_id"].endswith("ab") and mode == "read"
        # A Decision reads the credential's fields from the credential it names.
        cred = types.SimpleNamespace(kind="descriptor", credential_id=credential["descriptor_id"], not_after=2 ** 40,
                                     issuer_id="i", key_id="k")
        d = Decision(ok, None if ok else "E_DESCRIPTOR_MODE_NOT_GRANTED", "fake", credential=cred)
        d.granted_modes = ("read",)
        return d

    def reference(self, d):
        return {"type": "descriptor", "id": d.credential_id, "not_after": d.not_after, "issuer_id": d.issuer_id,
                "key_id": d.key_id, "ends_at": d.not_after}

    def still_valid(self, ref, now):
        return "revoked" if ref["id"] in self.revoked else None

    def refresh(self, now):
        return False


def test_the_engine_runs_on_any_authorizer_with_the_interface():
    auth = FakeAuthorizer()
    board = FakeBoard()
    e = Engine(auth, {"sim": board}, AuditLog(None))
    e.add_runtime("rtA")
    e.connected("rtA", _sink)
    fay = "fay:01927b34-7e21-7c4d-a89f-1234567890ab"
    body = {"fay_id": fay, "resource_id": auth.terminal_id + "/sim/gps", "access_mode": "read",
            "credential": {"type": "descriptor_ref", "descriptor_id": "01927b34-7e21-7c4d-a89f-1234567890ab"}}

    async def scenario():
        r = await e.handle("rtA", protocol.make("AuthRequest", body, "rtA"))
        assert r["body"]["result"] == "granted"
        s = e.sessions[r["body"]["session_id"]]
        auth.revoked.add(s.credential_ref["id"])
        auth.generation += 1                                     # what a revocation does
        await e.sweep()
        assert s.state == "terminated"
        r = await e.handle("rtA", protocol.make("AuthRequest", dict(body, access_mode="write"), "rtA"))
        assert r["body"]["error_code"] == "E_DESCRIPTOR_MODE_NOT_GRANTED"

    run(scenario())


def test_a_release_the_board_did_not_answer_is_retried_and_its_token_not_reused(rig):
    w, e, c, board, send, pushes = rig
    from capwarden.engine import liveness
    from capwarden.errors import LinkTimeout

    async def scenario():
        s = await acquire(w, e)

        async def lost(*a):
            raise LinkTimeout("no answer")

        board.release, board.end_session = lost, lost
        await e.handle("rtA", protocol.make("SessionRelease", {"session_id": s.session_id}, "rtA"))
        h = e.registry.boards["sim"]
        assert s.token in h.retired                              # not forgotten: the heartbeat would renew it
        for _ in range(3):
            assert e.registry.new_token() != s.token
        del board.release, board.end_session                     # the board answers again
        await liveness._board_tick(e, h)
        assert ("end_session", s.token) in board.calls and not h.retired

    run(scenario())


@pytest.mark.parametrize("lease", [0, -1, 3600001, 2.5])
def test_a_lease_the_board_would_refuse_is_refused_at_start(tmp_path, lease):
    # Before, the engine started and every acquire failed with BadRequest from the link.
    from capshared.limits import MAX_LEASE_MS
    from capwarden.errors import UsageError

    assert MAX_LEASE_MS == 3600000
    w = World(str(tmp_path))
    with pytest.raises(UsageError):
        Engine(StoreAuthorizer(w.store), {"sim": FakeBoard()}, AuditLog(None), lease_ms=lease)
