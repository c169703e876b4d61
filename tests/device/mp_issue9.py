# Issue 9 at the board, under MicroPython: suspension that cannot leak (defect 2), late copies
# of requests never executed again (defect 3), CFG_FAILSAFE_MS, the failsafe delay window, the
# link-loss hold mask and the audit ring (defect 11, faults.md 68-70), every fixed table filled
# past capacity, and a seeded fuzz of the agent's decoder and dispatch. Each test_ runs in its
# own micropython process (tests/device/test_device.py).
import gc

import micropython
from agent_rig import Rig, after, config, new_paths, resend, suspend, tick
from capshared import wire as W
from capshared.errors import (
    E_DEV_BAD_MESSAGE, E_DEV_BAD_OPERATION, E_DEV_FAILSAFE_PENDING, E_DEV_NO_SPACE, E_DEV_STALE_REQUEST, E_DEV_SUSPENDED,
)
from capshared.limits import MODE_READ, MODE_WRITE

LONG = 600000


def rig():
    return Rig()


def idx(r, name):
    for i in range(len(r.agent.resources)):
        if r.agent.resources[i].name == name:
            return i
    raise ValueError(name)


def epoch_of(r, res, session):
    g = r.agent.control.g
    return g.epoch[g.find(res, session)]


def op1(r, res, session, args):
    # ACTUATE op 1 with these argument bytes, under the session's current epoch.
    e = r.begin(W.ACTUATE)
    e.u8(res)
    e.u32(session)
    e.u32(epoch_of(r, res, session))
    e.u8(1)
    for b in args:
        e.u8(b)
    return r.send()


def set_speed(r, res, session, v):
    # A motor's speed: an i16.
    return op1(r, res, session, (v & 0xFF, (v >> 8) & 0xFF))


def set_level(r, res, session, v):
    # The LED's level: one byte.
    return op1(r, res, session, (v,))


def handover(r, res, frm, to, modes=MODE_WRITE):
    e = r.begin(W.HANDOVER)
    e.u8(res)
    e.u32(frm)
    e.u32(epoch_of(r, res, frm))
    e.u32(to)
    e.u8(modes)
    e.u32(LONG)
    return r.send()


def end_session(r, session):
    e = r.begin(W.END_SESSION)
    e.u32(session)
    return r.send()


def plug(r, res, present):
    e = r.begin(W.SIM_PLUG)
    e.u8(res)
    e.u8(1 if present else 0)
    return r.send()


def audit(r, first):
    e = r.begin(W.AUDIT)
    e.u32(first)
    r.send()
    assert r.line.last_mid == W.AUDIT_R
    line = r.line
    n = (line.last_n - 4 - 8) // W.AUDIT_ENTRY_SIZE
    out = []
    for k in range(n):
        o = 8 + k * W.AUDIT_ENTRY_SIZE
        out.append((line.u8(o), line.u8(o + 1), line.u8(o + 2), line.u32(o + 3), line.u32(o + 7)))
    return line.u32(0), line.u32(4), out


def ring(r):
    # Every entry the ring still holds: (count, first, [(kind, res, reason, session, epoch)]).
    count, first, out = audit(r, 1)
    start = first
    while first + len(out) <= count:
        _c, f, more = audit(r, first + len(out))
        if not more:
            break
        out += more
    return count, start, out


# ---- defect 2: suspension ---------------------------------------------------------------------

def test_defect_2_suspension_enforced_after_seventeen_suspended_sessions_released():
    r = rig()
    ml = idx(r, "motor_left")
    for s in range(101, 121):                       # 20 suspended sessions, each released
        assert r.acquire(ml, MODE_WRITE, s) == W.ACQUIRE_R
        assert suspend(r, s, True) == W.SUSPEND_R and r.line.u8(5) == 1
        r.release(ml, s)
    assert r.acquire(ml, MODE_WRITE, 200) == W.ACQUIRE_R
    assert suspend(r, 200, True) == W.SUSPEND_R and r.line.u8(5) == 1   # grants: 1, recorded
    assert set_speed(r, ml, 200, 300) == W.ERROR and r.line.last_error == E_DEV_SUSPENDED
    assert r.agent.resources[ml].speed == 0


def test_defect_2_suspension_ends_with_its_grant_on_every_path():
    r = rig()
    ml = idx(r, "motor_left")
    led = idx(r, "led")
    g = r.agent.control.g
    s = 300
    for k in range(40):
        s += 1
        assert r.acquire(ml, MODE_WRITE, s, lease=100) == W.ACQUIRE_R
        suspend(r, s, True)
        way = k % 5
        if way == 0:
            r.release(ml, s)
        elif way == 1:
            tick(r, 200)                            # the lease runs out
        elif way == 2:
            assert handover(r, ml, s, s + 1000) == W.HANDOVER_R
            assert not g.suspended(s + 1000)        # the new holder is not suspended
            assert set_speed(r, ml, s + 1000, 10) == W.ACTUATE_R
            r.release(ml, s + 1000)
        elif way == 3:
            plug(r, ml, False)                      # the resource goes away
            plug(r, ml, True)
        else:
            end_session(r, s)
        for i in range(g.n_slots):
            assert g.flag[i] == 0 or g.res[i] != 0xFF and g.session[i] != s, "suspension outlived its grant"
    # Still enforced afterwards, and what a suspended session acquires meanwhile is suspended.
    r.acquire(ml, MODE_WRITE, 900)
    suspend(r, 900, True)
    assert r.acquire(led, MODE_WRITE, 900) == W.ACQUIRE_R
    assert set_speed(r, ml, 900, 5) == W.ERROR and r.line.last_error == E_DEV_SUSPENDED
    assert set_level(r, led, 900, 9) == W.ERROR and r.line.last_error == E_DEV_SUSPENDED
    suspend(r, 900, False)
    assert set_speed(r, ml, 900, 5) == W.ACTUATE_R


def test_suspend_of_a_session_without_grants_says_so():
    r = rig()
    assert suspend(r, 77, True) == W.SUSPEND_R and r.line.u8(5) == 0   # grants: 0


# ---- every fixed table past capacity ----------------------------------------------------------

def test_every_table_filled_past_capacity_refuses_loudly():
    r = rig()
    g = r.agent.control.g
    names = [x.name for x in r.agent.resources]
    s = 0
    for k in range(g.n_slots):                      # grants: 16 readers over the read resources
        s += 1
        assert r.acquire(names.index(("gps", "imu", "sdcard", "camera")[k % 4]), MODE_READ, s) == W.ACQUIRE_R
    assert r.acquire(names.index("led"), MODE_READ, 99) == W.ERROR and r.line.last_error == E_DEV_NO_SPACE
    for k in range(1, g.n_slots + 1):               # suspension: one mark per grant, all held
        assert suspend(r, k, True) == W.SUSPEND_R and r.line.u8(5) == 1
    assert sum(1 for i in range(g.n_slots) if g.flag[i]) == g.n_slots
    # waiters: 8 queued writers behind the readers of the sdcard, the 9th refused
    sd = names.index("sdcard")
    for k in range(8):
        assert r.acquire(sd, MODE_WRITE, 500 + k, wait=60000) == W.QUEUED
    assert r.acquire(sd, MODE_WRITE, 600, wait=60000) == W.ERROR and r.line.last_error == E_DEV_NO_SPACE


def test_replay_cache_past_capacity_never_executes_a_late_copy():
    r = rig()
    ml = idx(r, "motor_left")
    r.acquire(ml, MODE_WRITE, 5)
    set_speed(r, ml, 5, 400)
    rid = r.rid
    set_speed(r, ml, 5, 100)                        # the motor moves on
    for k in range(1, 6):                           # five more answers: the cache moved on
        r.heartbeat(k)
    top = resend(r, rid)
    assert set_speed(r, ml, 5, 400) == W.ERROR and r.line.last_error == E_DEV_STALE_REQUEST
    after(r, top)
    assert r.agent.resources[ml].speed == 100       # the late copy did not drive the motor
    r.rid = rid - 300 + 60000 if rid < 300 else rid - 300   # far behind the window: refused too
    assert r.heartbeat(50) == W.ERROR and r.line.last_error == E_DEV_STALE_REQUEST


# ---- defect 3: late copies of ACQUIRE -----------------------------------------------------------

def test_defect_3_late_acquire_after_release_makes_no_grant():
    r = rig()
    ml = idx(r, "motor_left")
    g = r.agent.control.g
    assert r.acquire(ml, MODE_WRITE, 5, lease=1000) == W.ACQUIRE_R
    rid = r.rid
    r.release(ml, 5)
    for k in range(1, 6):
        r.heartbeat(k)
    top = resend(r, rid)
    assert r.acquire(ml, MODE_WRITE, 5, lease=1000) == W.ERROR and r.line.last_error == E_DEV_STALE_REQUEST
    after(r, top)
    assert g.count() == 0                           # no orphan grant


def test_retried_acquire_gets_its_grant_after_the_cache_moved_on():
    r = rig()
    ml = idx(r, "motor_left")
    assert r.acquire(ml, MODE_WRITE, 5) == W.ACQUIRE_R
    rid = r.rid
    epoch = epoch_of(r, ml, 5)
    for k in range(1, 6):
        r.heartbeat(k)
    top = resend(r, rid)
    assert r.acquire(ml, MODE_WRITE, 5) == W.ACQUIRE_R and r.line.u32(6) == epoch
    after(r, top)
    assert r.agent.control.g.count() == 1


def test_retried_queued_acquire_stays_queued_then_is_granted_once():
    r = rig()
    ml = idx(r, "motor_left")
    r.acquire(ml, MODE_WRITE, 5)
    assert r.acquire(ml, MODE_WRITE, 6, wait=60000) == W.QUEUED
    rid = r.rid
    for k in range(1, 6):
        r.heartbeat(k)
    top = resend(r, rid)
    assert r.acquire(ml, MODE_WRITE, 6, wait=60000) == W.QUEUED
    after(r, top)
    r.release(ml, 5)
    g = r.agent.control.g
    assert g.find(ml, 6) >= 0 and g.count() == 1


def test_hello_tells_a_new_host_where_to_count_from():
    r = rig()
    r.heartbeat(41)
    rid = r.rid
    e = r.begin(W.HELLO)
    assert r.send() == W.HELLO_R
    assert r.line.u32(13) == 41 and (r.line.u8(17) | r.line.u8(18) << 8) == rid
    ml = idx(r, "motor_left")
    r.acquire(ml, MODE_WRITE, 5, lease=1000)
    tick(r, 600)
    r.heartbeat(41 + 1)                             # a new host: its mark + 1 renews
    tick(r, 600)
    assert r.agent.control.g.count() == 1
    r.heartbeat(42)                                 # frozen: renews nothing
    tick(r, 600)
    assert r.agent.control.g.count() == 0


# ---- defect 11: CFG_FAILSAFE_MS, failsafe delay (68), hold mask (69), audit ring (70) ---------

def test_defect_11_cfg_failsafe_ms_ends_grants_after_host_silence():
    r = rig()
    ml = idx(r, "motor_left")
    assert config(r, W.CFG_FAILSAFE_MS, 500) == W.CONFIG_R
    r.acquire(ml, MODE_WRITE, 5, lease=LONG)
    set_speed(r, ml, 5, 700)
    tick(r, 400)
    r.heartbeat(1)                                  # heartbeats keep it
    tick(r, 400)
    assert r.agent.control.g.count() == 1 and r.agent.resources[ml].speed == 700
    tick(r, 200)                                    # 600 ms of silence: over 500
    assert r.agent.control.g.count() == 0 and r.agent.resources[ml].speed == 0


def test_fault_68_failsafe_delay_window_heartbeat_cancels_it():
    r = rig()
    ml = idx(r, "motor_left")
    g = r.agent.control.g
    assert config(r, W.CFG_FAILSAFE_DELAY_MS, 300) == W.CONFIG_R
    r.acquire(ml, MODE_WRITE, 5, lease=100)
    set_speed(r, ml, 5, 500)
    tick(r, 150)                                    # the lease ran out: the window opens
    assert g.count() == 1 and r.agent.resources[ml].speed == 500   # not yet driven safe
    assert set_speed(r, ml, 5, 900) == W.ERROR and r.line.last_error == E_DEV_FAILSAFE_PENDING
    assert r.agent.resources[ml].speed == 500       # no actuation on a lost lease
    r.heartbeat(1)                                  # the host is back within the window
    assert set_speed(r, ml, 5, 600) == W.ACTUATE_R
    tick(r, 150)                                    # the window opens again
    tick(r, 320)                                    # and closes with no heartbeat
    assert g.count() == 0 and r.agent.resources[ml].speed == 0


def test_fault_68_handover_within_the_window_is_an_override():
    r = rig()
    ml = idx(r, "motor_left")
    config(r, W.CFG_FAILSAFE_DELAY_MS, 300)
    r.acquire(ml, MODE_WRITE, 5, lease=100)
    tick(r, 150)
    assert handover(r, ml, 5, 77) == W.HANDOVER_R   # e.g. a human takes over
    assert set_speed(r, ml, 77, 20) == W.ACTUATE_R
    tick(r, 400)
    assert r.agent.control.g.find(ml, 77) >= 0      # the human's grant has its own lease
    assert config(r, W.CFG_FAILSAFE_DELAY_MS, W.FAILSAFE_DELAY_MAX_MS + 1) == W.ERROR
    assert r.line.last_error == E_DEV_BAD_OPERATION


def test_fault_69_link_loss_hold_mask_bit_k_is_resource_k():
    r = rig()
    ml = idx(r, "motor_left")
    mr = idx(r, "motor_right")
    led = idx(r, "led")
    assert config(r, W.CFG_LINK_LOSS_HOLD, 1 << led) == W.CONFIG_R
    r.acquire(ml, MODE_WRITE, 5, lease=100)
    r.acquire(mr, MODE_WRITE, 6, lease=100)
    r.acquire(led, MODE_WRITE, 7, lease=100)
    set_speed(r, ml, 5, 300)
    set_speed(r, mr, 6, 300)
    set_level(r, led, 7, 200)
    tick(r, 200)
    res = r.agent.resources
    assert r.agent.control.g.count() == 0            # every lease ended
    assert res[led].level == 200                     # bit `led` set: it keeps its state
    assert res[ml].speed == 0 and res[mr].speed == 0  # the rest go safe (the default)
    # A bit for a resource the board has not: refused whole, the mask unchanged.
    assert config(r, W.CFG_LINK_LOSS_HOLD, (1 << len(res)) | (1 << ml)) == W.ERROR
    assert r.line.last_error == E_DEV_BAD_OPERATION and r.agent.control.g.hold_mask == 1 << led


def test_fault_70_audit_ring_ends_with_the_failsafe_and_drops_the_oldest():
    r = rig()
    ml = idx(r, "motor_left")
    for s in range(1, 21):                          # 40 entries: grant and end, 20 times
        r.acquire(ml, MODE_WRITE, s)
        r.release(ml, s)
    config(r, W.CFG_FAILSAFE_DELAY_MS, 100)
    r.acquire(ml, MODE_WRITE, 50, lease=100)
    epoch = epoch_of(r, ml, 50)
    tick(r, 150)
    tick(r, 150)
    count, first, out = ring(r)
    assert count == 43 and first == count - 31 and len(out) == 32   # the ring keeps the last 32
    assert out[-3] == (W.AUD_GRANT, ml, 0, 50, epoch)
    assert out[-2] == (W.AUD_DELAY, ml, 2, 50, epoch)
    assert out[-1] == (W.AUD_SAFE, ml, 2, 50, epoch)                # the final entry: the failsafe
    assert out[0][0] == W.AUD_END and out[0][3] == 6                # oldest held: session 6 ended
    _c, f, tail = audit(r, count)
    assert f == count and tail == [out[-1]]
    _c, f, none = audit(r, count + 1)
    assert none == []


# ---- memory: the new paths allocate nothing, the heap stays flat -------------------------------

def test_issue9_paths_allocate_nothing():
    r = rig()
    ml = idx(r, "motor_left")
    config(r, W.CFG_FAILSAFE_DELAY_MS, 100)
    for k in range(1, 10):
        new_paths(r, ml, 5, k)
    errors = r.line.errors
    micropython.heap_lock()
    try:
        for k in range(10, 60):
            new_paths(r, ml, 5, k)
    finally:
        micropython.heap_unlock()
    assert r.agent.errors == 0
    assert r.line.errors - errors == 50             # exactly the late copies, refused
    assert r.line.last_error == E_DEV_STALE_REQUEST


# ---- fuzz: random and mutated frames through the agent's decoder and dispatch -------------------

class Lcg:
    def __init__(self, seed):
        self.x = seed

    def next(self):
        self.x = (self.x * 75 + 74) % 65537
        return self.x


def test_seeded_fuzz_of_decoder_and_dispatch_never_crashes_and_keeps_the_heap_flat():
    r = rig()
    rnd = Lcg(12345)
    line = r.line
    # Not REPL (stops the agent) nor REKEY (a sealed REKEY is the engine's own: it would really
    # change the key, and it allocates); 0x08 and 0x3F are unknown ids, 0x90 a response.
    mids = bytes([m for m in range(1, 0x40) if W.SIZE[m] != 0xFF and m not in (W.REPL, W.REKEY)] + [0x08, 0x3F, 0x90])
    enc = r.enc

    def one(k):
        kind = rnd.next() % 3
        n = 0
        if kind == 0:                               # raw random bytes
            n = rnd.next() % 200
            for j in range(n):
                b = rnd.next() & 0xFF
                line.buf[j] = b if b != 0x03 else 0x04   # a bare 0x03 stops the agent: tested apart
        else:                                       # a well-formed frame with random fields
            mid = mids[rnd.next() % len(mids)]
            enc.begin(mid, rnd.next() % 65535 + 1)
            size = (W.SIZE[mid] & 0x7F) if W.SIZE[mid] != 0xFF else 3
            if kind == 2:
                size = rnd.next() % 20              # a wrong size, often
            for j in range(size):
                v = rnd.next() & 0xFF
                if mid == W.CONFIG and j == 0 and v == W.CFG_WATCHDOG_MS:
                    v = 0                           # a watchdog would reset the test process
                enc.u8(v)                           # u32s of 2**30 and more too: refused
            n = r.wire()                            # sealed as the engine does: it reaches dispatch
            for j in range(n):
                line.buf[j] = enc.wire[j]
            if rnd.next() % 4 == 0:                 # and sometimes a flipped bit
                j = rnd.next() % n
                line.buf[j] ^= 1 << (rnd.next() % 8)
                if line.buf[j] == 0x03:
                    line.buf[j] = 0x04
        line.i = 0
        line.n = n
        r.clock.t += rnd.next() % 50
        r.agent.step(0)
        assert r.agent.running, "stopped at input %d" % k

    for k in range(300):
        one(k)
    gc.collect()
    before = gc.mem_alloc()
    for k in range(300, 3300):
        one(k)
    gc.collect()
    after = gc.mem_alloc()
    assert r.agent.errors == 0, "dispatch raised %d times" % r.agent.errors
    assert after <= before, "heap grew from %d to %d" % (before, after)
    d = r.agent.link.dec
    assert d.bad_crc > 0 and d.bad_frame > 0 and r.agent.link.frames_rx > 1000
    e = r.begin(W.PING)                             # and the agent still answers
    e.u32(4242)
    line.buf[0] = 0                                 # a delimiter ends the fuzz's last partial frame
    line.i = 0
    line.n = 1
    r.agent.step(0)
    m = r.send()
    assert m == W.PING_R and r.line.u32(0) == 4242


def _with_id(r, mid, rid):
    # A frame with exactly this request id (the rig's own numbering wraps elsewhere).
    r.enc.begin(mid, rid)
    return r.enc


def _acquire_as(r, rid, res, session):
    e = _with_id(r, W.ACQUIRE, rid)
    e.u8(res)
    e.u8(MODE_WRITE)
    e.u32(session)
    e.u32(60000)
    e.u32(0)
    return r.send()


def test_request_ids_wrap_from_65535_to_1_and_hello_is_outside_the_window():
    r = rig()
    ml = idx(r, "motor_left")
    _with_id(r, W.HELLO, 65530)
    assert r.send() == W.HELLO_R
    assert _acquire_as(r, 65533, ml, 5) == W.ACQUIRE_R
    e = _with_id(r, W.RELEASE, 65534)
    e.u8(ml)
    e.u32(5)
    e.u32(epoch_of(r, ml, 5))
    assert r.send() == W.RELEASE_R
    for k in range(1, 7):                                     # 65535, then 1 .. 5: all new
        e = _with_id(r, W.HEARTBEAT, 65535 if k == 1 else k - 1)
        e.u32(k)
        assert r.send() == W.HEARTBEAT_R
    assert _acquire_as(r, 65533, ml, 5) == W.ERROR and r.line.last_error == E_DEV_STALE_REQUEST
    assert r.agent.control.g.count() == 0                     # the late copy from before the wrap
    assert _acquire_as(r, 6, ml, 5) == W.ACQUIRE_R            # a new id after the wrap: granted
    _with_id(r, W.HELLO, 65530)                               # HELLO with an old id: answered
    assert r.send() == W.HELLO_R and (r.line.u8(17) | r.line.u8(18) << 8) == 6


def test_a_u32_of_2_to_the_30_or_more_is_refused_not_read():
    # The host's codec never sends one; on a 32-bit board it would be a heap-allocated int.
    r = rig()
    ml = idx(r, "motor_left")
    for top in (0x40, 0x80, 0xFF):
        e = r.begin(W.ACQUIRE)
        e.u8(ml)
        e.u8(MODE_WRITE)
        e.u32(5)
        e.u32(1000 | (top << 24))   # lease_ms
        e.u32(0)
        assert r.send() == W.ERROR and r.line.last_error == E_DEV_BAD_MESSAGE
        e = r.begin(W.HEARTBEAT)
        e.u32(7 | (top << 24))
        assert r.send() == W.ERROR and r.line.last_error == E_DEV_BAD_MESSAGE
    assert r.agent.control.g.count() == 0 and r.agent.control.hb_seq == 0
    assert r.acquire(ml, MODE_WRITE, 5, lease=(1 << 30) - 1 - 5000) == W.ERROR   # over MAX_LEASE_MS
    assert r.heartbeat((1 << 30) - 1) == W.HEARTBEAT_R                          # the largest: fine
