# The lock policy of capagent.grants (acquire, release, upgrade, handover, suspension, lock-delay,
# waiters), under MicroPython with an injected clock. Each test_ runs in its own micropython
# process (tests/device/test_device.py).
from capagent.grants import MAX_GRANTS, QUEUED, Grants
from capshared.errors import (
    E_DEV_BAD_MESSAGE, E_DEV_LOCK_DELAY, E_DEV_NO_SPACE, E_DEV_NOT_HOLDER, E_DEV_STALE_EPOCH, E_DEV_UPGRADE_REFUSED,
    E_RESOURCE_BUSY, E_RESOURCE_UNAVAILABLE,
)
from capshared.limits import (
    MAX_LEASE_MS, MODE_CONFIGURE, MODE_EXECUTE, MODE_READ, MODE_WRITE, MODES_ALL, R_LEASE_EXPIRED, R_RELEASED,
    R_REMOVED, R_SESSION_ENDED, RES_ABSENT, RES_PRESENT,
)
from capshared.wire import AUD_GRANT, AUD_HANDOVER, AUD_SAFE
from fakeclock import Clock

R, W, X, C = MODE_READ, MODE_WRITE, MODE_EXECUTE, MODE_CONFIGURE


class Res:
    # A resource as the table sees it: the modes it can be granted in, and its safe state.
    def __init__(self, modes=MODES_ALL):
        self.modes = modes
        self.safed = 0

    def safe(self):
        self.safed += 1


class Out:
    # What the table tells the control layer, recorded.
    def __init__(self):
        self.got = []      # (rid, key, slot) of queued requests granted
        self.no = []       # (rid, key, code, detail) of queued requests refused
        self.gone = []     # (res, session, epoch, reason) of grants ended
        self.notes = []    # (kind, slot, reason) for the audit ring

    def answer(self, rid, key, i, detail):
        if i < 0:
            self.no.append((rid, key, -i, detail))
        else:
            self.got.append((rid, key, i))

    def ended(self, res, session, epoch, reason):
        self.gone.append((res, session, epoch, reason))

    def note(self, kind, i, reason):
        self.notes.append((kind, i, reason))


def make(n=2, clock=None):
    # Grants reads the agent's view of each resource's state (Control.r_state).
    c = clock or Clock(1000)
    return Grants([Res() for _ in range(n)], bytearray([RES_PRESENT] * n), c, Out()), c


def release(g, i, now):
    # What a RELEASE does (Control.release): a clean end, then the lock passes on at once.
    res = g.res[i]
    g.end(i, R_RELEASED, now)
    g.serve(res, now)


def served(g):
    # The slot the last queued request was granted.
    return g.out.got[-1][2]


_rid = [0]


def acq(g, c, res, modes, session, wait=0, lease=1000):
    _rid[0] += 1
    return g.acquire(res, modes, session, lease, wait, _rid[0], _rid[0] * 7, c.t)


def test_lock_01_writer_not_starved_by_overlapping_readers():
    g, c = make()
    assert acq(g, c, 0, R, 1) >= 0
    assert acq(g, c, 0, W, 9, wait=5000) == QUEUED
    # A stream of new readers arrives while the writer waits: they queue behind it.
    for s in range(2, 7):
        assert acq(g, c, 0, R, s, wait=5000) == QUEUED
    release(g, g.find(0, 1), c.t)
    assert len(g.out.got) == 1                      # the writer, and nobody behind it
    i = served(g)
    assert g.session[i] == 9 and g.modes[i] == W


def test_lock_02_same_session_rereading_does_not_deadlock():
    g, c = make()
    i = acq(g, c, 0, R, 1)
    assert acq(g, c, 0, W, 2, wait=1000) == QUEUED
    assert acq(g, c, 0, R, 1) == i  # the holder re-reads: the same grant, not a queue place


def test_lock_03_upgrade_atomic_when_alone_refused_when_shared():
    g, c = make()
    i = acq(g, c, 0, R, 1)
    e0 = g.epoch[i]
    assert acq(g, c, 0, W, 1) == i
    assert g.modes[i] == R | W and g.epoch[i] > e0  # fenced: the old epoch is stale now
    g2, c2 = make()
    acq(g2, c2, 0, R, 1)
    acq(g2, c2, 0, R, 2)
    assert acq(g2, c2, 0, W, 1) == -E_DEV_UPGRADE_REFUSED
    assert g2.count() == 2  # nobody slipped in, nothing changed


def test_lock_04_writer_waits_for_every_reader():
    g, c = make()
    acq(g, c, 0, R, 1)
    acq(g, c, 0, R, 2)
    assert acq(g, c, 0, W, 3, wait=1000) == QUEUED
    release(g, g.find(0, 1), c.t)
    assert g.out.got == []  # reader 2 still holds it
    release(g, g.find(0, 2), c.t)
    assert g.session[served(g)] == 3


def test_lock_05_exclusive_modes_exclude_each_other_and_read():
    for first, second in ((W, X), (X, C), (C, W), (W, R), (R, C), (X, R)):
        g, c = make()
        assert acq(g, c, 0, first, 1) >= 0
        assert acq(g, c, 0, second, 2) == -E_RESOURCE_BUSY
        assert g.conflicts(0, second, 2) == 1  # the refusal can name the holder (faults.md 64)


def test_lock_05b_reads_share():
    g, c = make()
    for s in range(1, 6):
        assert acq(g, c, 0, R, s) >= 0
    assert g.count() == 5


def test_lock_06_same_millisecond_requests_served_in_arrival_order():
    g, c = make()
    acq(g, c, 0, W, 1)
    for s in (5, 3, 8, 2):  # all at the same tick
        assert acq(g, c, 0, W, s, wait=1000) == QUEUED
    order = []
    release(g, g.find(0, 1), c.t)
    for _ in range(4):
        i = served(g)
        order.append(g.session[i])
        release(g, i, c.t)
    assert order == [5, 3, 8, 2] and len(g.out.got) == 4


def test_lock_07_cancelled_waiter_passes_the_lock_on():
    g, c = make()
    acq(g, c, 0, W, 1)
    acq(g, c, 0, W, 2, wait=1000)
    acq(g, c, 0, W, 3, wait=1000)
    g.end(g.find(0, 1), R_RELEASED, c.t)
    assert g.end_all(0xFF, 2, R_SESSION_ENDED, c.t) == 0  # session 2 is cancelled just as the lock frees
    assert [x[2] for x in g.out.no] == [E_RESOURCE_BUSY]
    g.serve(0, c.t)
    assert g.session[served(g)] == 3


def test_lock_09_configure_while_executing_rejected():
    g, c = make()
    acq(g, c, 0, X, 1)
    assert acq(g, c, 0, C, 2) == -E_RESOURCE_BUSY


def test_epochs_increase_with_every_grant_of_a_resource():
    g, c = make()
    seen = []
    for s in range(1, 6):
        i = acq(g, c, 0, W, s)
        seen.append(g.epoch[i])
        release(g, i, c.t)
    assert seen == sorted(seen) and len(set(seen)) == 5
    assert g.epoch[acq(g, c, 1, W, 1)] == 1  # per resource


def test_retry_of_a_queued_request_does_not_queue_twice():
    g, c = make()
    acq(g, c, 0, W, 1)
    assert g.acquire(0, W, 2, 1000, 500, 77, 99, c.t) == QUEUED
    assert g.acquire(0, W, 2, 1000, 500, 77, 99, c.t) == QUEUED
    assert sum(g.w_used) == 1


def test_lease_expiry_with_injected_clock():
    g, c = make()
    i = acq(g, c, 0, W, 1, lease=500)
    c.t += 499
    assert not g.expired(i, c.t)
    g.renew_all(c.t)
    c.t += 499
    assert not g.expired(i, c.t)
    c.t += 1
    assert g.expired(i, c.t)


def test_lock_delay_after_a_lost_holder():
    g, c = make()
    g.lock_delay_ms = 300
    i = acq(g, c, 0, R, 1)
    g.end(i, R_LEASE_EXPIRED, c.t)                  # lost, not released: safe, and held
    assert g.resources[0].safed == 1                # even a reader's resource goes safe
    assert g.out.gone == [(0, 1, 1, R_LEASE_EXPIRED)] and g.out.notes == [(AUD_GRANT, i, 0), (AUD_SAFE, i, R_LEASE_EXPIRED)]
    assert acq(g, c, 0, W, 2) == -E_DEV_LOCK_DELAY
    assert acq(g, c, 0, W, 2, wait=1000) == QUEUED
    g.serve(0, c.t)
    assert g.out.got == []
    c.t += 300
    g.serve(0, c.t)
    assert g.session[served(g)] == 2


def test_clean_release_regrants_at_once_and_keeps_a_reader_running():
    g, c = make()
    g.lock_delay_ms = 300
    acq(g, c, 0, R, 1)
    assert acq(g, c, 0, W, 2, wait=1000) == QUEUED
    release(g, g.find(0, 1), c.t)
    assert g.session[served(g)] == 2 and g.resources[0].safed == 0
    release(g, g.find(0, 2), c.t)                    # an exclusive holder leaves: safe
    assert g.resources[0].safed == 1 and g.out.gone[-1][3] == R_RELEASED


def test_absent_resource_is_unavailable():
    g, c = make()
    g.state[1] = RES_ABSENT
    assert acq(g, c, 1, R, 1) == -E_RESOURCE_UNAVAILABLE


def test_tables_are_bounded():
    g, c = make(MAX_GRANTS + 1)
    for k in range(MAX_GRANTS):
        assert acq(g, c, k, W, 1) >= 0
    assert acq(g, c, MAX_GRANTS, W, 1) == -E_DEV_NO_SPACE
    for s in range(len(g.w_used)):
        assert acq(g, c, 0, W, 100 + s, wait=1000) == QUEUED
    assert acq(g, c, 0, W, 999, wait=1000) == -E_DEV_NO_SPACE


def test_ticks_wrap_does_not_break_leases():
    # MicroPython's ticks wrap; leases use ticks_diff/ticks_add only (faults.md 25).
    import time

    class Wrapping(Clock):
        def ticks_diff(self, a, b):
            return time.ticks_diff(a, b)

        def ticks_add(self, a, d):
            return time.ticks_add(a, d)

    c = Wrapping()
    c.t = time.ticks_add(0, -200)  # 200 ms before the wrap
    g, c = make(1, c)
    i = g.acquire(0, W, 1, 500, 0, 1, 1, c.t)
    c.t = time.ticks_add(c.t, 400)  # past the wrap
    assert not g.expired(i, c.t)
    c.t = time.ticks_add(c.t, 100)
    assert g.expired(i, c.t)


def test_one_request_check_for_acquire_and_handover():
    g, c = make()
    g.resources[1].modes = R
    holder = acq(g, c, 0, W, 1)
    e = g.epoch[holder]
    for res, modes, session, lease in ((0, 0, 5, 1000), (1, W, 5, 1000), (0, W, 0, 1000), (0, W, 5, 0),
                                       (0, W, 5, MAX_LEASE_MS + 1)):
        assert g.acquire(res, modes, session, lease, 0, 1, 1, c.t) == -E_DEV_BAD_MESSAGE
        if res == 0:
            assert g.handover(0, 1, e, session, modes, lease, c.t) == -E_DEV_BAD_MESSAGE
    assert acq(g, c, 1, R, 5, lease=MAX_LEASE_MS) >= 0
    assert g.session[holder] == 1 and g.epoch[holder] == e   # every refusal left the holder alone


def test_handover_is_one_step_and_fenced():
    g, c = make()
    i = acq(g, c, 0, W, 1)
    e = g.epoch[i]
    assert g.handover(0, 1, e + 1, 2, W, 1000, c.t) == -E_DEV_NOT_HOLDER
    assert g.handover(0, 3, e, 2, W, 1000, c.t) == -E_DEV_STALE_EPOCH  # not its epoch
    assert g.handover(0, 1, e, 2, W, 1000, c.t) == i
    assert g.session[i] == 2 and g.epoch[i] == e + 1 and g.count() == 1
    assert g.out.notes[-1] == (AUD_HANDOVER, i, 0)
    assert g.holder(0, 1, e) == -E_DEV_STALE_EPOCH            # the old holder is deposed
    assert g.resources[0].safed == 0                          # still driven: no safe state
    assert g.handover(0, 2, e + 1, 3, R, 1000, c.t) == i      # to a reader: nobody drives it
    assert g.resources[0].safed == 1
    acq(g, c, 0, R, 4)
    assert g.handover(0, 3, e + 2, 5, W, 1000, c.t) == -E_RESOURCE_BUSY   # reader 4 is there
    g.state[0] = RES_ABSENT
    assert g.handover(0, 3, e + 2, 5, R, 1000, c.t) == -E_RESOURCE_UNAVAILABLE


def test_suspension_holds_exclusive_hardware_and_follows_the_session():
    g, c = make()
    acq(g, c, 0, W, 1)
    acq(g, c, 1, R, 1)
    assert g.suspend(1, True) == 2 and g.suspended(1)
    assert g.resources[0].safed == 1 and g.resources[1].safed == 0    # only what it drives
    i = g.handover(0, 1, g.epoch[g.find(0, 1)], 2, W, 1000, c.t)
    assert not g.suspended(2) and g.suspended(1)              # the mark stays with session 1
    assert g.suspend(1, False) == 1 and not g.suspended(1) and i >= 0


def test_waiters_time_out_and_are_refused_when_their_resource_or_session_goes():
    g, c = make()
    acq(g, c, 0, W, 1)
    g.acquire(0, W, 2, 1000, 100, 21, 210, c.t)
    g.acquire(0, W, 3, 1000, 5000, 31, 310, c.t)
    g.acquire(1, W, 4, 1000, 0, 41, 410, c.t)
    g.acquire(0, W, 4, 1000, 5000, 42, 420, c.t)
    assert g.sleep_ms(10000, c.t) == 100
    c.t += 100
    g.tick(c.t)
    assert g.out.no == [(21, 210, E_RESOURCE_BUSY, 1)]       # timed out, naming the holder
    assert g.end_all(0, 0, R_REMOVED, c.t) == 1
    assert g.out.gone == [(0, 1, 1, R_REMOVED)] and g.resources[0].safed == 1
    assert g.out.no[1:] == [(31, 310, E_RESOURCE_UNAVAILABLE, 0), (42, 420, E_RESOURCE_UNAVAILABLE, 0)]
    assert sum(g.w_used) == 0 and g.count() == 1 and g.out.got == []
