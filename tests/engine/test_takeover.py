"""Humans as controlling parties (issue 15 item 5): an operator takes a resource from a Fay at
once, acts on it, hands it back to a named Fay or releases it, through the engine with runtimes
on the virtual board (engine/takeover.py, engine/controlroom.py)."""

import asyncio

import pytest

from capwarden.engine import audit, controlroom, takeover
from capwarden.errors import CapError, DeviceError
from enginerig import refusal, runtime, speed, wait_until


async def _logged(app, action):
    """The audit entries of `action`, once every entry recorded so far is on disk."""
    await app.engine.audit.durable()
    return [e for e in audit.read(app.audit_path)[0] if e.get("action") == action]


def _resource(snap, name):
    return next(r for b in snap["boards"] for r in b["resources"] if r["name"] == name)


def test_take_ends_the_fays_session_and_the_fay_cannot_actuate_from_that_instant(world, run, in_process):
    async def scenario():
        app = await in_process()
        engine, board = app.engine, app.boards["sim"]
        changes = []
        controlroom.subscribe(engine, changes.append)
        a, m = await world.holding(app, "motor_left", "write")
        await m.command(1, speed(300))
        s = engine.sessions[m.session_id]
        token, epoch, res = s.token, s.epoch, s.res
        # The Fay's runtime keeps sending commands while the operator takes the motor: every
        # command the board answers after the move is refused by the board itself.
        answers = []

        async def fay_drives():
            for k in range(200):
                try:
                    answers.append(("ok", await board.actuate(res, token, epoch, 1, speed(k))))
                except DeviceError as exc:
                    answers.append(("refused", exc.code))
                await asyncio.sleep(0)

        driver = asyncio.ensure_future(fay_drives())
        await asyncio.sleep(0.02)
        holder = await controlroom.take(engine, "alice", world.res("motor_left"))
        await driver
        assert holder["kind"] == "operator" and holder["operator"] == "alice" and holder["epoch"] > epoch
        # From the first refusal on, nothing the Fay sent was executed (the board moved the
        # slot in one step under a new epoch).
        kinds = [k for k, _ in answers]
        first = kinds.index("refused")
        assert set(kinds[first:]) == {"refused"}
        assert {c for k, c in answers if k == "refused"} == {"E_DEV_STALE_EPOCH"}
        # The board holds exactly one grant on the motor: the operator's.
        held = await board.grants(res)
        op = engine.sessions[holder["session_id"]]
        assert [(t, e) for t, e, _m in held] == [(op.token, op.epoch)]
        # The Fay's session ended with the take-over's own reason, and it cannot command.
        assert await wait_until(lambda: m.state == "terminated", 5)
        assert m.changes[-1]["reason"] == "operator_takeover"
        assert await refusal(m.command(1, speed(5))) == "E_SESSION_NOT_FOUND"
        # The operator acts through the engine.
        out = await controlroom.act(engine, "alice", world.res("motor_left"), 1, speed(-250))
        assert out["op"] == 1
        assert app.vboard is not None
        assert int.from_bytes(await board.actuate(res, op.token, op.epoch, 2, b""), "little", signed=True) == -250
        # The console's view.
        r = _resource(controlroom.snapshot(engine), "motor_left")
        assert r["mode"] == "exclusive" and [h["kind"] for h in r["holders"]] == ["operator"]
        assert r["holders"][0]["operator"] == "alice" and r["holders"][0]["since"] > 0
        # Audited with the operator's identity.
        t = (await _logged(app, "takeover"))[-1]
        assert t["outcome"] == "completed" and t["operator"] == "alice" and t["from_sessions"] == [m.session_id]
        assert t["from_fays"] == [world.A]
        c = (await _logged(app, "operator_command"))[-1]
        assert c["operator"] == "alice" and c["op"] == 1
        ended = [e for e in (await _logged(app, "terminate")) if e.get("session") == m.session_id]
        assert ended and ended[-1]["reason"] == "operator_takeover"
        assert any(ch["type"] == "operator" and ch["action"] == "take" for ch in changes)
        assert any(ch["type"] == "session" and ch["reason"] == "operator_takeover" for ch in changes)
        await a.close()

    run(scenario())


def test_release_gives_the_resource_to_the_board_s_first_waiter(world, run, in_process):
    async def scenario():
        app = await in_process()
        engine = app.engine
        await controlroom.take(engine, "alice", world.res("motor_left"))   # a free resource: acquired
        a = await runtime(app, "rtA")
        # A Fay that does not wait is told the resource is busy.
        r = await a.request("AuthRequest", world.auth_body("motor_left", "write"))
        assert r["result"] == "denied" and r["error_code"] == "E_RESOURCE_BUSY"
        # Another operator cannot act on it, nor take it.
        assert (await _refused(controlroom.act(engine, "bob", world.res("motor_left"), 1, speed(1)))
                == "E_PERMISSION_DENIED")
        assert await _refused(controlroom.take(engine, "bob", world.res("motor_left"))) == "E_RESOURCE_BUSY"
        waiter = asyncio.ensure_future(world.take(a, "motor_left", "write", wait_ms=5000))
        await asyncio.sleep(0.2)
        await controlroom.release(engine, "alice", world.res("motor_left"))
        s = await waiter
        assert s.state == "active"
        assert (await _logged(app, "operator_release"))[-1]["operator"] == "alice"
        await a.close()

    run(scenario())


async def _refused(awaitable):
    with pytest.raises(CapError) as exc:
        await awaitable
    return exc.value.code


def test_hand_back_grants_the_named_fays_pending_request_by_an_atomic_handover(world, run, in_process):
    async def scenario():
        app = await in_process()
        engine, board = app.engine, app.boards["sim"]
        a, m = await world.holding(app, "motor_left", "write")
        b = await runtime(app, "rtB")
        await controlroom.take(engine, "alice", world.res("motor_left"))
        op = controlroom.snapshot(engine)
        op_holder = _resource(op, "motor_left")["holders"][0]
        # Fay B waits for the motor; the operator hands it to B (not to A, who asks too).
        wait_a = asyncio.ensure_future(world.take(a, "motor_left", "write", wait_ms=8000))
        wait_b = asyncio.ensure_future(world.take(b, "motor_left", "write", who="B", wait_ms=8000))
        await asyncio.sleep(0.3)
        out = await controlroom.hand_back(engine, "alice", world.res("motor_left"), world.B)
        assert out["result"] == "completed"
        sb = await wait_b
        assert sb.state == "active" and sb.session_id == out["session_id"]
        s = engine.sessions[sb.session_id]
        assert s.epoch > op_holder["epoch"]
        # One grant on the board, B's; the operator's epoch is refused from now on.
        held = await board.grants(s.res)
        assert [(t, e) for t, e, _m in held] == [(s.token, s.epoch)]
        with pytest.raises(CapError) as exc:
            await controlroom.act(engine, "alice", world.res("motor_left"), 1, speed(1))
        assert exc.value.code == "E_PERMISSION_DENIED"
        await sb.command(1, speed(100))
        assert not wait_a.done()
        h = (await _logged(app, "hand_back"))[-1]
        assert h["outcome"] == "completed" and h["operator"] == "alice" and h["to_fay"] == world.B
        wait_a.cancel()
        await a.close()
        await b.close()

    run(scenario())


def test_a_hand_back_to_a_waiting_request_never_shows_two_exclusive_holders(world, run, in_process):
    """The board answers the Fay's waiting ACQUIRE with the moved grant before it answers the
    HANDOVER. The operator's hold used to end only with the HANDOVER's answer, so for a moment
    the engine had two exclusive holders of the motor (seen once in CI: the control room listed
    the operator first). Checked at the instant the Fay's session becomes active."""
    from capwarden.engine.registry import LIVE

    async def scenario():
        app = await in_process()
        engine = app.engine
        at_activation = []
        real_move = engine.move

        def move(s, state, reason):
            if state == "active" and s.fay_id == world.A:
                at_activation.append(sorted((x.fay_id or "operator") for x in engine.registry.holders(s.resource_id)
                                            if x.state in LIVE))
            return real_move(s, state, reason)

        engine.move = move
        await controlroom.take(engine, "alice", world.res("motor_left"))
        a = await runtime(app, "rtA")
        waiting = asyncio.ensure_future(world.take(a, "motor_left", "write", wait_ms=5000))
        assert await wait_until(lambda: any(s.fay_id == world.A and s.state == "creating"
                                            for s in engine.sessions.values()))
        await asyncio.sleep(0.2)                     # its ACQUIRE is queued on the board
        out = await controlroom.hand_back(engine, "alice", world.res("motor_left"), world.A, timeout_s=5)
        s = await waiting
        assert out["result"] == "completed" and s.state == "active"
        assert at_activation == [[]], at_activation  # the hold had ended: nobody else held it
        holders = _resource(controlroom.snapshot(engine), "motor_left")["holders"]
        assert [h["kind"] for h in holders] == ["fay"] and holders[0]["fay_id"] == world.A
        assert [e["outcome"] for e in await _logged(app, "hand_back")] == ["requested", "completed"]
        await a.close()

    run(scenario())


def test_hand_back_waits_for_the_fays_next_request_and_times_out_to_the_operator(world, run, in_process):
    async def scenario():
        app = await in_process()
        engine = app.engine
        await controlroom.take(engine, "alice", world.res("motor_left"))
        out = await controlroom.hand_back(engine, "alice", world.res("motor_left"), world.A, timeout_s=5)
        assert out["result"] == "waiting"
        assert _resource(controlroom.snapshot(engine), "motor_left")["returning_to"] == world.A
        a = await runtime(app, "rtA")
        s = await world.take(a, "motor_left", "write", wait_ms=3000)     # its next request
        assert s.state == "active"
        assert _resource(controlroom.snapshot(engine), "motor_left")["holders"][0]["fay_id"] == world.A
        # Taken again; this time nobody asks within the timeout: the operator keeps control.
        await controlroom.take(engine, "alice", world.res("motor_left"))
        assert await wait_until(lambda: s.state == "terminated", 5)
        out = await controlroom.hand_back(engine, "alice", world.res("motor_left"), world.B, timeout_s=0.3)
        assert out["result"] == "waiting"
        assert await wait_until(lambda: _resource(controlroom.snapshot(engine), "motor_left")["returning_to"] is None,
                                5)
        assert [e["to_fay"] for e in await _logged(app, "hand_back") if e["outcome"] == "timeout"] == [world.B]
        r = _resource(controlroom.snapshot(engine), "motor_left")
        assert r["holders"][0]["kind"] == "operator" and r["returning_to"] is None
        await a.close()

    run(scenario())


def test_a_handover_request_to_an_operators_resource_is_refused_at_once(world, run, in_process):
    async def scenario():
        app = await in_process()
        held = await controlroom.take(app.engine, "alice", world.res("motor_left"))
        b = await runtime(app, "rtB")
        r = await world.hand_over(b, "motor_left", "write", 10000)
        assert r["result"] == "rejected" and r["error_code"] == "E_HANDOVER_REJECTED"
        assert "operator holds" in r["error_message"] and "handover_id" not in r    # no offer was made
        assert app.engine.sessions[held["session_id"]].state == "active"
        await b.close()

    run(scenario())


def test_fault_55_take_over_when_shared_and_mid_handover(world, run, in_process):
    from capwarden.engine import invariants

    async def scenario():
        app = await in_process()
        engine, board = app.engine, app.boards["sim"]
        a, c1 = await world.holding(app, "camera", "read")
        b = await runtime(app, "rtB")
        a2 = await runtime(app, "rtC")       # a second runtime of Fay A: a second reader
        c2 = await world.take(a2, "camera", "read")
        holder = await controlroom.take(engine, "alice", world.res("camera"))
        assert await wait_until(lambda: c1.state == c2.state == "terminated", 5)
        assert c1.changes[-1]["reason"] == c2.changes[-1]["reason"] == "operator_takeover"
        op = engine.sessions[holder["session_id"]]
        assert [(t, e) for t, e, _m in await board.grants(op.res)] == [(op.token, op.epoch)]
        assert set(holder["modes"]) == {"read", "execute", "configure"}
        # A holder with an open consent offer: the take does not wait for its answer.
        m = await world.take(a, "motor_left", "write")
        offers = []
        a.on_offer(lambda o: offers.append(o) or asyncio.sleep(3600))
        ho = asyncio.ensure_future(world.hand_over(b, "motor_left", "write", 20000))
        assert await wait_until(lambda: m.state == "handover_pending", 5)
        await controlroom.take(engine, "alice", world.res("motor_left"))
        r = await ho
        assert r["result"] == "rejected"
        assert m.state == "terminated" and m.changes[-1]["reason"] == "operator_takeover"
        assert invariants.check_engine(engine) == []
        assert await invariants.check_boards(engine) == []
        for c in (a, b, a2):
            await c.close()

    run(scenario())


def test_fault_57_an_operators_hold_lives_while_the_console_is_there_and_ends_safe_when_it_goes_silent(
        world, run, in_process, monkeypatch):
    from capwarden.engine import takeover
    from capwarden.engine.liveness import LivenessPolicy

    monkeypatch.setattr(takeover, "PRESENCE_INTERVAL_MS", 200)
    monkeypatch.setattr(takeover, "PRESENCE_TIMEOUT_MS", 800)

    async def scenario():
        app = await in_process(liveness=LivenessPolicy(default=(100, 400)), lease_ms=1500, board_heartbeat_ms=300)
        engine, board = app.engine, app.boards["sim"]
        holder = await controlroom.take(engine, "alice", world.res("motor_left"))
        await controlroom.act(engine, "alice", world.res("motor_left"), 1, speed(500))
        op = engine.sessions[holder["session_id"]]
        for _ in range(12):             # 2.4 s: Fay-sized heartbeat timeouts and board leases go by
            assert controlroom.present(engine, "alice") == 1
            await asyncio.sleep(0.2)
        assert op.state == "active" and not op.suspended
        assert [(t, e) for t, e, _m in await board.grants(op.res)] == [(op.token, op.epoch)]
        # The console goes silent: nobody is there, so nobody holds it, and the motor stops.
        assert await wait_until(lambda: op.state == "terminated", 5)
        ended = [e for e in await _logged(app, "terminate") if e.get("session") == op.session_id]
        assert [e["reason"] for e in ended] == ["heartbeat_timeout"]
        assert await board.grants(op.res) == []
        a = await runtime(app, "rtA")
        s = await world.take(a, "motor_left", "read")
        assert int.from_bytes(await s.command(2), "little", signed=True) == 0      # stopped
        await a.close()

    run(scenario())


def test_fault_56_after_a_take_over_and_release_the_fay_does_not_regain_control(world, run, in_process):
    async def scenario():
        app = await in_process()
        engine, board = app.engine, app.boards["sim"]
        a, m = await world.holding(app, "motor_left", "write")
        res = engine.sessions[m.session_id].res
        await controlroom.take(engine, "alice", world.res("motor_left"))
        await controlroom.release(engine, "alice", world.res("motor_left"))
        await asyncio.sleep(0.5)
        assert m.state == "terminated" and m.changes[-1]["reason"] == "operator_takeover"
        assert await board.grants(res) == []                 # nobody holds it: not the Fay again
        assert (await a.request("SessionQuery", {}))["sessions"] == []
        assert _resource(controlroom.snapshot(engine), "motor_left")["mode"] == "free"
        await a.close()

    run(scenario())


def test_a_hand_back_whose_fay_is_revoked_during_the_move_leaves_the_operator_in_control(world, run, in_process):
    """The Fay's credential is checked when the hand-back starts and again when the board
    answers its waiting ACQUIRE with the moved grant. Revoked in between (another process
    imported the revocation), the Fay is denied and the grant goes back to the operator in one
    more move: the resource is never free, nor released to its safe state under the operator's
    hand. It used to be released, and the hold then ended as `board_unreachable`."""
    from capwarden.credentials import Terminal
    from capwarden.credentials.b64 import b64u_encode
    from capwarden.credentials.issue import sign_revocation
    from capwarden.errors import CapError as SdkRefusal
    from capwarden.engine.registry import LIVE

    async def scenario():
        app = await in_process()
        engine = app.engine
        await controlroom.take(engine, "alice", world.res("motor_left"))
        hold = takeover.hold_of(engine, world.res("motor_left"))
        a = await runtime(app, "rtA")
        waiting = asyncio.ensure_future(world.take(a, "motor_left", "write", wait_ms=5000))
        assert await wait_until(lambda: any(s.fay_id == world.A and s.state == "creating"
                                            for s in engine.sessions.values()))
        await asyncio.sleep(0.2)                     # its ACQUIRE is queued on the board
        board = hold.board.board
        real = board.handover

        async def handover(*args):                   # the move's window: after the first check
            board.handover = real
            now = int(engine.wall())
            Terminal.open(world.store).import_revocation(sign_revocation(world.key, world.dA, now), now)
            return await real(*args)

        board.handover = handover
        out = await controlroom.hand_back(engine, "alice", world.res("motor_left"), world.A, timeout_s=5)
        with pytest.raises(SdkRefusal) as refused:
            await waiting
        assert refused.value.code == "E_DESCRIPTOR_REVOKED"
        assert out["result"] != "completed"
        assert hold.state in LIVE, (hold.state, hold.reason)
        held = await board.grants(hold.res)
        assert [(t, e) for t, e, _m in held] == [(hold.token, hold.epoch)]      # the operator's, on the board
        assert (await controlroom.act(engine, "alice", world.res("motor_left"), 1, speed(300)))["data"] == \
            b64u_encode(speed(300))                                              # still the operator's to drive
        assert [e["outcome"] for e in await _logged(app, "hand_back")][:2] == ["requested", "rolled_back"]
        await a.close()

    run(scenario())
