"""Issue 9 on the virtual board, through the fault-injecting cable: an engine restart in front
of a running board (defect 1), late copies of an ACQUIRE (defect 3), and the link-loss
configuration the board had acknowledged and ignored (defect 11: CFG_FAILSAFE_MS, faults.md
68 failsafe delay, 69 link-loss hold mask, 70 the audit ring read after a failsafe).

Leases of a second or so and generous waits: a loaded machine only slows these tests down.
"""

import asyncio

from capshared.messages import CFG_FAILSAFE_DELAY_MS, CFG_FAILSAFE_MS, CFG_LINK_LOSS_HOLD
from capwarden.errors import DeviceError, LinkTimeout
from capwarden.link import Failsafe, OrphanGrant, open_board
from capwarden.sim import TO_BOARD, TO_HOST
from hil.helpers import LONG, R, W, of_type, speed, wait_until


def test_defect_1_restarted_engine_renews_the_leases_of_a_running_board(vboard, run):
    async def scenario():
        old = await open_board(vboard.port, timeout=0.5, retries=3)   # the first engine
        ml = old.resource_index("motor_left")
        await old.acquire(ml, W, 1, 1000)
        for k in range(1, 6):
            await old.heartbeat(k)
            await asyncio.sleep(0.1)
        await old.close()                    # it dies; the board runs on
        new = await open_board(vboard.port, timeout=0.5, retries=3)   # a brand-new Board
        try:
            mr = new.resource_index("motor_right")
            g = await new.acquire(mr, R | W, 2, 1000)
            await new.actuate(mr, 2, g.epoch, 1, speed(300))
            for k in range(1, 16):           # its counter starts at 1 again: 3 s, three leases
                r = await new.heartbeat(k)
                assert r["hb_seq"] == k
                await asyncio.sleep(0.2)
            assert await new.grants(mr) == [(2, g.epoch, R | W)]          # still alive
            assert await new.actuate(mr, 2, g.epoch, 2) == speed(300)  # and the motor runs
            # A frozen sender still renews nothing (faults.md 26).
            for _ in range(7):
                await new.heartbeat(15)
                await asyncio.sleep(0.2)
            assert await new.grants(mr) == []
        finally:
            await new.close()

    run(scenario())


def test_defect_3_late_copy_of_acquire_after_release_makes_no_grant(vboard, board, run, events):
    ml = board.resource_index("motor_left")

    async def scenario():
        before = await board.stats()
        vboard.cable.inject(TO_BOARD, "delay", arg=1.2)   # past the 0.5 s retry
        g = await board.acquire(ml, W, 7, LONG)           # the retry is answered
        await board.release(ml, 7, g.epoch)
        for _ in range(6):                                 # the replay cache moves on
            await board.ping()
        await asyncio.sleep(1.5)                           # the late copy arrives now
        assert await board.grants(ml) == []                # and made no grant
        after = await board.stats()
        assert after["stale"] == before["stale"] + 1
        assert not of_type(events, OrphanGrant)

    run(scenario())


def test_defect_3_grant_answered_after_the_host_gave_up_is_reported_as_orphan(vboard, board, run, events):
    ml = board.resource_index("motor_left")

    async def scenario():
        vboard.cable.inject(TO_HOST, "delay", arg=1.0)
        try:
            await board.request("ACQUIRE", {"res": ml, "modes": W, "session": 8, "lease_ms": LONG, "wait_ms": 0},
                                timeout=0.3, retries=0)
            raise AssertionError("the answer was delayed past the only try")
        except LinkTimeout:
            pass
        assert await wait_until(lambda: of_type(events, OrphanGrant), 2.5)
        orphans = of_type(events, OrphanGrant)
        held = await board.grants(ml)
        assert [(e.res, e.name, e.session, e.epoch) for e in orphans] == [(ml, "motor_left", 8, held[0][1])]

    run(scenario())


def test_defect_11_cfg_failsafe_ms_bounds_a_long_lease(vboard, board, run):
    ml = board.resource_index("motor_left")

    async def scenario():
        await board.configure(CFG_FAILSAFE_MS, 700)
        g = await board.acquire(ml, W, 1, LONG)
        await board.actuate(ml, 1, g.epoch, 1, speed(500))
        for k in range(1, 6):
            await board.heartbeat(k)           # heartbeats keep it, whatever the cap
            await asyncio.sleep(0.3)
        assert len(await board.grants(ml)) == 1
        await asyncio.sleep(1.5)               # silence longer than 700 ms, far short of the lease
        assert await board.grants(ml) == []
        g2 = await board.acquire(ml, R, 2, LONG)
        assert await board.actuate(ml, 2, g2.epoch, 2) == speed(0)

    run(scenario())


def test_fault_68_heartbeat_within_the_failsafe_delay_keeps_the_motor(vboard, board, run, events):
    ml = board.resource_index("motor_left")

    async def scenario():
        await board.configure(CFG_FAILSAFE_DELAY_MS, 2500)
        g = await board.acquire(ml, R | W, 1, 800)
        await board.actuate(ml, 1, g.epoch, 1, speed(700))
        vboard.cable.disconnect()              # a link glitch longer than the lease
        await asyncio.sleep(1.4)
        vboard.cable.reconnect()
        try:
            await board.actuate(ml, 1, g.epoch, 1, speed(100))
            raise AssertionError("actuation on a lost lease")
        except DeviceError as exc:
            assert exc.code == "E_DEV_FAILSAFE_PENDING"
        await board.heartbeat(1)               # back within the window: the failsafe is off
        assert await board.actuate(ml, 1, g.epoch, 2) == speed(700)
        assert await board.grants(ml) == [(1, g.epoch, R | W)]
        ring = await board.audit_ring()
        assert [e.kind for e in ring.entries][-2:] == ["failsafe_delay", "resumed"]
        assert not of_type(events, Failsafe)
        # Without a heartbeat the window closes and the motor goes safe.
        await asyncio.sleep(0.8 + 2.5 + 1.0)
        assert await board.grants(ml) == []
        g2 = await board.acquire(ml, R, 2, LONG)
        assert await board.actuate(ml, 2, g2.epoch, 2) == speed(0)

    run(scenario())


def test_fault_69_link_loss_hold_mask_keeps_only_the_named_resource(vboard, board, run):
    ml = board.resource_index("motor_left")
    led = board.resource_index("led")

    async def scenario():
        assert ml != led
        await board.configure(CFG_LINK_LOSS_HOLD, 1 << led)
        gm = await board.acquire(ml, W, 1, 800)
        gl = await board.acquire(led, W, 2, 800)
        await board.actuate(ml, 1, gm.epoch, 1, speed(600))
        await board.actuate(led, 2, gl.epoch, 1, bytes([180]))
        vboard.cable.disconnect()
        await asyncio.sleep(1.6)
        vboard.cable.reconnect()
        await board.ping()
        assert await board.grants(ml) == [] and await board.grants(led) == []
        rl = await board.acquire(led, R, 3, LONG)
        rm = await board.acquire(ml, R, 4, LONG)
        assert await board.actuate(led, 3, rl.epoch, 2) == bytes([180])   # kept its state
        assert await board.actuate(ml, 4, rm.epoch, 2) == speed(0)        # went safe
        try:
            await board.configure(CFG_LINK_LOSS_HOLD, 1 << len(board.info.resources))
            raise AssertionError("a bit for a resource the board has not was accepted")
        except DeviceError as exc:
            assert exc.code == "E_DEV_BAD_OPERATION"

    run(scenario())


def test_fault_70_audit_ring_read_after_a_failsafe_ends_with_it(vboard, board, run):
    ml = board.resource_index("motor_left")

    async def scenario():
        for s in range(1, 25):                 # fill the ring past its size first
            g = await board.acquire(ml, W, s, LONG)
            await board.release(ml, s, g.epoch)
        g = await board.acquire(ml, W, 99, 800)
        await board.actuate(ml, 99, g.epoch, 1, speed(700))
        vboard.cable.disconnect()
        await asyncio.sleep(1.5)
        vboard.cable.reconnect()
        ring = await board.audit_ring()
        last = ring.entries[-1]
        assert (last.kind, last.name, last.session, last.epoch, last.reason) == \
            ("failsafe_safe", "motor_left", 99, g.epoch, "lease_expired")
        assert ring.entries[-2].kind == "grant" and ring.entries[-2].epoch == g.epoch
        assert ring.count == 24 * 2 + 2 and len(ring.entries) == 32 and ring.lost == ring.count - 32
        assert [e.seq for e in ring.entries] == list(range(ring.count - 31, ring.count + 1))
        tail = await board.audit_ring(from_seq=ring.count)
        assert [e.seq for e in tail.entries] == [ring.count] and tail.lost == 0

    run(scenario())


def test_defect_3_duplicated_answer_of_a_grant_taken_is_no_orphan(vboard, board, run, events):
    ml = board.resource_index("motor_left")

    async def scenario():
        vboard.cable.inject(TO_HOST, "duplicate")           # the ACQUIRE_R arrives twice
        g = await board.acquire(ml, W, 3, LONG)
        await board.ping()
        assert await board.grants(ml) == [(3, g.epoch, W)]
        assert not of_type(events, OrphanGrant)

    run(scenario())
