# The grant table: who holds which resource in which modes, under which epoch and lease; the
# read-write lock rules; and the FIFO of waiting requests. Everything lives in slots allocated
# at start-up (lists of small ints, bytearrays): granting, renewing and releasing allocate
# nothing, so the agent's heap stays flat however long it runs.
#
# Lock rules (blueprint 2.5, faults.md 1-9):
# - read is shared; write, execute and configure are exclusive; read and exclusive exclude
#   each other. A request that asks for read plus an exclusive mode is exclusive.
# - Fair: requests wait in one FIFO ordered by the agent's own arrival numbers (never ticks).
#   A new request on a resource that already has waiters queues behind them, so a stream of
#   readers cannot starve a queued writer, and readers queued behind a writer wait for it.
# - Re-acquiring what a session already holds returns the same grant (no self-deadlock).
# - Upgrade (e.g. read -> write) is atomic when the session is the resource's only holder
#   (one step, new epoch, nobody can slip in between); otherwise it is refused, never queued:
#   two readers that both wait to upgrade would deadlock each other.
from capshared.errors import (
    E_DEV_FAILSAFE_PENDING, E_DEV_LOCK_DELAY, E_DEV_NO_SPACE, E_DEV_UPGRADE_REFUSED, E_RESOURCE_BUSY,
    E_RESOURCE_UNAVAILABLE,
)
from array import array

from capshared.limits import MODES_EXCLUSIVE, RES_PRESENT, U32_LIMIT

MAX_GRANTS = 16   # default table size; a board description may set its own (board.MAX_GRANTS)
MAX_WAITERS = 8
FREE = 0xFF
QUEUED = -1000   # acquire() result: the request waits in the queue
SUSP = 1         # flag bits of a grant slot
PEND = 2


def _u32s(n):
    # n zeros, each slot an unsigned int below 2**30, in 4 bytes: half a list's cost on a 64-bit
    # port. Built from a range (one block of exactly that size, no temporary: a board's heap is
    # fragmented by the time the agent starts), then zeroed.
    a = array("I", range(n))
    for i in range(n):
        a[i] = 0
    return a


class Grants:
    def __init__(self, state, clock, max_grants=MAX_GRANTS):
        # state: each resource's state as the agent last saw it (Control.r_state), the one view
        # every lock decision reads; a driver's own attribute may say otherwise.
        self.state = state
        self.clock = clock
        self.n_slots = max_grants
        n = len(state)
        g = max_grants
        self.res = bytearray(b"\xff" * g)     # FREE or resource index
        self.session = _u32s(g)
        self.epoch = _u32s(g)
        self.modes = bytearray(g)
        self.lease = _u32s(g)
        self.deadline = _u32s(g)
        self.r_epoch = _u32s(n)                # last epoch issued per resource
        self.r_hold = bytearray(n)            # 1 while in lock-delay (safe hold)
        self.r_hold_until = _u32s(n)
        self.lock_delay_ms = 0
        self.cap_ms = 0                       # CFG_FAILSAFE_MS: no lease outlives this silence
        # Per grant slot, so that they end with the grant on every path and cannot leak:
        self.flag = bytearray(g)              # SUSP: holder suspended; PEND: in the failsafe delay
        w = MAX_WAITERS
        self.w_used = bytearray(w)
        self.w_seq = _u32s(w)
        self.w_res = bytearray(w)
        self.w_modes = bytearray(w)
        self.w_session = _u32s(w)
        self.w_lease = _u32s(w)
        self.w_until = _u32s(w)
        self.w_rid = _u32s(w)
        self.w_key = _u32s(w)
        self.seq = 0
        self.last_busy_holder = 0
        self.served = -1

    # ---- queries ------------------------------------------------------------------------
    def find(self, res, session):
        for i in range(self.n_slots):
            if self.res[i] == res and self.session[i] == session:
                return i
        return -1

    def count(self):
        n = 0
        for i in range(self.n_slots):
            if self.res[i] != FREE:
                n += 1
        return n

    def conflicts(self, res, modes, session):
        # The session holding a conflicting grant on res (other than `session`), or 0.
        excl = modes & MODES_EXCLUSIVE
        for i in range(self.n_slots):
            if self.res[i] == res and self.session[i] != session:
                if excl or (self.modes[i] & MODES_EXCLUSIVE):
                    return self.session[i]
        return 0

    def has_waiters(self, res):
        for j in range(MAX_WAITERS):
            if self.w_used[j] and self.w_res[j] == res:
                return True
        return False

    def suspended(self, session):
        for i in range(self.n_slots):
            if self.flag[i] & SUSP and self.res[i] != FREE and self.session[i] == session:
                return True
        return False

    def span(self, lease):
        # How long one renewal keeps a grant: its lease, capped by CFG_FAILSAFE_MS if set.
        c = self.cap_ms
        return c if 0 < c < lease else lease

    def expired(self, i, now):
        return self.clock.ticks_diff(now, self.deadline[i]) >= 0

    # ---- changes ------------------------------------------------------------------------
    def next_epoch(self, res):
        e = self.r_epoch[res] + 1
        if e >= U32_LIMIT:
            e = 1  # after 2**30 grants of one resource; documented wrap
        self.r_epoch[res] = e
        return e

    def _grant(self, res, modes, session, lease, now):
        for i in range(self.n_slots):
            if self.res[i] == FREE:
                # A suspended session stays suspended on what it acquires meanwhile.
                self.flag[i] = SUSP if self.suspended(session) else 0
                self.res[i] = res
                self.session[i] = session
                self.modes[i] = modes
                self.lease[i] = lease
                self.deadline[i] = self.clock.ticks_add(now, self.span(lease))
                self.epoch[i] = self.next_epoch(res)
                return i
        return -E_DEV_NO_SPACE

    def acquire(self, res, modes, session, lease, wait_ms, rid, key, now):
        # Returns a slot (>= 0) when granted, QUEUED when queued, or -code when refused.
        if self.state[res] != RES_PRESENT:
            return -E_RESOURCE_UNAVAILABLE
        i = self.find(res, session)
        if i >= 0:
            if modes & ~self.modes[i] == 0:
                return i  # already held: the same grant, no new epoch
            if self.conflicts(res, modes, session):
                return -E_DEV_UPGRADE_REFUSED
            if self.flag[i] & PEND:
                return -E_DEV_FAILSAFE_PENDING  # a lost lease comes back only by a heartbeat
            self.modes[i] |= modes           # atomic upgrade: one step, fenced by a new epoch
            self.epoch[i] = self.next_epoch(res)
            self.deadline[i] = self.clock.ticks_add(now, self.span(self.lease[i]))
            return i
        for j in range(MAX_WAITERS):          # a retry of a request already queued
            if self.w_used[j] and self.w_rid[j] == rid and self.w_key[j] == key:
                return QUEUED
        held = self.r_hold[res] and self.clock.ticks_diff(now, self.r_hold_until[res]) < 0
        holder = self.conflicts(res, modes, session)
        if not held and not holder and not self.has_waiters(res):
            return self._grant(res, modes, session, lease, now)
        self.last_busy_holder = holder
        if wait_ms <= 0:
            return -E_DEV_LOCK_DELAY if held and not holder else -E_RESOURCE_BUSY
        for j in range(MAX_WAITERS):
            if not self.w_used[j]:
                self.seq += 1
                self.w_used[j] = 1
                self.w_seq[j] = self.seq
                self.w_res[j] = res
                self.w_modes[j] = modes
                self.w_session[j] = session
                self.w_lease[j] = lease
                self.w_until[j] = self.clock.ticks_add(now, wait_ms)
                self.w_rid[j] = rid
                self.w_key[j] = key
                return QUEUED
        return -E_DEV_NO_SPACE

    def position(self, rid, key):
        # 1-based place of a queued request among the waiters of its resource.
        for j in range(MAX_WAITERS):
            if self.w_used[j] and self.w_rid[j] == rid and self.w_key[j] == key:
                n = 1
                for k in range(MAX_WAITERS):
                    if self.w_used[k] and self.w_res[k] == self.w_res[j] and self.w_seq[k] < self.w_seq[j]:
                        n += 1
                return n
        return 0

    def head(self, res):
        # The waiter that arrived first on res, or -1.
        best = -1
        for j in range(MAX_WAITERS):
            if self.w_used[j] and self.w_res[j] == res and (best < 0 or self.w_seq[j] < self.w_seq[best]):
                best = j
        return best

    def grant_head(self, res, now):
        # Grant the first waiter on res if the lock allows. Returns (slot via self.served) or -1.
        j = self.head(res)
        if j < 0:
            return -1
        if self.r_hold[res]:
            if self.clock.ticks_diff(now, self.r_hold_until[res]) < 0:
                return -1
            self.r_hold[res] = 0
        if self.state[res] != RES_PRESENT:
            return -1
        if self.conflicts(res, self.w_modes[j], self.w_session[j]):
            return -1
        i = self._grant(res, self.w_modes[j], self.w_session[j], self.w_lease[j], now)
        if i < 0:
            return -1
        self.served = j
        return i

    def drop_waiter(self, j):
        self.w_used[j] = 0

    def end(self, i):
        self.res[i] = FREE
        self.session[i] = 0
        self.flag[i] = 0

    def hold(self, res, now):
        # Safe hold after a holder was lost without a clean release (Chubby's lock-delay).
        if self.lock_delay_ms > 0:
            self.r_hold[res] = 1
            self.r_hold_until[res] = self.clock.ticks_add(now, self.lock_delay_ms)

    def renew_all(self, now):
        # Also closes every failsafe delay window (PEND): the host is back in time.
        for i in range(self.n_slots):
            if self.res[i] != FREE:
                self.deadline[i] = self.clock.ticks_add(now, self.span(self.lease[i]))
                self.flag[i] &= SUSP

    def set_suspended(self, session, on):
        # Marks every grant the session holds; returns how many. Held per slot, the mark ends
        # with its grant on every path (release, lease, handover, removal, fault, session end).
        n = 0
        for i in range(self.n_slots):
            if self.res[i] != FREE and self.session[i] == session:
                self.flag[i] = (self.flag[i] | SUSP) if on else (self.flag[i] & PEND)
                n += 1
        return n
