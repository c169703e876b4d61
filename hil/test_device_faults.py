"""faults.md at the device, through the virtual cable against the agent on real MicroPython.

Sections "Locks and modes", "Stale holders and fencing", "Resource and device events" and
"Failsafe timing and watchdog"; each test is named after its scenario number. Timing uses
leases of a second or more and waits with generous bounds, so a loaded machine only slows them.
"""

import asyncio
import os
import time

import pytest

from capshared.messages import CFG_LOCK_DELAY_MS, CFG_WATCHDOG_MS
from capwarden.errors import DeviceError, LinkTimeout
from capwarden.link import Failsafe, GrantEnded, ResourceEvent, open_board
from capwarden.sim import TO_HOST
from hil.helpers import LONG, C, R, W, X, code_of, speed, wait_until


@pytest.fixture
def res(board):
    return {r.name: r.index for r in board.info.resources}


# ---- Locks and modes -------------------------------------------------------------------------

async def test_fault_01_writer_granted_despite_stream_of_readers(board, res):
    led = res["led"]
    await board.acquire(led, R, 1, LONG)
    writer = asyncio.ensure_future(board.acquire(led, W, 9, LONG, wait_ms=5000))
    await asyncio.sleep(0.1)
    readers = [asyncio.ensure_future(board.acquire(led, R, s, LONG, wait_ms=5000)) for s in range(2, 6)]
    await asyncio.sleep(0.1)
    assert not writer.done() and not any(r.done() for r in readers)
    g1 = (await board.grants(led))[0]
    await board.release(led, 1, g1[1])
    gw = await writer                          # the writer goes first
    assert not any(r.done() for r in readers)  # readers queued behind it
    await board.release(led, 9, gw.epoch)
    got = await asyncio.gather(*readers)
    assert {g.session for g in got} == {2, 3, 4, 5}


async def test_fault_02_readers_queue_behind_writer_and_rereading_does_not_deadlock(board, res):
    led = res["led"]
    g = await board.acquire(led, R, 1, LONG)
    w = asyncio.ensure_future(board.acquire(led, W, 2, LONG, wait_ms=3000))
    await asyncio.sleep(0.1)
    again = await board.acquire(led, R, 1, LONG)   # the holder reads again: no deadlock
    assert again.epoch == g.epoch
    with pytest.raises(DeviceError) as exc:
        await board.acquire(led, R, 3, LONG)       # a new reader may not pass the writer
    assert exc.value.code == "E_RESOURCE_BUSY"
    await board.release(led, 1, g.epoch)
    assert (await w).session == 2


def test_fault_03_upgrade_is_atomic_alone_and_refused_when_shared(board, run, res):
    ml = res["motor_left"]
    g = run(board.acquire(ml, R, 1, LONG))
    up = run(board.acquire(ml, W, 1, LONG))
    assert up.epoch > g.epoch and up.modes == R | W
    assert code_of(run, board.actuate(ml, 1, g.epoch, 1, speed(10))) == "E_DEV_STALE_EPOCH"
    run(board.release(ml, 1, up.epoch))
    run(board.acquire(ml, R, 1, LONG))
    run(board.acquire(ml, R, 2, LONG))
    assert code_of(run, board.acquire(ml, W, 1, LONG)) == "E_DEV_UPGRADE_REFUSED"
    assert sorted(s for s, _e, _m in run(board.grants(ml))) == [1, 2]


async def test_fault_04_writer_waits_for_every_reader_even_an_expiring_one(board, res):
    led = res["led"]
    await board.acquire(led, R, 1, 800)            # this reader's lease runs out
    g2 = await board.acquire(led, R, 2, LONG)
    w = asyncio.ensure_future(board.acquire(led, W, 3, LONG, wait_ms=8000))
    await asyncio.sleep(1.5)                       # reader 1 expired; reader 2 still holds
    assert not w.done()
    await board.release(led, 2, g2.epoch)
    assert (await w).session == 3


def test_fault_05_exclusive_modes_of_one_actuator_exclude_each_other(board, run, res):
    cam = res["camera"]
    run(board.acquire(cam, X, 1, LONG))
    assert code_of(run, board.acquire(cam, C, 2, LONG)) == "E_RESOURCE_BUSY"
    assert code_of(run, board.acquire(cam, R, 2, LONG)) == "E_RESOURCE_BUSY"


async def test_fault_06_same_instant_requests_granted_in_arrival_order(board, res):
    led = res["led"]
    g = await board.acquire(led, W, 1, LONG)
    order = []
    waits = []
    for s in (7, 4, 9, 2):
        t = asyncio.ensure_future(board.acquire(led, W, s, LONG, wait_ms=8000))
        t.add_done_callback(lambda f: order.append(f.result().session))
        waits.append(t)
        await asyncio.sleep(0.05)  # sent in this order
    epoch = g.epoch
    holder = 1
    for _ in range(4):
        await board.release(led, holder, epoch)
        assert await wait_until(lambda: len(order) > 0 and order[-1] != holder, 5)
        holder = order[-1]
        epoch = [e for s, e, _m in await board.grants(led) if s == holder][0]
    assert order == [7, 4, 9, 2]


async def test_fault_07_cancelled_waiter_passes_the_lock_on(board, res):
    led = res["led"]
    g = await board.acquire(led, W, 1, LONG)
    a = asyncio.ensure_future(board.acquire(led, W, 2, LONG, wait_ms=5000))
    b = asyncio.ensure_future(board.acquire(led, W, 3, LONG, wait_ms=5000))
    await asyncio.sleep(0.1)
    await board.end_session(2)                  # the first waiter goes away
    with pytest.raises(DeviceError) as exc:
        await a
    assert exc.value.code == "E_RESOURCE_BUSY"  # its session ended: refused, never granted
    await board.release(led, 1, g.epoch)
    assert (await b).session == 3


def test_fault_08_grant_bound_to_session_not_to_the_serial_handle(vboard, board, run, res):
    ml = res["motor_left"]
    g = run(board.acquire(ml, W, 5, LONG))
    run(board.close())
    b2 = run(open_board(vboard.port, timeout=0.5, retries=3))  # a new handle, same board
    try:
        assert run(b2.grants(ml)) == [(5, g.epoch, W)]
        run(b2.actuate(ml, 5, g.epoch, 1, speed(100)))   # a DeviceError if the grant died with its handle
    finally:
        run(b2.close())


def test_fault_09_configure_while_executing_is_rejected(board, run, res):
    cam = res["camera"]
    run(board.acquire(cam, X, 1, LONG))
    assert code_of(run, board.acquire(cam, C, 2, LONG)) == "E_RESOURCE_BUSY"


def test_fault_46_non_holder_harmless_command_is_refused(board, run, res):
    ml = res["motor_left"]
    g = run(board.acquire(ml, W, 1, LONG))
    # Reading a motor's speed looks harmless; without a grant it is still refused.
    assert code_of(run, board.actuate(ml, 2, g.epoch, 2)) in ("E_DEV_NOT_HOLDER", "E_DEV_STALE_EPOCH")
    assert code_of(run, board.actuate(res["gps"], 2, 1, 1)) in ("E_DEV_NOT_HOLDER", "E_DEV_STALE_EPOCH")


def test_op_needs_its_own_mode_modes_never_imply_each_other(board, run, res):
    ml = res["motor_left"]
    g = run(board.acquire(ml, C, 1, LONG))  # configure does not include write or read
    assert code_of(run, board.actuate(ml, 1, g.epoch, 1, speed(5))) == "E_DEV_NOT_HOLDER"
    assert code_of(run, board.actuate(ml, 1, g.epoch, 2)) == "E_DEV_NOT_HOLDER"
    assert code_of(run, board.actuate(ml, 1, g.epoch, 99)) == "E_DEV_BAD_OPERATION"
    assert code_of(run, board.acquire(res["gps"], W, 2, LONG)) == "E_DEV_BAD_MESSAGE"  # gps is read-only


# ---- Stale holders and fencing -----------------------------------------------------------------

def test_fault_27_paused_holder_writing_with_old_epoch_is_refused(board, run, res):
    ml = res["motor_left"]

    async def scenario():
        old = await board.acquire(ml, W, 1, 700)
        await asyncio.sleep(1.2)                      # holder stalls past its lease
        new = await board.acquire(ml, W, 2, LONG)
        assert new.epoch > old.epoch
        return old

    old = run(scenario())
    assert code_of(run, board.actuate(ml, 1, old.epoch, 1, speed(500))) == "E_DEV_STALE_EPOCH"


async def test_fault_28_waiter_whose_session_ends_is_never_granted(board, res):
    led = res["led"]
    g = await board.acquire(led, W, 1, LONG)
    w = asyncio.ensure_future(board.acquire(led, W, 2, LONG, wait_ms=5000))
    await asyncio.sleep(0.1)
    await board.end_session(2)
    await board.release(led, 1, g.epoch)
    with pytest.raises(DeviceError) as exc:
        await w
    assert exc.value.code == "E_RESOURCE_BUSY"
    assert await board.grants(led) == []


def test_fault_29_late_release_of_old_epoch_keeps_the_newer_grant(board, run, res):
    ml = res["motor_left"]
    g1 = run(board.acquire(ml, W, 1, LONG))
    run(board.release(ml, 1, g1.epoch))
    g2 = run(board.acquire(ml, W, 1, LONG))
    assert code_of(run, board.release(ml, 1, g1.epoch)) == "E_DEV_STALE_EPOCH"
    assert run(board.grants(ml)) == [(1, g2.epoch, W)]


def test_fault_30_release_lost_in_a_disconnect_converges_after_reconnect(vboard, board, run, res):
    ml = res["motor_left"]
    g = run(board.acquire(ml, W, 1, LONG))
    vboard.cable.disconnect()
    with pytest.raises(LinkTimeout):
        run(board.release(ml, 1, g.epoch))
    vboard.cable.reconnect()
    assert run(board.grants(ml)) == [(1, g.epoch, W)]   # the host can see the truth
    run(board.release(ml, 1, g.epoch))
    assert run(board.grants(ml)) == []                   # no orphan lock


def test_fault_31_lost_acquire_ack_retried_yields_exactly_one_grant(vboard, board, run, res):
    ml = res["motor_left"]
    before = run(board.stats())["replayed"]
    vboard.cable.inject(TO_HOST, "drop")                 # the grant's answer is lost
    g = run(board.acquire(ml, W, 1, LONG))
    assert run(board.grants(ml)) == [(1, g.epoch, W)]
    assert run(board.stats())["replayed"] == before + 1


def test_fault_32_new_session_does_not_inherit_the_old_grant(board, run, res):
    ml = res["motor_left"]
    g = run(board.acquire(ml, W, 1, LONG))
    run(board.end_session(1))
    assert code_of(run, board.actuate(ml, 2, g.epoch, 1, speed(1))) in ("E_DEV_STALE_EPOCH", "E_DEV_NOT_HOLDER")
    assert run(board.grants(ml)) == []


async def test_fault_33_lock_delay_after_a_lost_holder_not_after_a_clean_release(board, res):
    ml = res["motor_left"]
    await board.configure(CFG_LOCK_DELAY_MS, 1500)
    g = await board.acquire(ml, W, 1, LONG)
    await board.release(ml, 1, g.epoch)
    g2 = await board.acquire(ml, W, 2, 600)        # clean release: granted at once
    await asyncio.sleep(1.0)                       # holder 2 lost (lease ran out)
    with pytest.raises(DeviceError) as exc:
        await board.acquire(ml, W, 3, LONG)
    assert exc.value.code == "E_DEV_LOCK_DELAY"
    g3 = await board.acquire(ml, W, 3, LONG, wait_ms=5000)  # granted when the delay ends
    assert g3.epoch > g2.epoch


def test_fault_34_deposed_holder_ignoring_notification_cannot_actuate(board, run, res):
    ml = res["motor_left"]
    g = run(board.acquire(ml, W, 1, LONG))
    run(board.actuate(ml, 1, g.epoch, 1, speed(300)))
    h = run(board.handover(ml, 1, g.epoch, 2, R | W, LONG))
    assert code_of(run, board.actuate(ml, 1, g.epoch, 1, speed(900))) == "E_DEV_STALE_EPOCH"
    assert run(board.actuate(ml, 2, h.epoch, 2)) == speed(300)  # the motor never took 900


# ---- Handover on the board ---------------------------------------------------------------------

def test_handover_is_atomic_and_failure_leaves_holder_untouched(board, run, res):
    cam = res["camera"]
    g = run(board.acquire(cam, X, 1, LONG))
    assert code_of(run, board.handover(cam, 1, g.epoch + 5, 2, X, LONG)) == "E_DEV_NOT_HOLDER"
    assert code_of(run, board.handover(cam, 3, g.epoch, 2, X, LONG)) in ("E_DEV_NOT_HOLDER", "E_DEV_STALE_EPOCH")
    assert run(board.grants(cam)) == [(1, g.epoch, X)]
    h = run(board.handover(cam, 1, g.epoch, 2, X, LONG))
    assert run(board.grants(cam)) == [(2, h.epoch, X)]   # one holder before, one after


# ---- Leases, heartbeats, suspension ------------------------------------------------------------

async def test_one_heartbeat_frame_renews_every_lease(board, res):
    for s, name in enumerate(("gps", "imu", "camera", "sdcard", "led"), 1):
        await board.acquire(res[name], R, s, 1000)
    frames0 = board.tx_frames
    for k in range(1, 8):                          # 2.1 s: twice the lease
        await board.heartbeat(k)
        await asyncio.sleep(0.3)
    assert board.tx_frames - frames0 == 7          # one frame per beat, not per grant
    total = sum([len(await board.grants(res[n])) for n in ("gps", "imu", "camera", "sdcard", "led")])
    assert total == 5


async def test_fault_26_frozen_heartbeat_does_not_renew(board, res):
    ml = res["motor_left"]
    await board.acquire(ml, W, 1, 900)
    await board.heartbeat(5)
    for _ in range(6):
        await asyncio.sleep(0.3)
        await board.heartbeat(5)                   # same sequence number: a stuck sender
    assert await board.grants(ml) == []


async def test_silent_host_failsafe_drives_safe_state_and_reports_on_return(vboard, board, res, events):
    ml = res["motor_left"]
    g = await board.acquire(ml, W, 1, 800)
    await board.actuate(ml, 1, g.epoch, 1, speed(700))
    vboard.cable.disconnect()                      # the host goes silent
    await asyncio.sleep(1.5)
    vboard.cable.reconnect()
    await board.ping()                             # the host speaks again
    assert await wait_until(lambda: any(isinstance(e, Failsafe) for e in events))
    g2 = await board.acquire(ml, R, 2, LONG)
    assert await board.actuate(ml, 2, g2.epoch, 2) == speed(0)   # motor idled


def test_suspended_session_keeps_lock_but_may_not_actuate(board, run, res):
    ml = res["motor_left"]
    g = run(board.acquire(ml, R | W, 1, LONG))
    run(board.actuate(ml, 1, g.epoch, 1, speed(400)))
    run(board.suspend(1, True))
    assert code_of(run, board.actuate(ml, 1, g.epoch, 1, speed(400))) == "E_DEV_SUSPENDED"
    assert run(board.actuate(ml, 1, g.epoch, 2)) == speed(0)     # reads go on; motor in safe hold
    assert code_of(run, board.acquire(ml, W, 2, LONG)) == "E_RESOURCE_BUSY"  # lock kept
    run(board.suspend(1, False))
    run(board.actuate(ml, 1, g.epoch, 1, speed(50)))
    assert run(board.actuate(ml, 1, g.epoch, 2)) == speed(50)    # resumed: writes take effect again


def test_fault_21_reboot_clears_every_grant(vboard, run):
    b = run(open_board(vboard.port, timeout=0.5, retries=3))
    ml = b.resource_index("motor_left")
    run(b.acquire(ml, W, 1, LONG))
    old = b.info.boot_id
    run(b.close())
    vboard.restart()
    b2 = run(open_board(vboard.port, timeout=0.5, retries=3))
    try:
        assert b2.info.boot_id != old
        assert run(b2.grants(ml)) == []
    finally:
        run(b2.close())


# ---- Resource and device events ----------------------------------------------------------------

async def test_fault_60_unplug_ends_every_grant_with_reason_removed(board, res, events):
    gps = res["gps"]
    await board.acquire(gps, R, 1, LONG)
    await board.acquire(gps, R, 2, LONG)
    await board.sim_plug(gps, False)
    # Two grant-ended events, then the resource event: frames that may still be in flight.
    assert await wait_until(lambda: sum(isinstance(e, GrantEnded) for e in events) == 2 and
                          any(isinstance(e, ResourceEvent) and e.state == "absent" for e in events))
    assert all(e.reason == "removed" for e in events if isinstance(e, GrantEnded))
    with pytest.raises(DeviceError) as exc:
        await board.acquire(gps, R, 3, LONG)
    assert exc.value.code == "E_RESOURCE_UNAVAILABLE"


def test_fault_61_replug_resumes_no_session(board, run, res):
    gps = res["gps"]
    g = run(board.acquire(gps, R, 1, LONG))
    run(board.sim_plug(gps, False))
    run(board.sim_plug(gps, True))
    assert run(board.grants(gps)) == []
    assert code_of(run, board.actuate(gps, 1, g.epoch, 1)) in ("E_DEV_STALE_EPOCH", "E_DEV_NOT_HOLDER")
    assert run(board.acquire(gps, R, 1, LONG)).epoch > g.epoch


def test_fault_62_unrelated_failure_does_not_cascade(board, run, res):
    ml = res["motor_left"]
    g = run(board.acquire(ml, W, 1, LONG))
    run(board.sim_plug(res["gps"], False))
    run(board.actuate(ml, 1, g.epoch, 1, speed(20)))
    assert run(board.grants(ml)) == [(1, g.epoch, W)]


def test_fault_63_resource_appearing_later_is_announced(board, run, res, events):
    imu = res["imu"]
    run(board.sim_plug(imu, False))
    run(board.sim_plug(imu, True))
    assert run(wait_until(lambda: any(isinstance(e, ResourceEvent) and e.state == "present" for e in events)))
    assert board.info.resources[imu].state == "present"
    assert run(board.acquire(imu, R, 1, LONG)).session == 1


def test_fault_64_busy_error_names_the_holder(board, run, res):
    ml = res["motor_left"]
    run(board.acquire(ml, W, 4242, LONG))
    with pytest.raises(DeviceError) as exc:
        run(board.acquire(ml, W, 7, LONG))
    assert exc.value.code == "E_RESOURCE_BUSY" and "detail 4242" in str(exc.value)


def test_fault_66_driver_error_mid_operation_recovers_without_reboot(board, run, res):
    sd = res["sdcard"]
    g = run(board.acquire(sd, W, 1, LONG))
    run(board.actuate(sd, 1, g.epoch, 1, b"x" * 100))
    boot = board.info.boot_id
    for _ in range(8):
        try:
            run(board.actuate(sd, 1, g.epoch, 1, b"y" * 100))
        except DeviceError as exc:  # the card is full: the driver refuses, the agent lives on
            assert exc.code == "E_DEV_BAD_OPERATION"
            break
    else:
        pytest.fail("the storage driver never reported full")
    run(board.actuate(sd, 1, g.epoch, 1, b"z"))
    assert run(board.ping())["uptime_ms"] > 0 and board.info.boot_id == boot


# ---- Failsafe timing and watchdog --------------------------------------------------------------

def test_fault_67_loop_stall_triggers_watchdog_reset_and_safe_state(vboard, board, run, res):
    ml = res["motor_left"]
    run(board.configure(CFG_WATCHDOG_MS, 400))
    g = run(board.acquire(ml, W | C, 1, LONG))
    run(board.actuate(ml, 1, g.epoch, 1, speed(800)))
    with pytest.raises((LinkTimeout, DeviceError)):
        run(board.actuate(ml, 1, g.epoch, 3, (3000).to_bytes(2, "little")))  # stalls the loop 3 s
    deadline = time.monotonic() + 10
    while vboard.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not vboard.alive(), "the watchdog did not reset the board"
    with open(os.path.join(vboard.fs_dir, "wdt_reset")) as f:
        assert f.read().strip() == "reset"


def test_watchdog_cannot_be_rearmed_with_another_timeout(board, run):
    run(board.configure(CFG_WATCHDOG_MS, 2000))
    run(board.configure(CFG_WATCHDOG_MS, 2000))
    assert code_of(run, board.configure(CFG_WATCHDOG_MS, 5000)) == "E_DEV_BAD_OPERATION"
    up = run(board.ping())["uptime_ms"]
    for _ in range(5):   # fed while healthy: the board stays up (its uptime never restarts)
        time.sleep(0.5)
        now = run(board.ping())["uptime_ms"]
        assert now > up
        up = now


async def test_a_frame_cut_off_mid_line_does_not_stall_the_failsafe(vboard, board, res, events):
    """The host dies halfway through a frame: the board (which reads what the line holds in
    one call where it can) never waits for the rest, so the lease still ends on time and the
    motor is driven safe; the next whole frame after a delimiter is served."""
    from capshared import codec
    from capwarden.sim import TO_BOARD

    ml = res["motor_left"]
    g = await board.acquire(ml, W, 1, 800)
    await board.actuate(ml, 1, g.epoch, 1, speed(700))
    from capshared import messages

    whole = codec.frame_bytes(messages.ID["PING"], 1, codec.encode_payload("PING", {"nonce": 1}), 0)
    vboard.cable.inject_bytes(TO_BOARD, whole[:len(whole) // 2])   # no delimiter, no more bytes
    await asyncio.sleep(0.05)
    vboard.cable.disconnect()          # and then the host says nothing
    t0 = time.monotonic()
    await asyncio.sleep(1.5)
    vboard.cable.reconnect()
    await board.ping()                 # the host's frame after a delimiter: answered
    assert await wait_until(lambda: any(isinstance(e, Failsafe) for e in events))
    g2 = await board.acquire(ml, R, 2, LONG)
    assert await board.actuate(ml, 2, g2.epoch, 2) == speed(0)
    assert time.monotonic() - t0 < 30
