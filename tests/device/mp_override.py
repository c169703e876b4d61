# The board's manual override (issue 15 item 5, docs/device.md "Manual override") under
# MicroPython: the virtual board's override file takes every exclusive grant of a resource away
# on the board itself, with no host frame at all, drives it safe, refuses exclusive grants until
# it clears, reports it, and allocates nothing. Also: a handover to a session that waits for
# the resource answers that wait with the moved grant (an operator's hand-back).
import micropython
import board
from agent_rig import Rig, config, tick
from capagent.grants import PEND
from capshared import wire as W
from capshared.errors import E_DEV_UPGRADE_REFUSED, E_RESOURCE_BUSY
from capshared.limits import MODE_READ, MODE_WRITE, R_OVERRIDE


def idx(r, name):
    for i in range(len(r.agent.resources)):
        if r.agent.resources[i].name == name:
            return i
    raise ValueError(name)


def switch(r, on_names):
    # The virtual board's switch: one byte per resource, written in place (the board keeps the
    # file open), and the board told to look at once rather than at its next periodic look.
    data = bytearray(b"0" * len(r.agent.resources))
    for name in on_names:
        data[idx(r, name)] = 49
    with open(board.OVERRIDE_FILE, "wb") as f:
        f.write(data)
    board._ov[1] = 0


def fresh():
    # A rig whose switch is off (the tests of this file share their folder, and its file).
    r = Rig()
    switch(r, [])
    tick(r, 20)
    assert r.heartbeat(100) == W.HEARTBEAT_R         # the rig's host session is taken
    return r


def count_on(r, res):
    g = r.agent.control.g
    n = 0
    for i in range(g.n_slots):
        if g.res[i] == res:
            n += 1
    return n


def test_override_takes_exclusive_grants_without_any_host_frame_and_keeps_readers():
    r = fresh()
    ml, gps = idx(r, "motor_left"), idx(r, "gps")
    ctl = r.agent.control
    assert r.acquire(ml, MODE_WRITE, 5) == W.ACQUIRE_R
    assert r.actuate(ml, 5, 1, 200, 0) == W.ACTUATE_R
    assert r.acquire(gps, MODE_READ, 6) == W.ACQUIRE_R
    motor = r.agent.resources[ml]
    assert motor.speed == 200
    frames = r.line.frames
    switch(r, ["motor_left"])
    tick(r, 20)                                      # no frame from the host: the board alone
    assert ctl.g.find(ml, 5) < 0 and motor.speed == 0
    assert ctl.g.find(gps, 6) >= 0                   # readers keep reading
    assert r.line.frames - frames == 2               # EV_GRANT_ENDED, then EV_OVERRIDE
    assert r.line.last_mid == W.EV_OVERRIDE
    assert r.line.u32(0) == 1 << ml and r.line.u8(4) == 1
    # The board's own record: the grant ended for the override.
    last = (ctl.a_count - 1) % 32
    assert ctl.a_b[3 * last] == W.AUD_END and ctl.a_b[3 * last + 2] == R_OVERRIDE
    # Nothing exclusive while it is on: not granted, not upgraded, not queued past it.
    assert r.acquire(ml, MODE_WRITE, 7) == W.ERROR and r.line.last_error == E_RESOURCE_BUSY
    assert r.acquire(ml, MODE_READ, 8) == W.ACQUIRE_R
    assert r.acquire(ml, MODE_WRITE, 8) == W.ERROR and r.line.last_error == E_DEV_UPGRADE_REFUSED
    r.release(ml, 8)
    assert r.acquire(ml, MODE_WRITE, 9, wait=5000) == W.QUEUED
    tick(r, 20)
    assert count_on(r, ml) == 0
    # Switched back: the waiter gets it; no session resumes by itself.
    switch(r, [])
    tick(r, 20)
    assert ctl.g.ov == 0 and ctl.g.find(ml, 9) >= 0
    assert ctl.g.find(ml, 5) < 0


def test_a_new_host_session_hears_the_override_at_its_first_heartbeat():
    r = fresh()
    ml = idx(r, "motor_left")
    switch(r, ["motor_left"])
    tick(r, 20)
    assert r.line.last_mid == W.EV_OVERRIDE
    assert r.heartbeat(101) == W.HEARTBEAT_R        # this host session has heard it already
    r.begin(W.HELLO)
    assert r.send() == W.HELLO_R                     # a new host
    r.heartbeat(102)
    assert r.line.last_mid == W.EV_OVERRIDE and r.line.u32(0) == 1 << ml
    assert r.heartbeat(103) == W.HEARTBEAT_R           # once per session


def test_the_override_path_allocates_nothing():
    r = fresh()
    ml, mr = idx(r, "motor_left"), idx(r, "motor_right")
    for k in range(3):                               # warm up
        r.acquire(ml, MODE_WRITE, 5)
        switch(r, ["motor_left"])
        tick(r, 20)
        switch(r, [])
        tick(r, 20)
    r.acquire(ml, MODE_WRITE, 5)
    r.acquire(mr, MODE_WRITE, 6)
    switch(r, ["motor_left", "motor_right"])
    micropython.heap_lock()
    try:
        for k in range(50):
            tick(r, 20)                              # the board reads its switch every tick
    finally:
        micropython.heap_unlock()
    assert r.agent.control.g.ov == (1 << ml) | (1 << mr) and count_on(r, ml) == count_on(r, mr) == 0


def test_a_handover_to_a_waiting_session_answers_its_wait_with_the_moved_grant():
    r = fresh()
    ml = idx(r, "motor_left")
    g = r.agent.control.g
    assert r.acquire(ml, MODE_WRITE, 5) == W.ACQUIRE_R           # the operator's grant
    assert r.acquire(ml, MODE_WRITE, 6, wait=5000) == W.QUEUED    # the Fay's pending request
    frames = r.line.frames
    e = r.begin(W.HANDOVER)
    e.u8(ml)
    e.u32(5)
    e.u32(g.epoch[g.find(ml, 5)])
    e.u32(6)
    e.u8(MODE_WRITE)
    e.u32(60000)
    assert r.send() == W.HANDOVER_R
    assert r.line.frames - frames == 2                            # ACQUIRE_R for the wait, HANDOVER_R
    tick(r, 20)
    tick(r, 20)
    assert count_on(r, ml) == 1 and g.find(ml, 6) >= 0            # one grant, not a second one
    for j in range(len(g.w_used)):
        assert not g.w_used[j]


def test_fault_55_override_in_the_failsafe_delay_window_and_across_removal():
    r = fresh()
    ml = idx(r, "motor_left")
    g = r.agent.control.g
    config(r, W.CFG_FAILSAFE_DELAY_MS, 300)
    assert r.acquire(ml, MODE_WRITE, 5, lease=100) == W.ACQUIRE_R
    assert r.actuate(ml, 5, 1, 90, 0) == W.ACTUATE_R
    tick(r, 150)                                     # the lease ran out: the failsafe delay window
    i = g.find(ml, 5)
    assert i >= 0 and g.flag[i] & PEND
    switch(r, ["motor_left"])
    tick(r, 20)                                      # the person's switch beats the window
    assert g.find(ml, 5) < 0 and r.agent.resources[ml].speed == 0
    # Unplugged and plugged back while the switch is on: still a person's.
    plug(r, ml, False)
    plug(r, ml, True)
    assert r.acquire(ml, MODE_WRITE, 6) == W.ERROR and r.line.last_error == E_RESOURCE_BUSY
    switch(r, [])
    tick(r, 20)
    assert r.acquire(ml, MODE_WRITE, 6) == W.ACQUIRE_R


def plug(r, res, present):
    e = r.begin(W.SIM_PLUG)
    e.u8(res)
    e.u8(1 if present else 0)
    return r.send()


def test_every_heartbeat_answer_carries_the_override_mask():
    # EV_OVERRIDE is an event, never acknowledged: a host that lost it learns the mask from its
    # next HEARTBEAT_R (protocol 4), which carries it after hb_seq, grants and failsafes.
    r = fresh()
    ml, led = idx(r, "motor_left"), idx(r, "led")
    assert r.heartbeat(101) == W.HEARTBEAT_R and r.line.u32(8) == 0
    switch(r, ["motor_left", "led"])
    tick(r, 20)
    assert r.heartbeat(102) == W.HEARTBEAT_R and r.line.u32(8) == (1 << ml) | (1 << led)
    assert r.heartbeat(103) == W.HEARTBEAT_R and r.line.u32(8) == (1 << ml) | (1 << led)
    switch(r, [])
    tick(r, 20)
    assert r.heartbeat(104) == W.HEARTBEAT_R and r.line.u32(8) == 0
