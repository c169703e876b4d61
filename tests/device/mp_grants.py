# Lock, lease and queue rules of capagent.grants, under MicroPython with an injected clock.
# Each test_ runs in its own micropython process (tests/device/test_device.py).
from capagent.grants import MAX_GRANTS, MAX_WAITERS, QUEUED, Grants
from capshared.errors import E_DEV_LOCK_DELAY, E_DEV_NO_SPACE, E_DEV_UPGRADE_REFUSED, E_RESOURCE_BUSY, E_RESOURCE_UNAVAILABLE
from capshared.limits import MODE_CONFIGURE, MODE_EXECUTE, MODE_READ, MODE_WRITE, RES_ABSENT, RES_PRESENT

R, W, X, C = MODE_READ, MODE_WRITE, MODE_EXECUTE, MODE_CONFIGURE


class Clock:
    def __init__(self):
        self.t = 1000

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, d):
        return a + d


def make(n=2):
    # Grants reads the agent's view of each resource's state (Control.r_state).
    c = Clock()
    return Grants(bytearray([RES_PRESENT] * n), c), c


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
    g.end(g.find(0, 1))
    i = g.grant_head(0, c.t)
    assert i >= 0 and g.session[i] == 9 and g.modes[i] == W


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
    g.end(g.find(0, 1))
    assert g.grant_head(0, c.t) < 0  # reader 2 still holds it
    g.end(g.find(0, 2))
    assert g.grant_head(0, c.t) >= 0


def test_lock_05_exclusive_modes_exclude_each_other_and_read():
    for first, second in ((W, X), (X, C), (C, W), (W, R), (R, C), (X, R)):
        g, c = make()
        assert acq(g, c, 0, first, 1) >= 0
        assert acq(g, c, 0, second, 2) == -E_RESOURCE_BUSY
        assert g.last_busy_holder == 1  # the refusal can name the holder (faults.md 64)


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
    g.end(g.find(0, 1))
    for _ in range(4):
        i = g.grant_head(0, c.t)
        order.append(g.session[i])
        g.drop_waiter(g.served)
        g.end(i)
    assert order == [5, 3, 8, 2]


def test_lock_07_cancelled_waiter_passes_the_lock_on():
    g, c = make()
    acq(g, c, 0, W, 1)
    acq(g, c, 0, W, 2, wait=1000)
    acq(g, c, 0, W, 3, wait=1000)
    g.end(g.find(0, 1))
    g.drop_waiter(g.head(0))  # session 2 is cancelled just as the lock frees
    i = g.grant_head(0, c.t)
    assert g.session[i] == 3


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
        g.end(i)
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
    i = acq(g, c, 0, W, 1)
    g.end(i)
    g.hold(0, c.t)
    assert acq(g, c, 0, W, 2) == -E_DEV_LOCK_DELAY
    assert acq(g, c, 0, W, 2, wait=1000) == QUEUED
    assert g.grant_head(0, c.t) < 0
    c.t += 300
    assert g.grant_head(0, c.t) >= 0


def test_absent_resource_is_unavailable():
    g, c = make()
    g.state[1] = RES_ABSENT
    assert acq(g, c, 1, R, 1) == -E_RESOURCE_UNAVAILABLE


def test_tables_are_bounded():
    g, c = make(MAX_GRANTS + 1)
    for k in range(MAX_GRANTS):
        assert acq(g, c, k, W, 1) >= 0
    assert acq(g, c, MAX_GRANTS, W, 1) == -E_DEV_NO_SPACE
    for s in range(MAX_WAITERS):
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
    g = Grants(bytearray([RES_PRESENT]), c)
    i = g.acquire(0, W, 1, 500, 0, 1, 1, c.t)
    c.t = time.ticks_add(c.t, 400)  # past the wrap
    assert not g.expired(i, c.t)
    c.t = time.ticks_add(c.t, 100)
    assert g.expired(i, c.t)
