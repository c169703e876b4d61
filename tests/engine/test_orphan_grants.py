"""Issue 9 defect 3: every grant on the board is owned by a live engine session within one
heartbeat period.

The engine's one heartbeat renews every lease on a board, so a grant nobody on the host owns
(a late duplicate ACQUIRE executed again after its session was released) would live on and
block the resource. Two ways out, both tested: the link's OrphanGrant event (an answer for a
request no longer pending) and the grant count in every HEARTBEAT_R, which makes the engine
reconcile that board at once when it disagrees with the sessions it tracks.
"""

import asyncio

import pytest

from capwarden.engine import invariants, liveness
from capwarden.link import OrphanGrant
from tableboard import Rig, run, settle


@pytest.fixture
def rig(tmp_path):
    return Rig(str(tmp_path))


def test_issue9_3_orphan_grant_event_is_released(rig):
    async def scenario():
        await rig.e.start()
        try:
            epoch = rig.board.plant(1, 4242)
            rig.board.emit(OrphanGrant(1, "motor_left", 4242, epoch))
            await settle(20)
            assert rig.board.held() == []
            assert ("release", 1, 4242, epoch) in rig.board.calls
            assert [e for e in rig.audit() if e["action"] == "orphan"]
        finally:
            await rig.e.stop()

    run(scenario())


def test_issue9_3_orphan_event_for_a_live_sessions_own_grant_keeps_it(rig):
    async def scenario():
        await rig.e.start()
        try:
            s = rig.session(await rig.acquire("motor_left", "write"))
            rig.board.emit(OrphanGrant(1, "motor_left", s.token, s.epoch))   # a replayed answer of its own
            await settle(20)
            assert s.state == "active" and (1, s.token, s.epoch) in rig.board.held()
            stale = rig.board.plant(1, s.token)                              # its token under another epoch
            rig.board.emit(OrphanGrant(1, "motor_left", s.token, stale))
            await settle(20)
            assert (1, s.token, stale) not in rig.board.held()               # that one released...
            assert (1, s.token, s.epoch) in rig.board.held()                 # ...by epoch: the session's kept
            assert ("end_session", s.token) not in rig.board.calls
        finally:
            await rig.e.stop()

    run(scenario())


def test_issue9_3_orphan_event_waits_for_a_creating_session(rig):
    async def scenario():
        await rig.e.start()
        try:
            rig.board.gate = asyncio.get_running_loop().create_future()     # granted, answer in flight
            pending = asyncio.ensure_future(rig.acquire("motor_left", "write"))
            await settle()
            (s,) = rig.e.sessions.values()
            (_res, token, epoch), = rig.board.held()
            rig.board.emit(OrphanGrant(1, "motor_left", token, epoch))
            await settle(20)
            assert rig.board.held() == [(1, token, epoch)]                   # not released while creating
            rig.board.gate.set_result(None)
            assert rig.session(await pending) is s
            await asyncio.sleep(0.2)
            assert s.state == "active" and rig.board.held() == [(1, token, epoch)]
        finally:
            await rig.e.stop()

    run(scenario())


def test_issue9_3_heartbeat_grant_count_reconciles_an_unknown_grant(rig):
    async def scenario():
        kept = rig.session(await rig.acquire("gps", "read"))
        rig.board.plant(1, 777)                     # no session has token 777, and no event came
        await liveness._board_tick(rig.e, rig.handle)
        await settle(20)
        assert [g[1] for g in rig.board.held()] == [kept.token]
        assert kept.state == "active"
        assert invariants.check(rig.e, rig.audit_path, replies=rig.replies) == []

    run(scenario())


def test_issue9_3_heartbeat_grant_count_ends_a_session_whose_grant_is_gone(rig):
    async def scenario():
        s = rig.session(await rig.acquire("gps", "read"))
        rig.board.table.clear()                     # the board ended it; its event was lost
        await liveness._board_tick(rig.e, rig.handle)
        await settle(20)
        assert s.state == "terminated"

    run(scenario())


def test_issue9_3_reconcile_spares_a_creating_sessions_grant_in_flight(rig):
    async def scenario():
        rig.board.gate = asyncio.get_running_loop().create_future()
        pending = asyncio.ensure_future(rig.acquire("motor_left", "write"))
        await settle()
        (_res, token, epoch), = rig.board.held()
        assert rig.e.check_grant_count(rig.handle, 1) is False      # explained by the acquire in flight
        await rig.e.reconcile(rig.handle)                            # and a reconcile anyway keeps it
        assert rig.board.held() == [(1, token, epoch)]
        rig.board.gate.set_result(None)
        s = rig.session(await pending)
        assert s.state == "active" and s.epoch == epoch

    run(scenario())


def test_issue9_3_reconcile_never_runs_twice_at_once(rig):
    async def scenario():
        rig.board.grants_gate = asyncio.get_running_loop().create_future()
        first = asyncio.ensure_future(rig.e.reconcile(rig.handle))
        await settle()
        rig.board.plant(0, 99)
        assert rig.e.check_grant_count(rig.handle, 1) is True        # disagrees, but one is running:
        second = asyncio.ensure_future(rig.e.reconcile(rig.handle))  # a direct call waits its turn
        await settle(20)
        assert rig.board.grants_running == 1
        rig.board.grants_gate.set_result(None)
        await asyncio.gather(first, second)
        assert rig.board.grants_most == 1
        assert rig.board.held() == []

    run(scenario())


def test_issue9_3_a_grant_planted_on_the_board_is_released_within_a_heartbeat(world, run, in_process):
    from capshared.limits import MODE_WRITE
    from enginerig import runtime, wait_until

    async def scenario():
        app = await in_process(lease_ms=600, board_heartbeat_ms=150)
        board = app.boards["sim"]
        res = board.resource_index("motor_left")
        stranger = 12345 if 12345 not in {s.token for s in app.engine.sessions.values()} else 12346
        await board.acquire(res, MODE_WRITE, stranger, 600)        # on the board, owned by no session
        assert [t for t, _e, _m in await board.grants(res)] == [stranger]
        gone = []

        async def poll():
            while True:
                held = await board.grants(res)
                if not held:
                    gone.append(True)
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poll(), 10)                         # the heartbeat no longer keeps it alive
        assert gone
        b = await runtime(app, "rtB")
        m = await world.take(b, "motor_left", "write", who="B")   # not busy
        assert await wait_until(lambda: m.state == "active", 1)
        assert invariants.check(app.engine, app.audit_path) == []
        assert await invariants.check_boards(app.engine) == []
        await b.close()

    run(scenario())


def test_issue9_3_an_acquire_whose_answer_is_lost_is_withdrawn(rig):
    from capwarden.errors import LinkTimeout

    async def scenario():
        granted = rig.board.acquire

        async def lost_answer(*a, **kw):
            await granted(*a, **kw)                 # the board granted it...
            raise LinkTimeout("no answer")          # ...and the answer never came back

        rig.board.acquire = lost_answer
        r = await rig.acquire("motor_left", "write")
        assert r["body"]["result"] == "denied" and r["body"]["error_code"] == "E_DEVICE_UNREACHABLE"
        assert rig.board.held() == []               # withdrawn at once, not left for the heartbeat to renew
        assert any(c[0] == "end_session" for c in rig.board.calls)

    run(scenario())
